"""Promotion: the champion re-scored, the gate that decides whether a fine-tune ships, and
the registered model version of what ships.

Thin shells over ``pipelines.gate`` (decision, cost, report, registry) and
``pipelines.common.tracking``. ``gate_decision`` always materialises and is logged to MLflow, so a
"no" is as visible as a "yes"; ``promoted_model`` only materialises on a win
(``output_required=False``), after checking that the folder about to be registered is byte
for byte the artefact that was scored, and moves the MLflow alias ``champion`` to it."""

import time
from dataclasses import replace
from pathlib import Path

import dagster as dg

from assets.evaluation import experiment, score_as_trained, task_spec
from assets.metadata import to_dagster
from pipelines.common import tracking
from pipelines.common.metadata import PathValue
from pipelines.config.project import Project
from pipelines.data.split import SplitFile
from pipelines.evaluation.scorecard import ScoreCard
from pipelines.gate import bases, cost, registry
from pipelines.gate.decision import ChampionInput, IncomparableCards, decide
from pipelines.gate.ladder import Ladder
from pipelines.gate.report import DecisionRecord, decision_record
from pipelines.models import artefacts
from pipelines.models.loading import ModelSpec
from pipelines.models.materialize import BaseModelInfo
from pipelines.models.merge import BaseAsTrained, TunedModel
from pipelines.orchestration.automation import latest_materialization
from pipelines.orchestration.partitions import base_model_partitions
from pipelines.orchestration.resources import PromptfooResource, TunegateResource
from pipelines.training.adapter import AdapterRecord

GROUP = "promotion"


def _champion(context, tunegate, promptfoo, eval_set: SplitFile, tuned_model: TunedModel) -> ChampionInput:
    task = task_spec(tunegate).name
    store = tunegate.tracking_store()
    try:
        entry = registry.champion(store, task)
    except registry.RegistryError as exc:  # not knowing the champion is no reason to skip its check
        raise dg.Failure(description=str(exc)) from exc
    if entry is None:
        return ChampionInput("none")
    if entry.artefact["id"] == tuned_model.artefact["id"]:
        return ChampionInput("same", entry)
    try:
        model_dir = registry.champion_model_dir(store, entry, tunegate.layout.champion_cache_dir)
    except (FileNotFoundError, ValueError) as exc:
        return ChampionInput("missing", entry, why=f"{entry.partition} at {entry.model_dir}: {exc}")
    model = ModelSpec(base_dir=str(model_dir), chat_template=entry.artefact["chat_template"])
    card = score_as_trained(context, tunegate, promptfoo, "champion", eval_set, model, entry.artefact)
    return ChampionInput("scored", entry, card)


@dg.asset(
    partitions_def=base_model_partitions,
    group_name=GROUP,
    kinds={"promptfoo", "python"},
    description=(
        "The task's current champion (the MLflow alias `champion`, any base model), re-scored on TODAY's "
        "held-out cases, loaded exactly as it ships, so a data refresh never switches the champion check "
        "off. Its status: none, same (the candidate is the champion), missing (files gone) or scored."
    ),
)
def champion_scores(
    context: dg.AssetExecutionContext,
    tunegate: TunegateResource,
    promptfoo: PromptfooResource,
    eval_set: SplitFile,
    tuned_model: TunedModel,
) -> dg.MaterializeResult:
    champion = _champion(context, tunegate, promptfoo, eval_set, tuned_model)
    context.log.info(f"champion: {champion.status} {champion.why}")
    return dg.MaterializeResult(value=champion, metadata=to_dagster(champion.metadata()))


def _released(tunegate: TunegateResource, name: str | None) -> str | None:
    """A base model's release date from the registry (None: unknown or no longer listed)."""
    spec = next((s for s in tunegate.base_models() if s.name == name), None)
    return spec.released.isoformat() if spec and spec.released else None


def _base_model_context(
    context, tunegate: TunegateResource, base_model: BaseModelInfo, champion: ChampionInput
) -> bases.BaseModelContext:
    """Every other base model's latest gate decision, read from the instance, so a "no" on the
    old base still shows beside the new one what switching buys."""
    others = []
    for partition in context.instance.get_dynamic_partitions(base_model_partitions.name):
        if partition == context.partition_key:
            continue
        meta, _ = latest_materialization(context.instance, "gate_decision", partition)
        if meta is None:
            continue
        others.append(
            bases.OtherBase(
                partition,
                meta.get("tuned_pass_rate"),
                meta.get("baseline_pass_rate"),
                meta.get("baseline_rung"),
                bool(meta.get("promote")),
                meta.get("suite_fingerprint"),
                _released(tunegate, partition),
            )
        )
    stats = context.instance.get_run_stats(context.run.run_id)
    started = getattr(stats, "start_time", None)
    return bases.BaseModelContext(
        candidate=context.partition_key,
        candidate_released=base_model.released,
        others=others,
        champion_released=_released(tunegate, champion.entry.partition if champion.entry else None),
        run_seconds=(time.time() - started) if started else None,
    )


@dg.asset(
    partitions_def=base_model_partitions,
    group_name=GROUP,
    kinds={"python", "markdown"},
    description=(
        "The gate's verdict, yes or no: the tuned model vs the strongest prompt-only rung (margin, one-sided "
        "exact McNemar on paired cases), vs the re-scored champion (same rule), general-skills drop "
        "(upper 95 % bound, decomposed into quantisation and adapter), the cost table, and every base "
        "model side by side (which serves after, the champion base's age, this re-tune's cost). "
        "Thresholds from tunegate.yaml `gate:`, prices from `cost:`."
    ),
)
def gate_decision(
    context: dg.AssetExecutionContext,
    tunegate: TunegateResource,
    baseline_scores: Ladder,
    tuned_scores: ScoreCard,
    baseline_general_scores: ScoreCard,
    base_as_trained_general_scores: ScoreCard,
    tuned_general_scores: ScoreCard,
    champion_scores: ChampionInput,
    base_as_trained: BaseAsTrained,
    qlora_adapter: AdapterRecord,
    base_model: BaseModelInfo,
) -> dg.MaterializeResult:
    settings = tunegate.settings()
    rungs = baseline_scores.rungs
    general = {
        "reference": baseline_general_scores,
        "base_as_trained": base_as_trained_general_scores if base_as_trained.quantised else None,
        "candidate": tuned_general_scores,
    }
    try:
        decision = decide(rungs, tuned_scores, general, champion_scores, settings.gate)
    except IncomparableCards as exc:
        raise dg.Failure(description=f"the gate cannot compare these score cards: {exc}") from exc
    training = cost.TrainingTime(qlora_adapter.train_runtime_s, qlora_adapter.tokens_per_second)
    costs = cost.cost_report(rungs, decision.baseline_rung, tuned_scores, training, settings.cost)
    ctx = _base_model_context(context, tunegate, base_model, champion_scores)
    bases_md = bases.base_models_md(decision, tuned_scores, rungs[decision.baseline_rung], ctx, costs)
    record = decision_record(decision, rungs, tuned_scores, general, costs, bases_md=bases_md, base_models=ctx)
    record = replace(
        record,
        mlflow_run_id=tracking.log_decision(
            tunegate.tracking_store(),
            experiment(tunegate),
            context.partition_key,
            record,
            tracking.tags(
                data_fingerprint=qlora_adapter.data_fingerprint,
                run_key=qlora_adapter.run_key,
                training_run=qlora_adapter.mlflow_run_id,
            ),
        ),
    )
    context.log.info(f"Gate decision for {context.partition_key}:\n{record.report_md}")
    return dg.MaterializeResult(value=record, metadata=to_dagster(record.metadata()))


@dg.asset(
    partitions_def=base_model_partitions,
    group_name=GROUP,
    kinds={"python", "mlflow"},
    output_required=False,
    description=(
        "A promoted fine-tune: the scored artefact (merged model, adapter, base reference) registered as a "
        "version of the task's MLflow model, tagged with base model, data and eval fingerprints and scores, "
        "and the alias `champion` moved to it (both or neither). Materialises only on a win, and only if "
        "the folder still hashes to what the gate scored."
    ),
)
def promoted_model(
    context: dg.AssetExecutionContext,
    tunegate: TunegateResource,
    gate_decision: DecisionRecord,
    tuned_model: TunedModel,
    qlora_adapter: AdapterRecord,
    base_model: BaseModelInfo,
):
    if not gate_decision.decision.promote:
        context.log.info(f"Nothing promoted for {context.partition_key}: {gate_decision.decision.reason}")
        return
    scored = gate_decision.candidate
    if scored["id"] != tuned_model.artefact["id"]:
        raise dg.Failure(
            description=(
                f"refusing to promote: the gate scored artefact {scored['id'][:16]}, but "
                f"tuned_model is now {tuned_model.artefact['id'][:16]}; re-run the gate"
            )
        )
    try:
        artefacts.verify(scored, Path(tuned_model.path))
    except (FileNotFoundError, ValueError) as exc:
        raise dg.Failure(description=f"refusing to promote: {exc}") from exc
    task = task_spec(tunegate).name
    new = registry.entry(task, context.partition_key, scored, base_model, qlora_adapter, gate_decision)
    store = tunegate.tracking_store()
    try:
        entry = registry.promote(store, new, base_model)
    except registry.RegistryError as exc:
        raise dg.Failure(description=f"promotion of {context.partition_key} did not complete: {exc}") from exc
    path = tunegate.layout.registry_file
    try:
        registry.export(store, path)
    except OSError as exc:  # the export is derived: the promotion stands without it
        context.log.warning(f"{task} version {entry.version} is champion, but {path} was not rewritten: {exc}")
    context.log.info(f"Promoted {entry.model_dir} as the {task} champion: version {entry.version}")
    metadata = {**entry.metadata(), "mlflow_tracking_uri": store.uri, "registry_export": PathValue(str(path))}
    yield dg.Output(entry, metadata=to_dagster(metadata))


def build_assets(project: Project) -> list[dg.AssetsDefinition]:
    """The gate stage of the code location."""
    return [champion_scores, gate_decision, promoted_model]
