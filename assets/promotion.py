"""Promotion: the gate that decides whether a fine-tune ships, and what ships.

Thin shells over ``pipelines.gate`` and ``pipelines.merge``. ``gate_decision`` always
materialises, so a "no" is as visible in the UI as a "yes"; ``promoted_model`` only
materialises on a win (``output_required=False``), which skips ``merged_model``."""

import dagster as dg

from pipelines import gate, merge
from pipelines.partitions import base_model_partitions
from pipelines.resources import TunegateResource

GROUP = "promotion"


@dg.asset(
    partitions_def=base_model_partitions,
    group_name=GROUP,
    kinds={"python", "markdown"},
    description=(
        "The gate's verdict, yes or no: margin over the prompt-only baseline, one-sided exact "
        "McNemar on paired cases, general-skills regression and the champion's score, with a "
        "markdown report. Thresholds come from tunegate.yaml `gate:`."
    ),
)
def gate_decision(
    context: dg.AssetExecutionContext,
    tunegate: TunegateResource,
    baseline_scores: dict,
    tuned_scores: dict,
    baseline_general_scores: dict,
    tuned_general_scores: dict,
) -> dg.MaterializeResult:
    settings = tunegate.settings().gate
    champion = gate.find_champion(tunegate.layout.registry_file, tuned_scores.get("eval_fingerprint"))
    decision = gate.decide(
        baseline_scores, tuned_scores, baseline_general_scores, tuned_general_scores, champion, settings
    )
    record = gate.decision_record(
        decision, baseline_scores, tuned_scores, baseline_general_scores, tuned_general_scores
    )
    context.log.info(f"Gate decision for {context.partition_key}:\n{record['report_md']}")
    return dg.MaterializeResult(
        value=record,
        metadata={
            "promote": decision.promote,
            "reason": decision.reason,
            "p_value": dg.MetadataValue.float(float(f"{decision.p_value:.4g}")),
            "margin": dg.MetadataValue.float(round(decision.margin, 4)),
            "general_drop": dg.MetadataValue.float(round(decision.general_drop, 4)),
            "paired_cases": decision.pairing.n,
            "champion": (champion or {}).get("partition", "none"),
            "report": dg.MetadataValue.md(record["report_md"]),
        },
    )


@dg.asset(
    partitions_def=base_model_partitions,
    group_name=GROUP,
    kinds={"python", "json"},
    output_required=False,
    description=(
        "The registry entry of a promoted fine-tune (base model, adapter, data fingerprint, config "
        "hash, scores), written atomically to the promotion registry. Materialises only on a win."
    ),
)
def promoted_model(
    context: dg.AssetExecutionContext,
    tunegate: TunegateResource,
    gate_decision: dict,
    qlora_adapter: dict,
    base_model: dict,
):
    if not gate_decision["promote"]:
        context.log.info(f"Nothing promoted for {context.partition_key}: {gate_decision['reason']}")
        return
    path = tunegate.layout.registry_file
    entry = gate.registry_entry(context.partition_key, base_model, qlora_adapter, gate_decision)
    gate.write_registry_entry(path, entry)
    context.log.info(f"Promoted {entry['adapter_dir']} for {context.partition_key}; registry {path}")
    yield dg.Output(
        entry,
        metadata={
            "registry_file": dg.MetadataValue.path(str(path)),
            "adapter_dir": dg.MetadataValue.path(entry["adapter_dir"]),
            "base_model": entry["base_model"]["name"],
            "data_fingerprint": entry["data_fingerprint"] or "",
            "config_hash": entry["config_hash"] or "",
            "tuned_pass_rate": dg.MetadataValue.float(entry["scores"]["tuned"]["pass_rate"]),
            "baseline_pass_rate": dg.MetadataValue.float(entry["scores"]["baseline"]["pass_rate"]),
            "p_value": dg.MetadataValue.float(entry["p_value"]),
            "reason": entry["reason"],
        },
    )


@dg.asset(
    partitions_def=base_model_partitions,
    group_name=GROUP,
    kinds={"pytorch", "huggingface"},
    description=(
        "The promoted adapter merged into the fp32 base weights and saved with save_pretrained, "
        "one folder a server can load. Runs only after a promotion."
    ),
)
def merged_model(
    context: dg.AssetExecutionContext, tunegate: TunegateResource, promoted_model: dict
) -> dg.MaterializeResult:
    slug = tunegate.base_model(context.partition_key).slug
    info = merge.merge_adapter(
        base_model_dir=promoted_model["base_model_dir"],
        adapter_dir=promoted_model["adapter_dir"],
        out_dir=tunegate.layout.merged_model_dir(slug),
        trained_on_4bit=bool(promoted_model.get("load_in_4bit")),
    )
    context.log.info(info.note)
    return dg.MaterializeResult(
        value=info.to_dict(),
        metadata={
            "path": dg.MetadataValue.path(info.path),
            "merged_into": info.merged_into,
            "trained_on_4bit": info.trained_on_4bit,
            "parameters": info.parameters,
            "size_mb": round(info.size_bytes / 2**20, 1),
            "note": info.note,
        },
    )
