"""The Axolotl run plan: the generated config, its hash, the run key and the run's files.

``axolotl_configs/qlora.yaml`` <- ``cpu.yaml`` (no CUDA) or ``gpu.yaml`` (CUDA) <- the registry
entry (chat template, eot tokens, LoRA targets, ``axolotl_overrides``) <- ``tunegate.yaml``
``training.overrides`` <- run-specific keys (paths). Written only with ``yaml.safe_dump``. The
config hash covers everything but the run-specific paths, so it is stable across machines and
output roots. Run key = hash(data fingerprint, config hash, base-model weights hash, tokenizer
hash); the run directory is ``Layout.run_dir(slug, key)``, so partitions and datasets never
share files. Axolotl trains on the train file and evaluates on the validation slice carved out
of train (``pipelines.data.split``); the held-out eval split is never an input here."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines.common.files import atomic_write_text
from pipelines.common.hashing import sha256_folder, sha256_json, sha256_text
from pipelines.common.jsonl import read_jsonl
from pipelines.config.base_models import BaseModelSpec
from pipelines.config.paths import REPO_ROOT, Layout
from pipelines.config.training import TrainingSettings

TEMPLATE_DIR = REPO_ROOT / "axolotl_configs"


BASE_TEMPLATE = "qlora.yaml"


CPU_OVERLAY = "cpu.yaml"


GPU_OVERLAY = "gpu.yaml"


CONFIG_FILE = "axolotl.yaml"


RESUME_CONFIG_FILE = "axolotl.resume.yaml"


OUTPUT_SUBDIR = "output"


LOG_FILE = "train.log"


METRICS_FILE = "metrics.jsonl"


# Records every Trainer log event to the run's metrics file; the guard reads nothing else.
METRICS_PLUGIN = "pipelines.training.plugins.metrics_log.MetricsLogPlugin"


# Added to CPU runs with more than one process: Axolotl 0.19 cannot run DDP on CPU without it.
CPU_DDP_PLUGIN = "pipelines.training.plugins.cpu_data_parallel.CpuDataParallelPlugin"


METRICS_FILE_KEY = "tunegate_metrics_file"  # the plugin's config key (MetricsLogArgs)


# Keys tunegate fills per run; excluded from the config hash (machine paths) and rejected in
# templates/overrides (setting them there would silently point a run at the wrong files).
RUN_SPECIFIC_KEYS = ("base_model", "output_dir", "dataset_prepared_path", "resume_from_checkpoint", METRICS_FILE_KEY)


class AxolotlConfigError(ValueError):
    """The generated Axolotl config is invalid; the message names the key and the reason."""


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
                f"{where}: `{key}` is set per run by tunegate (it keys caches and output dirs); remove it"
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
    return sha256_json(cfg)


def tokenizer_hash(model_dir: Path) -> str:
    """Hash of the tokenizer files: Axolotl's prepared-dataset cache keys on the tokenizer's
    *name*, so a changed tokenizer at the same path would reuse stale token ids."""
    return sha256_folder(model_dir, _is_tokenizer_file, recursive=False, what="tokenizer files")


def _is_tokenizer_file(path: Path) -> bool:
    prefixes = ("tokenizer", "special_tokens", "vocab", "merges", "added_tokens")
    return path.name.startswith(prefixes) or path.name == "chat_template.jinja"


def run_key(data_fingerprint: str, cfg_hash: str, base_model_sha256: str, tok_hash: str) -> str:
    """Same data + same config + same base weights + same tokenizer = same run (and a cache
    hit). The tokenizer counts on its own: a registry tokenizer fix (Gemma's ``model: bpe``)
    changes what the model is trained on while the weights stay byte-identical."""
    return sha256_text("\n".join([data_fingerprint, cfg_hash, base_model_sha256, tok_hash]))[:16]


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
            f'merged config: `plugins` must include {METRICS_PLUGIN}: the "did it learn" guard reads '
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


def check_launch(launcher: str, processes: int, *, cuda: bool) -> None:
    """Refuse launcher/process combinations that cannot start, naming the fix."""
    if processes > 1 and launcher == "python":
        raise AxolotlConfigError(f"training.processes: {processes} needs launcher torchrun or accelerate")
    if processes > 1 and launcher == "accelerate" and not cuda:
        raise AxolotlConfigError(
            f"training.launcher: accelerate with processes: {processes} on a machine without CUDA: accelerate's "
            "multi-CPU launch goes through mpirun (not installed); use `launcher: torchrun` (gloo) on CPU"
        )
