"""The training stage's engine: generate, validate and launch an Axolotl QLoRA run.

Plain Python, no Dagster (``assets/training.py`` is the thin shell; ``axolotl_launcher.py``
is the Pipes child that runs Axolotl). What lives here and why:

- **Config generation**: ``axolotl_configs/qlora.yaml`` <- ``cpu.yaml`` (no CUDA) or ``gpu.yaml`` (CUDA)
  <- the registry entry (chat template, eot tokens, LoRA targets, ``axolotl_overrides``)
  <- ``tunegate.yaml`` ``training.overrides`` <- run-specific keys (paths). Written only with
  ``yaml.safe_dump``. The config hash covers everything but the run-specific paths, so it
  is stable across machines and output roots.
- **Validation** with Axolotl's own schema before anything launches, plus a check for keys
  the schema does not know: pydantic silently drops those, and Axolotl renames keys between
  versions, so a typo would otherwise train with defaults.
- **Data**: Axolotl trains on the train file and evaluates on the validation slice carved
  out of train (``pipelines.split``); the held-out eval split is never an input here.
- **Run identity**: run key = hash(data fingerprint, config hash, base-model weights hash);
  the run directory is ``Layout.run_dir(slug, key)``, so partitions and datasets never share
  files, and a finished run (done marker, written only after success and the learning
  guard) is reused instead of retrained.
- **Launch**: ``axolotl train <yaml> --launcher python|torchrun|accelerate [-- <launcher args>]``
  (``training.launcher`` / ``training.processes``: the same YAML on 1 or N processes) with a
  clean environment, the AVX512-BF16 QLoRA workaround on the child's ``PYTHONPATH`` on CPU
  (and ``CpuDataParallelPlugin`` for N CPU processes), resume from the newest checkpoint.
- **Metrics**: ``MetricsLogPlugin`` (``pipelines/axolotl_plugin.py``) appends every Trainer
  log event, with its step, to ``metrics.jsonl`` in the run directory, across resumes;
  ``read_metrics`` keeps the latest record per (kind, step), so the "did it learn" guard
  judges the run's real last eval. Stdout is only scanned for the bitsandbytes warning.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

from pipelines.config import REPO_ROOT, BaseModelSpec, Layout, TrainingSettings
from pipelines.files import atomic_write_json, atomic_write_text
from pipelines.records import read_jsonl

TEMPLATE_DIR = REPO_ROOT / "axolotl_configs"
BASE_TEMPLATE = "qlora.yaml"
CPU_OVERLAY = "cpu.yaml"
GPU_OVERLAY = "gpu.yaml"
PATCH_DIR = Path(__file__).resolve().parent / "cpu_qlora_patch"

CONFIG_FILE = "axolotl.yaml"
RESUME_CONFIG_FILE = "axolotl.resume.yaml"
OUTPUT_SUBDIR = "output"
LOG_FILE = "train.log"
METRICS_FILE = "metrics.jsonl"
DONE_MARKER = "tunegate-done.json"

# Records every Trainer log event to the run's metrics file; the guard reads nothing else.
METRICS_PLUGIN = "pipelines.axolotl_plugin.MetricsLogPlugin"
# Added to CPU runs with more than one process: Axolotl 0.19 cannot run DDP on CPU without it.
CPU_DDP_PLUGIN = "pipelines.axolotl_plugin.CpuDataParallelPlugin"
METRICS_FILE_KEY = "tunegate_metrics_file"  # the plugin's config key (MetricsLogArgs)

# Keys tunegate fills per run; excluded from the config hash (machine paths) and rejected in
# templates/overrides (setting them there would silently point a run at the wrong files).
RUN_SPECIFIC_KEYS = ("base_model", "output_dir", "dataset_prepared_path", "resume_from_checkpoint",
                     METRICS_FILE_KEY)

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


def flash_attention_available() -> bool:
    """Axolotl's ``flash_attention: true`` needs the ``flash_attn`` package (CUDA builds only)."""
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None


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
    """The merged, machine-independent training config (what the config hash covers):
    the QLoRA template, then the GPU profile (CUDA) or the CPU overlay, then the registry
    entry and ``training.overrides``."""
    layers: list[tuple[str, dict[str, Any]]] = [(BASE_TEMPLATE, load_template(BASE_TEMPLATE, template_dir))]
    overlay = GPU_OVERLAY if cuda else CPU_OVERLAY
    layers.append((overlay, load_template(overlay, template_dir)))
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
    if merged.get("flash_attention") and not flash_attention_available():
        # gpu.yaml asks for flash attention "where available": without flash_attn, torch's SDPA,
        # and no sample packing (Axolotl warns packing + SDPA + bf16 may train on a 0.0 loss)
        merged.update(flash_attention=False, sdp_attention=True, sample_packing=False, pad_to_sequence_len=False)
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


def run_key(data_fingerprint: str, cfg_hash: str, base_model_sha256: str, tok_hash: str) -> str:
    """Same data + same config + same base weights + same tokenizer = same run (and a cache
    hit). The tokenizer counts on its own: a registry tokenizer fix (Gemma's ``model: bpe``)
    changes what the model is trained on while the weights stay byte-identical."""
    joined = "\n".join([data_fingerprint, cfg_hash, base_model_sha256, tok_hash])
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def prepared_dataset_dir(layout: Layout, tok_hash: str, data_fingerprint: str) -> Path:
    """Axolotl keys its tokenised copy of a dataset by the file's *path*, not its bytes: a
    rewritten train.jsonl at the same path would silently train on the old rows (the
    validation slice included). Keying the folder by tokenizer and data avoids that."""
    return layout.home / "cache" / "prepared" / tok_hash[:16] / data_fingerprint[:16]


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
    launcher: str = "python"
    processes: int = 1

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
    def metrics_path(self) -> Path:
        return self.run_dir / METRICS_FILE

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
    validation_path: Path,
    data_fingerprint: str,
    cuda: bool | None = None,
    template_dir: Path = TEMPLATE_DIR,
    tracking_keys: dict[str, Any] | None = None,
) -> RunPlan:
    """Merge the config, hash it, key the run, and fill in the run-specific paths. Axolotl
    trains on ``train_path`` and evaluates on ``validation_path`` (a slice of the train
    split): the held-out eval split has no place in a training config. ``tracking_keys``
    (Axolotl's ``use_mlflow``, ``mlflow_*``) are run-specific too: the hash leaves them out."""
    cuda = cuda_available() if cuda is None else cuda
    base_cfg = training_config(spec, settings, cuda=cuda, template_dir=template_dir)
    if METRICS_PLUGIN not in (base_cfg.get("plugins") or []):
        raise AxolotlConfigError(
            f"merged config: `plugins` must include {METRICS_PLUGIN}: the \"did it learn\" guard reads "
            f"the metrics it records (plugins now: {base_cfg.get('plugins') or []})"
        )
    check_launch(settings.launcher, settings.processes, cuda=cuda)
    if settings.processes > 1 and not cuda:
        base_cfg["plugins"] = [*base_cfg["plugins"], CPU_DDP_PLUGIN]
    # N processes train on N x the global batch (Axolotl: micro x accumulation x world size):
    # a different run. One process keeps the hash every earlier run was keyed by.
    cfg_hash = config_hash(base_cfg if settings.processes == 1 else {**base_cfg, "_processes": settings.processes})
    tok_hash = tokenizer_hash(base_model_dir)
    key = run_key(data_fingerprint, cfg_hash, base_model_sha256, tok_hash)
    run_dir = layout.run_dir(spec.slug, key)
    full = copy.deepcopy(base_cfg)
    full["base_model"] = str(base_model_dir)
    full["output_dir"] = str(run_dir / OUTPUT_SUBDIR)
    full["dataset_prepared_path"] = str(prepared_dataset_dir(layout, tok_hash, data_fingerprint))
    full[METRICS_FILE_KEY] = str(run_dir / METRICS_FILE)
    full.update(tracking_keys or {})
    for list_key, path in (("datasets", train_path), ("test_datasets", validation_path)):
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
        launcher=settings.launcher,
        processes=settings.processes,
    )


def assert_disjoint(train_path: Path, other_path: Path) -> None:
    """Rows that judge training (validation, eval) must never be trained on: refuse
    overlapping files or ids."""
    if Path(train_path).resolve() == Path(other_path).resolve():
        raise AxolotlConfigError(f"train and {Path(other_path).name} point at the same file {train_path}")
    train_ids = {row.get("id") for row in read_jsonl(train_path)}
    shared = sorted(str(row.get("id")) for row in read_jsonl(other_path) if row.get("id") in train_ids)
    if shared:
        raise AxolotlConfigError(
            f"{other_path}: {len(shared)} record id(s) also in {train_path} "
            f"(e.g. {shared[:3]}): they would be trained on"
        )


def dump_config(cfg: dict[str, Any]) -> str:
    """YAML via ``safe_dump`` only: user strings (system prompts, paths) are quoted by the
    dumper, never interpolated into a template."""
    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True, default_flow_style=False)


def write_config(plan: RunPlan) -> Path:
    return atomic_write_text(plan.config_path, dump_config(plan.config))


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


def validate_config(cfg: dict[str, Any], capabilities: tuple[dict, dict] | None = None) -> None:
    """Validate with Axolotl's own schema (the same call ``axolotl train`` makes), plus
    unknown-key detection. Raises ``AxolotlConfigError`` naming each bad key.
    ``capabilities``: Axolotl's ``(capabilities, env_capabilities)`` of the machine that will
    train (default: this one's, probed as ``axolotl train`` does), e.g. a GPU pod's."""
    if cfg.get("adapter") == "lora" and (cfg.get("load_in_4bit") or cfg.get("load_in_8bit")):
        raise AxolotlConfigError(
            "adapter: lora with load_in_4bit/load_in_8bit: true would still train on a quantised base; for a plain "
            "LoRA on the fp32 weights set both `adapter: lora` and `load_in_4bit: false` (e.g. in base_models.yaml "
            "axolotl_overrides), or keep `adapter: qlora`"
        )
    from pydantic import ValidationError

    from axolotl.cli.config import gpu_capabilities
    from axolotl.integrations.base import PluginManager
    from axolotl.integrations.config import merge_input_args
    from axolotl.utils.config import prepare_plugins
    from axolotl.utils.config import validate_config as axolotl_validate
    from axolotl.utils.dict import DictDefault
    from axolotl.utils.schemas.datasets import SFTDataset

    # As `axolotl train` does: register the plugins, whose input args extend the schema
    # (METRICS_FILE_KEY). Axolotl only logs a plugin that fails to import, then trains without it.
    prepare_plugins(DictDefault(copy.deepcopy(cfg)))
    registered = PluginManager.get_instance().plugins
    missing = [name for name in cfg.get("plugins") or [] if name not in registered]
    if missing:
        raise AxolotlConfigError(f"invalid Axolotl config: `plugins`: cannot import {missing}")
    _, input_config = merge_input_args()
    problems = _unknown_keys(cfg, _known_keys(input_config), "")
    dataset_keys = _known_keys(SFTDataset)
    for list_key in ("datasets", "test_datasets"):
        for index, entry in enumerate(cfg.get(list_key) or []):
            if isinstance(entry, dict):
                problems += _unknown_keys(entry, dataset_keys, f"{list_key}[{index}].")
    if problems:
        raise AxolotlConfigError("invalid Axolotl config: " + "; ".join(problems))
    capabilities, env_capabilities = capabilities or gpu_capabilities()
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
    offline/no-telemetry variables and (QLoRA on CPU) the AVX512-BF16 workaround. This
    interpreter's ``bin`` goes first on PATH: Axolotl starts ``torchrun`` / ``accelerate`` by name."""
    env = {k: v for k, v in base.items() if not k.startswith(_STRIPPED_ENV_PREFIXES)}
    env.update(SUBPROCESS_ENV)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), *[p for p in env.get("PATH", "").split(os.pathsep) if p]])
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


def check_launch(launcher: str, processes: int, *, cuda: bool) -> None:
    """Refuse launcher/process combinations that cannot start, naming the fix."""
    if processes > 1 and launcher == "python":
        raise AxolotlConfigError(f"training.processes: {processes} needs launcher torchrun or accelerate")
    if processes > 1 and launcher == "accelerate" and not cuda:
        raise AxolotlConfigError(
            f"training.launcher: accelerate with processes: {processes} on a machine without CUDA: accelerate's "
            "multi-CPU launch goes through mpirun (not installed); use `launcher: torchrun` (gloo) on CPU"
        )


def launcher_args(launcher: str, processes: int, *, cuda: bool) -> list[str]:
    """Arguments for the launcher Axolotl starts (after ``--`` on its command line), in the
    launchers' own terms: ``torchrun --standalone --nproc_per_node N`` (a free rendezvous
    port, so two runs on one host do not collide); ``accelerate launch --num_processes N``
    (``--multi_gpu`` for N > 1)."""
    if launcher == "torchrun":
        return ["--standalone", "--nproc_per_node", str(processes)]
    if launcher == "accelerate":
        args = ["--num_processes", str(processes), "--num_machines", "1", "--dynamo_backend", "no"]
        return args + (["--multi_gpu"] if processes > 1 else []) + ([] if cuda else ["--cpu"])
    return []


def launch_command(config_path: Path, executable: str = "", *, launcher: str = "python", processes: int = 1,
                   cuda: bool = False) -> list[str]:
    """``axolotl train <yaml> --launcher <launcher> [-- <launcher args>]``: the same YAML runs
    on one process or data-parallel on N."""
    check_launch(launcher, processes, cuda=cuda)
    command = [axolotl_executable(executable), "train", str(config_path), "--launcher", launcher]
    extra = launcher_args(launcher, processes, cuda=cuda)
    return command + (["--", *extra] if extra else [])


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
    if checkpoint is None:  # a fresh start: records of an attempt that saved nothing are void
        plan.metrics_path.unlink(missing_ok=True)
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
    if not marker.is_file() or not (run_dir / METRICS_FILE).is_file():
        return None
    record = json.loads(marker.read_text(encoding="utf-8"))
    if not adapter_complete(Path(record.get("adapter_dir", run_dir / OUTPUT_SUBDIR))):
        return None
    return record


def mark_done(run_dir: Path, record: dict[str, Any]) -> Path:
    """Written last, only after success and the learning guard: its presence = cache hit."""
    return atomic_write_json(run_dir / DONE_MARKER, record)


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# --------------------------------------------------------------------------- metrics
def split_output(text: str) -> Iterator[str]:
    """Segments of terminal output: tqdm redraws with ``\\r``, everything else with ``\\n``."""
    for line in text.split("\n"):
        for segment in line.split("\r"):
            if segment.strip():
                yield segment


def record_kind(logs: dict[str, Any]) -> str:
    """What a Trainer log event is. Axolotl's per-step records also carry a running
    ``train_runtime``; only the final summary has ``train_loss`` and no ``loss``."""
    if "eval_loss" in logs:
        return "eval"
    if "loss" in logs:
        return "train"
    if "train_loss" in logs or "train_runtime" in logs:
        return "summary"
    return "other"


def metrics_record(logs: dict[str, Any], *, step: int, epoch: float | None, kind: str | None = None) -> dict[str, Any]:
    """One line of ``metrics.jsonl``: the event's kind, the optimizer step it happened at,
    the epoch and its numeric values (what ``MetricsLogPlugin`` writes)."""
    numbers = {k: v for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {**numbers, "kind": kind or record_kind(logs), "step": int(step), "epoch": epoch}


@dataclass
class TrainMetrics:
    """What a run recorded, one record per (kind, step): train steps, evals, the final
    summary, and one ``begin`` record per launch (a resume is a second launch)."""

    train: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    begins: list[dict[str, Any]] = field(default_factory=list)
    avx512_warning: bool = False

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]], *, avx512_warning: bool = False) -> TrainMetrics:
        """A resumed run logs again the steps after its checkpoint: the latest occurrence of
        each (kind, step) wins, so the final eval is the resumed run's, not an older one."""
        latest = {(record["kind"], record["step"]): record for record in records}
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for kind, step in sorted(latest):
            by_kind.setdefault(kind, []).append(latest[kind, step])
        summaries = by_kind.get("summary", [])
        return cls(train=by_kind.get("train", []), evals=by_kind.get("eval", []),
                   summary=dict(summaries[-1]) if summaries else {}, begins=by_kind.get("begin", []),
                   avx512_warning=avx512_warning)

    @property
    def final_step(self) -> int | None:
        steps = [r["step"] for r in self.train] + ([self.summary["step"]] if self.summary else [])
        return max(steps) if steps else None

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
    def trainable_params(self) -> int | None:
        value = self.begins[-1].get("trainable_params") if self.begins else None
        return int(value) if value is not None else None

    @property
    def all_params(self) -> int | None:
        value = self.begins[-1].get("all_params") if self.begins else None
        return int(value) if value is not None else None

    @property
    def train_runtime_s(self) -> float | None:
        """Of the last launch only: a resumed Trainer restarts its clock."""
        value = self.summary.get("train_runtime")
        return float(value) if value is not None else None

    @property
    def tokens_per_second(self) -> float | None:
        """Input tokens processed per second of the last launch (evals and checkpoint saves
        included, as the user waits for them)."""
        seen, runtime = self.summary.get("num_input_tokens_seen"), self.train_runtime_s
        if seen is None or not runtime:
            return None
        before = self.begins[-1].get("num_input_tokens_seen", 0) if self.begins else 0
        return (seen - before) / runtime if seen > before else None


def read_metrics(run_dir: Path) -> TrainMetrics:
    """The run's metrics from ``metrics.jsonl`` (all launches), plus whether its log shows
    the bitsandbytes warning (a process-level warning no Trainer callback sees)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no metrics recorded: {METRICS_PLUGIN} did not run (is it in the config's "
            "`plugins`, and did it import? see train.log)"
        )
    log = Path(run_dir) / LOG_FILE
    warned = log.is_file() and AVX512_WARNING in log.read_text(encoding="utf-8", errors="replace")
    return TrainMetrics.from_records(_checked_records(path), avx512_warning=warned)


def _checked_records(path: Path) -> Iterator[dict[str, Any]]:
    for record in read_jsonl(path, line_key="_line"):
        line = record.pop("_line")
        if not isinstance(record.get("kind"), str) or not isinstance(record.get("step"), int):
            raise ValueError(f"{path}: line {line}: a metrics record needs a `kind` and an integer `step`")
        yield record


# --------------------------------------------------------------------------- guard
def check_learned(metrics: TrainMetrics, min_drop: float) -> float:
    """Fail unless eval loss fell by at least ``min_drop`` (relative) from the eval before the
    first step to the eval after the last one. Returns the drop.

    A run that exits 0 but did not learn is the dangerous failure: it would reach the gate
    looking like a real adapter. This catches it and names the usual causes. Judging any
    other eval (say, an older one at the step a crashed run resumed from) would be judging a
    different adapter than the one that ships, so the evals' steps are checked too."""
    first, last, final = metrics.eval_loss_first, metrics.eval_loss_last, metrics.final_step
    if first is None or last is None or len(metrics.evals) < 2:
        raise NotLearnedError(
            f"cannot tell whether the adapter learned: {len(metrics.evals)} eval(s) recorded "
            "(need one before and one after training). Check that `test_datasets` points at the "
            "validation slice and that `eval_strategy` / `eval_steps` evaluate during the run."
        )
    if metrics.evals[0]["step"] != 0 or metrics.evals[-1]["step"] != final:
        raise NotLearnedError(
            f"cannot tell whether the adapter learned: the evals ran at steps "
            f"{[r['step'] for r in metrics.evals]}, training ended at step {final}; the guard needs "
            "one at step 0 and one at the last step (use `eval_strategy: epoch`, or `eval_steps` "
            "that divide the total)."
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
        "the validation slice does not match the training distribution",
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
    by_step: dict[int, list[str]] = {}
    for record in metrics.train:
        lr = record.get("learning_rate")
        by_step[record["step"]] = [f"{float(record['loss']):.4f}", "", f"{float(lr):.2e}" if lr is not None else ""]
    for record in metrics.evals:
        by_step.setdefault(record["step"], ["", "", ""])[1] = f"{float(record['eval_loss']):.4f}"
    ordered = sorted(by_step.items())
    if len(ordered) > max_rows:
        stride = -(-len(ordered) // max_rows)
        keep = {s for i, (s, v) in enumerate(ordered) if i % stride == 0 or v[1]} | {ordered[-1][0]}
        ordered = [(s, v) for s, v in ordered if s in keep]
    lines = ["| step | train loss | eval loss | learning rate |", "|---:|---:|---:|---:|"]
    lines += [f"| {s} | {v[0]} | {v[1]} | {v[2]} |" for s, v in ordered]
    return "\n".join(lines)


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


