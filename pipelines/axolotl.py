"""The training stage's engine: generate, validate and launch an Axolotl QLoRA run.

Plain Python, no Dagster (``assets/training.py`` is the thin shell; ``axolotl_launcher.py``
is the Pipes child that runs Axolotl). What lives here and why:

- **Config generation**: ``axolotl_configs/qlora.yaml`` <- ``cpu.yaml`` (only without CUDA)
  <- the registry entry (chat template, eot tokens, LoRA targets, ``axolotl_overrides``)
  <- ``tunegate.yaml`` ``training.overrides`` <- run-specific keys (paths). Written only with
  ``yaml.safe_dump``. The config hash covers everything but the run-specific paths, so it
  is stable across machines and output roots.
- **Validation** with Axolotl's own schema before anything launches, plus a check for keys
  the schema does not know: pydantic silently drops those, and Axolotl renames keys between
  versions, so a typo would otherwise train with defaults.
- **Run identity**: run key = hash(data fingerprint, config hash, base-model weights hash);
  the run directory is ``Layout.run_dir(slug, key)``, so partitions and datasets never share
  files, and a finished run (done marker, written only after success and the learning
  guard) is reused instead of retrained.
- **Launch**: ``axolotl train <yaml> --launcher python`` with a clean environment, the
  AVX512-BF16 QLoRA workaround on the child's ``PYTHONPATH`` on CPU, resume from the newest
  checkpoint after a crash.
- **Metrics**: parse Axolotl's stdout (dict reprs with string values, mixed with tqdm ``\\r``
  bars) and ``trainer_state.json``; the "did it learn" guard.
"""

from __future__ import annotations

import ast
import copy
import difflib
import hashlib
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from pipelines.config import REPO_ROOT, BaseModelSpec, Layout, TrainingSettings
from pipelines.records import read_jsonl

TEMPLATE_DIR = REPO_ROOT / "axolotl_configs"
BASE_TEMPLATE = "qlora.yaml"
CPU_OVERLAY = "cpu.yaml"
PATCH_DIR = Path(__file__).resolve().parent / "cpu_qlora_patch"

CONFIG_FILE = "axolotl.yaml"
RESUME_CONFIG_FILE = "axolotl.resume.yaml"
OUTPUT_SUBDIR = "output"
LOG_FILE = "train.log"
METRICS_FILE = "metrics.json"
DONE_MARKER = "tunegate-done.json"

# Keys tunegate fills per run; excluded from the config hash (machine paths) and rejected in
# templates/overrides (setting them there would silently point a run at the wrong files).
RUN_SPECIFIC_KEYS = ("base_model", "output_dir", "dataset_prepared_path", "resume_from_checkpoint")

SUBPROCESS_ENV = {
    "AXOLOTL_DO_NOT_TRACK": "1",  # telemetry is on by default and retries a network host
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",  # line-by-line output, so the parent can stream it
}
# Any ACCELERATE_USE_* makes Axolotl drop its device map: strip inherited ones.
_STRIPPED_ENV_PREFIXES = ("ACCELERATE_USE_",)

BNB_QUANT_DEFAULTS = {  # what Axolotl 0.19 builds for `adapter: qlora` (loaders/model.py)
    "load_in_4bit": True,
    "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_use_double_quant": True,
    "bnb_4bit_quant_storage": "bfloat16",
}

AVX512_WARNING = "gemv_4bit: an autograd kernel was not registered"


class AxolotlConfigError(ValueError):
    """The generated Axolotl config is invalid; the message names the key and the reason."""


class NotLearnedError(RuntimeError):
    """Training finished but eval loss did not fall enough: the adapter must not ship."""


# --------------------------------------------------------------------------- config
def load_template(name: str, template_dir: Path = TEMPLATE_DIR) -> dict[str, Any]:
    path = template_dir / name
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(doc, dict):
        raise AxolotlConfigError(f"{path}: expected a mapping of Axolotl keys")
    return doc


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` wins. Mappings merge recursively; lists and scalars replace whole
    (a dataset list is one unit); ``None`` deletes a key (to unset a template default)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _reject_run_keys(layer: dict[str, Any], where: str) -> None:
    for key in RUN_SPECIFIC_KEYS:
        if key in layer:
            raise AxolotlConfigError(
                f"{where}: `{key}` is set per run by tunegate (it keys caches and output dirs); "
                "remove it"
            )


def training_config(
    spec: BaseModelSpec,
    settings: TrainingSettings,
    *,
    cuda: bool,
    template_dir: Path = TEMPLATE_DIR,
) -> dict[str, Any]:
    """The merged, machine-independent training config (what the config hash covers)."""
    layers: list[tuple[str, dict[str, Any]]] = [(BASE_TEMPLATE, load_template(BASE_TEMPLATE, template_dir))]
    if not cuda:
        layers.append((CPU_OVERLAY, load_template(CPU_OVERLAY, template_dir)))
    layers.append(
        (
            f"base model {spec.name!r}",
            {
                "chat_template": spec.chat_template,
                "eot_tokens": list(spec.eot_tokens),
                "lora_target_modules": list(spec.lora_target_modules),
            },
        )
    )
    layers.append((f"base model {spec.name!r} axolotl_overrides", dict(spec.axolotl_overrides)))
    layers.append(("tunegate.yaml training.overrides", dict(settings.overrides)))
    merged: dict[str, Any] = {}
    for where, layer in layers:
        _reject_run_keys(layer, where)
        merged = deep_merge(merged, layer)
    return merged


def config_hash(cfg: dict[str, Any]) -> str:
    """Content hash of a config, independent of key order."""
    canonical = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def tokenizer_hash(model_dir: Path) -> str:
    """Hash of the tokenizer files: Axolotl's prepared-dataset cache keys on the tokenizer's
    *name*, so a changed tokenizer at the same path would reuse stale token ids."""
    digest = hashlib.sha256()
    names = sorted(
        p.name
        for p in Path(model_dir).iterdir()
        if p.is_file() and (p.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "added_tokens"))
                            or p.name == "chat_template.jinja")
    )
    if not names:
        raise FileNotFoundError(f"{model_dir}: no tokenizer files")
    for name in names:
        digest.update(name.encode())
        digest.update((Path(model_dir) / name).read_bytes())
    return digest.hexdigest()


def run_key(data_fingerprint: str, cfg_hash: str, base_model_sha256: str) -> str:
    """Same data + same config + same base weights = same run (and a cache hit)."""
    joined = "\n".join([data_fingerprint, cfg_hash, base_model_sha256])
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def prepared_dataset_dir(layout: Layout, tok_hash: str) -> Path:
    return layout.home / "cache" / "prepared" / tok_hash[:16]


@dataclass(frozen=True)
class RunPlan:
    """Everything that identifies one training run and where its files go."""

    base_model: str
    slug: str
    config: dict[str, Any]
    config_hash: str
    run_key: str
    run_dir: Path
    data_fingerprint: str
    base_model_sha256: str
    base_model_dir: Path
    tokenizer_hash: str
    cuda: bool

    @property
    def config_path(self) -> Path:
        return self.run_dir / CONFIG_FILE

    @property
    def output_dir(self) -> Path:
        return self.run_dir / OUTPUT_SUBDIR

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_FILE

    @property
    def needs_cpu_qlora_patch(self) -> bool:
        return not self.cuda and self.config.get("adapter") == "qlora" and bool(self.config.get("load_in_4bit"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (the ``axolotl_config`` asset's value carries it downstream)."""
        out = asdict(self)
        out.update(run_dir=str(self.run_dir), base_model_dir=str(self.base_model_dir))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunPlan:
        names = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in names}
        values.update(run_dir=Path(data["run_dir"]), base_model_dir=Path(data["base_model_dir"]))
        return cls(**values)


def plan_run(
    layout: Layout,
    spec: BaseModelSpec,
    settings: TrainingSettings,
    *,
    base_model_dir: Path,
    base_model_sha256: str,
    train_path: Path,
    eval_path: Path,
    data_fingerprint: str,
    cuda: bool | None = None,
    template_dir: Path = TEMPLATE_DIR,
) -> RunPlan:
    """Merge the config, hash it, key the run, and fill in the run-specific paths."""
    cuda = cuda_available() if cuda is None else cuda
    base_cfg = training_config(spec, settings, cuda=cuda, template_dir=template_dir)
    cfg_hash = config_hash(base_cfg)
    key = run_key(data_fingerprint, cfg_hash, base_model_sha256)
    run_dir = layout.run_dir(spec.slug, key)
    tok_hash = tokenizer_hash(base_model_dir)
    full = copy.deepcopy(base_cfg)
    full["base_model"] = str(base_model_dir)
    full["output_dir"] = str(run_dir / OUTPUT_SUBDIR)
    full["dataset_prepared_path"] = str(prepared_dataset_dir(layout, tok_hash))
    for list_key, path in (("datasets", train_path), ("test_datasets", eval_path)):
        entries = full.get(list_key) or []
        if not entries:
            raise AxolotlConfigError(f"merged config has no `{list_key}` entry to point at {path.name}")
        full[list_key] = [{**entry, "path": str(path)} for entry in entries]
    return RunPlan(
        base_model=spec.name,
        slug=spec.slug,
        config=full,
        config_hash=cfg_hash,
        run_key=key,
        run_dir=run_dir,
        data_fingerprint=data_fingerprint,
        base_model_sha256=base_model_sha256,
        base_model_dir=Path(base_model_dir),
        tokenizer_hash=tok_hash,
        cuda=cuda,
    )


def assert_disjoint(train_path: Path, eval_path: Path) -> None:
    """The held-out split must never be trained on: refuse overlapping files or ids."""
    if Path(train_path).resolve() == Path(eval_path).resolve():
        raise AxolotlConfigError(f"train and eval point at the same file {train_path}")
    train_ids = {row.get("id") for row in read_jsonl(train_path)}
    shared = sorted(str(row.get("id")) for row in read_jsonl(eval_path) if row.get("id") in train_ids)
    if shared:
        raise AxolotlConfigError(
            f"{eval_path}: {len(shared)} eval record id(s) also in {train_path} "
            f"(e.g. {shared[:3]}): the held-out split would be trained on"
        )


def dump_config(cfg: dict[str, Any]) -> str:
    """YAML via ``safe_dump`` only: user strings (system prompts, paths) are quoted by the
    dumper, never interpolated into a template."""
    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True, default_flow_style=False)


def write_config(plan: RunPlan) -> Path:
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    tmp = plan.config_path.with_suffix(".tmp")
    tmp.write_text(dump_config(plan.config), encoding="utf-8")
    tmp.replace(plan.config_path)
    return plan.config_path


# --------------------------------------------------------------------------- validation
def _known_keys(model_cls) -> set[str]:
    keys: set[str] = set()
    for name, info in model_cls.model_fields.items():
        keys.add(name)
        if info.alias:
            keys.add(info.alias)
    return keys


def _unknown_keys(data: dict[str, Any], known: set[str], where: str) -> list[str]:
    problems = []
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            problems.append(f"`{where}{key}`: not an Axolotl 0.19 config key{hint}")
    return problems


def _format_pydantic(exc) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = err.get("msg", "")
        out.append(f"`{loc}`: {msg}" if loc else msg)
    return out


def validate_config(cfg: dict[str, Any]) -> None:
    """Validate with Axolotl's own schema (the same call ``axolotl train`` makes), plus
    unknown-key detection. Raises ``AxolotlConfigError`` naming each bad key."""
    from pydantic import ValidationError

    from axolotl.cli.config import gpu_capabilities
    from axolotl.utils.config import validate_config as axolotl_validate
    from axolotl.utils.dict import DictDefault
    from axolotl.utils.schemas.config import AxolotlInputConfig
    from axolotl.utils.schemas.datasets import SFTDataset

    problems = _unknown_keys(cfg, _known_keys(AxolotlInputConfig), "")
    dataset_keys = _known_keys(SFTDataset)
    for list_key in ("datasets", "test_datasets"):
        for index, entry in enumerate(cfg.get(list_key) or []):
            if isinstance(entry, dict):
                problems += _unknown_keys(entry, dataset_keys, f"{list_key}[{index}].")
    if problems:
        raise AxolotlConfigError("invalid Axolotl config: " + "; ".join(problems))
    capabilities, env_capabilities = gpu_capabilities()
    try:
        axolotl_validate(
            DictDefault(copy.deepcopy(cfg)),
            capabilities=capabilities,
            env_capabilities=env_capabilities,
        )
    except ValidationError as exc:
        raise AxolotlConfigError("invalid Axolotl config: " + "; ".join(_format_pydantic(exc))) from exc
    except ValueError as exc:
        raise AxolotlConfigError(f"invalid Axolotl config: {exc}") from exc


# --------------------------------------------------------------------------- launch
def launch_env(base: dict[str, str] | os._Environ, *, cpu_qlora_patch: bool, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The training subprocess's environment: inherited, minus ACCELERATE_USE_*, plus the
    offline/no-telemetry variables and (QLoRA on CPU) the AVX512-BF16 workaround."""
    env = {k: v for k, v in base.items() if not k.startswith(_STRIPPED_ENV_PREFIXES)}
    env.update(SUBPROCESS_ENV)
    for key, value in (extra or {}).items():
        if key.startswith(_STRIPPED_ENV_PREFIXES):
            raise ValueError(f"refusing to set {key}: Axolotl drops its device map when it is set")
        env[key] = value
    if cpu_qlora_patch:
        parts = [str(PATCH_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def axolotl_executable(executable: str = "") -> str:
    """The ``axolotl`` CLI next to this interpreter unless one is configured."""
    if executable:
        return executable
    candidate = Path(sys.executable).parent / "axolotl"
    return str(candidate) if candidate.exists() else "axolotl"


def launch_command(config_path: Path, executable: str = "") -> list[str]:
    return [axolotl_executable(executable), "train", str(config_path), "--launcher", "python"]


def _checkpoint_step(path: Path) -> int:
    match = re.fullmatch(r"checkpoint-(\d+)", path.name)
    return int(match.group(1)) if match else -1


def newest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint (one with trainer_state.json), if any."""
    if not output_dir.is_dir():
        return None
    candidates = [
        p for p in output_dir.iterdir()
        if p.is_dir() and _checkpoint_step(p) >= 0 and (p / "trainer_state.json").is_file()
    ]
    return max(candidates, key=_checkpoint_step, default=None)


def prepare_launch(plan: RunPlan) -> tuple[Path, Path | None]:
    """The YAML to launch and the checkpoint it resumes from (None: a fresh start).

    A rerun after a crash or kill continues from the newest checkpoint instead of
    starting over; the base YAML is untouched so its hash stays meaningful."""
    checkpoint = newest_checkpoint(plan.output_dir)
    if checkpoint is None:
        return plan.config_path, None
    resume_cfg = {**plan.config, "resume_from_checkpoint": str(checkpoint)}
    path = plan.run_dir / RESUME_CONFIG_FILE
    path.write_text(dump_config(resume_cfg), encoding="utf-8")
    return path, checkpoint


# --------------------------------------------------------------------------- cache
def adapter_complete(adapter_dir: Path) -> bool:
    return (adapter_dir / "adapter_config.json").is_file() and any(adapter_dir.glob("adapter_model.*"))


def completed_run(run_dir: Path) -> dict[str, Any] | None:
    """The done record of a finished, guard-passed run, or None (then it must (re)train)."""
    marker = run_dir / DONE_MARKER
    if not marker.is_file():
        return None
    record = json.loads(marker.read_text(encoding="utf-8"))
    if not adapter_complete(Path(record.get("adapter_dir", run_dir / OUTPUT_SUBDIR))):
        return None
    return record


def mark_done(run_dir: Path, record: dict[str, Any]) -> Path:
    """Written last, only after success and the learning guard: its presence = cache hit."""
    marker = run_dir / DONE_MARKER
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(marker)
    return marker


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# --------------------------------------------------------------------------- metrics
_DICT_RE = re.compile(r"\{'[^{}]*\}")
_TRAINABLE_RE = re.compile(r"trainable params: ([\d,]+) \|\| all params: ([\d,]+)")


def split_output(text: str) -> Iterator[str]:
    """Segments of terminal output: tqdm redraws with ``\\r``, everything else with ``\\n``."""
    for line in text.split("\n"):
        for segment in line.split("\r"):
            if segment.strip():
                yield segment


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_metrics_line(segment: str) -> dict[str, Any] | None:
    """A Trainer log dict from one output segment (values arrive as strings), or None."""
    for match in _DICT_RE.finditer(segment):
        try:
            value = ast.literal_eval(match.group(0))
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, dict) and any(k in value for k in ("loss", "eval_loss", "train_runtime")):
            return {str(k): _number(v) for k, v in value.items()}
    return None


@dataclass
class TrainMetrics:
    """What a run reported: train steps, evals, the final summary."""

    train: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    trainable_params: int | None = None
    all_params: int | None = None
    avx512_warning: bool = False

    def add(self, record: dict[str, Any]) -> None:
        # Axolotl's per-step records also carry a running `train_runtime`; only the final
        # summary has `train_loss` (the mean over the run) and no `loss`.
        if "eval_loss" in record:
            self.evals.append(record)
        elif "loss" in record:
            self.train.append(record)
        elif "train_loss" in record or "train_runtime" in record:
            self.summary.update(record)

    @property
    def eval_loss_first(self) -> float | None:
        return float(self.evals[0]["eval_loss"]) if self.evals else None

    @property
    def eval_loss_last(self) -> float | None:
        return float(self.evals[-1]["eval_loss"]) if self.evals else None

    @property
    def train_loss_last(self) -> float | None:
        return float(self.train[-1]["loss"]) if self.train else None

    @property
    def train_runtime_s(self) -> float | None:
        value = self.summary.get("train_runtime")
        return float(value) if value is not None else None

    @property
    def tokens_seen(self) -> int | None:
        value = self.summary.get("num_input_tokens_seen")
        if value is None and self.train:
            value = self.train[-1].get("num_input_tokens_seen")
        return int(value) if isinstance(value, (int, float)) else None

    @property
    def tokens_per_second(self) -> float | None:
        """Input tokens processed per second of training (evals and checkpoint saves
        included, as the user waits for them)."""
        seen, runtime = self.tokens_seen, self.train_runtime_s
        return seen / runtime if seen and runtime else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            eval_loss_first=self.eval_loss_first,
            eval_loss_last=self.eval_loss_last,
            train_loss_last=self.train_loss_last,
            train_runtime_s=self.train_runtime_s,
            tokens_seen=self.tokens_seen,
            tokens_per_second=self.tokens_per_second,
        )
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainMetrics:
        names = {"train", "evals", "summary", "trainable_params", "all_params", "avx512_warning"}
        return cls(**{k: v for k, v in data.items() if k in names})


class LogParser:
    """Incremental parser: feed output segments as they stream, read metrics at any time."""

    def __init__(self) -> None:
        self.metrics = TrainMetrics()

    def feed(self, segment: str) -> dict[str, Any] | None:
        if AVX512_WARNING in segment:
            self.metrics.avx512_warning = True
        match = _TRAINABLE_RE.search(segment)
        if match:
            self.metrics.trainable_params = int(match.group(1).replace(",", ""))
            self.metrics.all_params = int(match.group(2).replace(",", ""))
        record = parse_metrics_line(segment)
        if record is not None:
            self.metrics.add(record)
        return record


def parse_log(text: str) -> TrainMetrics:
    parser = LogParser()
    for segment in split_output(text):
        parser.feed(segment)
    return parser.metrics


def trainer_state_metrics(output_dir: Path) -> TrainMetrics | None:
    """Float metrics with step numbers from the newest ``trainer_state.json`` (HF writes it
    only inside checkpoints), or None."""
    states = [p for p in Path(output_dir).glob("checkpoint-*/trainer_state.json")]
    root_state = Path(output_dir) / "trainer_state.json"
    if root_state.is_file():
        states.append(root_state)
    if not states:
        return None
    newest = max(states, key=lambda p: json.loads(p.read_text()).get("global_step", 0))
    metrics = TrainMetrics()
    for record in json.loads(newest.read_text()).get("log_history", []):
        metrics.add(dict(record))
    return metrics


def combine_metrics(from_log: TrainMetrics, output_dir: Path) -> TrainMetrics:
    """Stdout rounds values to 4 digits and has no step numbers; ``trainer_state.json`` has
    both but exists only up to the last checkpoint. Use the checkpoint's records when they
    cover everything the log saw, else the log (a crash after the last save)."""
    state = trainer_state_metrics(output_dir)
    merged = copy.deepcopy(from_log)
    if state is None:
        return merged
    if len(state.train) >= len(merged.train) and len(state.evals) >= len(merged.evals):
        merged.train, merged.evals = state.train, state.evals
        merged.summary = {**merged.summary, **state.summary}
    return merged


# --------------------------------------------------------------------------- guard
def check_learned(metrics: TrainMetrics, min_drop: float) -> float:
    """Fail unless eval loss fell by at least ``min_drop`` (relative). Returns the drop.

    A run that exits 0 but did not learn is the dangerous failure: it would reach the gate
    looking like a real adapter. This catches it and names the usual causes."""
    first, last = metrics.eval_loss_first, metrics.eval_loss_last
    if first is None or last is None or len(metrics.evals) < 2:
        raise NotLearnedError(
            f"cannot tell whether the adapter learned: {len(metrics.evals)} eval(s) in the log "
            "(need one before and one after training). Check that `test_datasets` points at the "
            "eval split and that `eval_strategy` / `eval_steps` evaluate during the run."
        )
    drop = (first - last) / first if first > 0 else 0.0
    if drop >= min_drop:
        return drop
    causes = []
    if metrics.avx512_warning:
        causes.append(
            f"the log shows '{AVX512_WARNING}': QLoRA on an AVX512-BF16 CPU ran without the "
            "tunegate repack workaround, so gradients stopped flowing through the 4-bit layers"
        )
    causes += [
        "QLoRA on CPU without the AVX512-BF16 workaround (pipelines/cpu_qlora_patch) on the "
        "subprocess's PYTHONPATH",
        "learning_rate too low or too few steps (num_epochs, micro_batch_size x "
        "gradient_accumulation_steps vs. the training set size)",
        "nothing to learn: roles_to_train/eot_tokens mask every target token, or the "
        "assistant turns are empty",
        "the eval split does not match the training distribution",
    ]
    listed = "\n".join(f"  - {c}" for c in causes)
    raise NotLearnedError(
        f"the adapter did not learn: eval loss {first:.4f} -> {last:.4f} "
        f"(relative drop {drop:.1%}, required >= {min_drop:.0%} by training.min_eval_loss_drop).\n"
        f"Likely causes:\n{listed}"
    )


# --------------------------------------------------------------------------- reporting
def loss_table_md(metrics: TrainMetrics, max_rows: int = 40) -> str:
    """The loss curve as a markdown table (train loss per logged step, eval loss where run)."""
    rows: list[tuple[int, str, str, str]] = []
    for index, record in enumerate(metrics.train, start=1):
        step = int(record.get("step", index))
        lr = record.get("learning_rate")
        rows.append((step, f"{float(record['loss']):.4f}", "", f"{float(lr):.2e}" if isinstance(lr, (int, float)) else ""))
    steps_per_epoch = _steps_per_epoch(metrics)
    evals = []
    for index, record in enumerate(metrics.evals):
        step = record.get("step")
        if step is None and steps_per_epoch:
            step = round(float(record.get("epoch", 0)) * steps_per_epoch)
        evals.append((int(step) if step is not None else index, f"{float(record['eval_loss']):.4f}"))
    by_step: dict[int, list[str]] = {}
    for step, loss, _, lr in rows:
        by_step[step] = [loss, "", lr]
    for step, eval_loss in evals:
        by_step.setdefault(step, ["", "", ""])[1] = eval_loss
    ordered = sorted(by_step.items())
    if len(ordered) > max_rows:
        stride = -(-len(ordered) // max_rows)
        keep = {s for i, (s, v) in enumerate(ordered) if i % stride == 0 or v[1]} | {ordered[-1][0]}
        ordered = [(s, v) for s, v in ordered if s in keep]
    lines = ["| step | train loss | eval loss | learning rate |", "|---:|---:|---:|---:|"]
    lines += [f"| {s} | {v[0]} | {v[1]} | {v[2]} |" for s, v in ordered]
    return "\n".join(lines)


def _steps_per_epoch(metrics: TrainMetrics) -> float | None:
    for record in reversed(metrics.train):
        epoch = record.get("epoch")
        if isinstance(epoch, (int, float)) and epoch > 0 and "step" in record:
            return float(record["step"]) / float(epoch)
    if metrics.train:
        epoch = metrics.train[-1].get("epoch")
        if isinstance(epoch, (int, float)) and epoch > 0:
            return len(metrics.train) / float(epoch)
    return None


def versions() -> dict[str, str]:
    """Versions of the training stack, recorded with every adapter."""
    import importlib.metadata as md

    out = {}
    for dist in ("axolotl", "transformers", "peft", "bitsandbytes", "torch", "trl", "accelerate"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def quantization_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The BitsAndBytesConfig kwargs the run used (Axolotl's defaults + bnb_config_kwargs),
    with the compute dtype Axolotl derives from bf16/fp16 when not set explicitly."""
    if not cfg.get("load_in_4bit"):
        return {"load_in_4bit": False}
    out = dict(BNB_QUANT_DEFAULTS)
    out["bnb_4bit_compute_dtype"] = "bfloat16" if cfg.get("bf16") is True else "float16" if cfg.get("fp16") is True else "float32"
    out.update({k: str(v) for k, v in (cfg.get("bnb_config_kwargs") or {}).items()})
    return out


def how_to_load(adapter_dir: str, base_model_dir: str, quant: dict[str, Any]) -> str:
    """Python that loads the tuned model exactly as it was trained (4-bit base + adapter)."""
    if quant.get("load_in_4bit"):
        kwargs = ", ".join(
            f"{k}=torch.{v}" if k.endswith(("_dtype", "_storage")) else f"{k}={v!r}" for k, v in quant.items()
        )
        quant_line = f"bnb = BitsAndBytesConfig({kwargs})\n"
        load = f"base = AutoModelForCausalLM.from_pretrained({base_model_dir!r}, quantization_config=bnb)\n"
    else:
        quant_line = ""
        load = f"base = AutoModelForCausalLM.from_pretrained({base_model_dir!r}, dtype=torch.float32)\n"
    return (
        "import torch\n"
        "from peft import PeftModel\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig\n"
        + quant_line
        + load
        + f"model = PeftModel.from_pretrained(base, {adapter_dir!r}).eval()\n"
        + f"tokenizer = AutoTokenizer.from_pretrained({adapter_dir!r})\n"
    )


def tail(path: Path, lines: int = 50) -> str:
    """The last ``lines`` lines of a log (tqdm redraws collapsed), for error messages."""
    if not path.is_file():
        return "(no output captured)"
    segments = list(split_output(path.read_text(encoding="utf-8", errors="replace")))
    return "\n".join(segments[-lines:])


