"""Re-tunes: the job over the whole chain, a sensor on the base-model registry and a
schedule that re-runs a partition only when its inputs changed.

Thin Dagster shells: the decisions live in ``pipelines.training.retune`` (plain, unit-tested);
this module only reads the instance and the resource and turns answers into requests."""

from datetime import UTC, datetime

import dagster as dg

from pipelines.config.settings import ScheduleSettings
from pipelines.orchestration.partitions import base_model_partitions
from pipelines.orchestration.resources import TunegateResource, apply_pool_limit
from pipelines.training import retune

tune_job = dg.define_asset_job(
    "tune_job",
    selection=dg.AssetSelection.all(),
    description=(
        "The whole chain for one base model: sources -> dataset -> base model -> Axolotl QLoRA -> "
        "promptfoo scores -> promotion gate. Run it per `base_model` partition."
    ),
)


def latest_materialization(instance: dg.DagsterInstance, key: str, partition: str | None):
    """(metadata values, timestamp) of the latest materialisation, or (None, None)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    if not records:
        return None, None
    materialization = records[0].asset_materialization
    values = {k: getattr(v, "value", v) for k, v in (materialization.metadata or {}).items()}
    return values, records[0].timestamp


def recorded_inputs(instance: dg.DagsterInstance, partition: str) -> retune.Recorded:
    cfg, _ = latest_materialization(instance, "axolotl_config", partition)
    adapter, _ = latest_materialization(instance, "qlora_adapter", partition)
    _, data_built_at = latest_materialization(instance, "train_set", None)
    fingerprint = (adapter or {}).get("data_fingerprint") or (cfg or {}).get("data_fingerprint")
    return retune.Recorded(
        config_hash=(cfg or {}).get("config_hash"),
        data_fingerprint=fingerprint,
        data_built_at=data_built_at,
    )


@dg.sensor(
    job=tune_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches base_models.yaml: a new entry adds its `base_model` partition and requests a run "
        "of the whole chain (run key = partition + inputs hash, so never twice). A removed entry "
        "keeps its partition and history."
    ),
)
def base_model_registry_sensor(context: dg.SensorEvaluationContext, tunegate: TunegateResource):
    specs = tunegate.base_models()
    known = context.instance.get_dynamic_partitions(base_model_partitions.name)
    removed = retune.removed_partitions([s.name for s in specs], known)
    if removed:
        context.log.info(f"no longer in the registry (history kept, nothing deleted): {removed}")
    new = retune.new_partitions([s.name for s in specs], known)
    if not new:
        return dg.SkipReason(f"no new base model in {tunegate.base_models_path()}")
    settings = tunegate.settings()
    if apply_pool_limit(context.instance, settings.training):  # several new models: their training queues
        context.log.info(f"pool {settings.training.pool!r}: limit {settings.training.pool_limit} (tunegate.yaml)")
    requests = []
    for spec in specs:
        if spec.name in new:
            inputs = retune.current_inputs(tunegate.layout, spec, settings)
            requests.append(
                dg.RunRequest(
                    run_key=retune.run_key(spec.name, inputs),
                    partition_key=spec.name,
                    tags={"tunegate/trigger": "new-base-model"},
                )
            )
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[base_model_partitions.build_add_request(new)],
    )


def _tick_time(context: dg.ScheduleEvaluationContext) -> datetime:
    try:
        return context.scheduled_execution_time
    except Exception:  # evaluated outside a tick (a manual call): Dagster has no time to give
        return datetime.now(UTC)


def _retune_check(context: dg.ScheduleEvaluationContext, tunegate: TunegateResource):
    settings = tunegate.settings()
    apply_pool_limit(context.instance, settings.training)
    known = set(context.instance.get_dynamic_partitions(base_model_partitions.name))
    newest_at, newest = retune.latest_source_mtime(tunegate.sources(), tunegate.sources_path())
    tick = _tick_time(context)
    requests, unchanged = [], []
    for spec in tunegate.base_models():
        if spec.name not in known:
            continue  # new entries are the sensor's job
        inputs = retune.current_inputs(tunegate.layout, spec, settings)
        changes = retune.what_changed(inputs, recorded_inputs(context.instance, spec.name), newest_at, newest)
        if not changes:
            unchanged.append(spec.name)
            continue
        context.log.info(f"re-tune {spec.name}: {'; '.join(changes)}")
        stamp = f":{tick:%Y%m%dT%H%M}"  # a failed re-tune is retried on the next tick
        requests.append(
            dg.RunRequest(
                run_key=retune.run_key(spec.name, inputs) + stamp,
                partition_key=spec.name,
                tags={"tunegate/trigger": "schedule", "tunegate/changes": "; ".join(changes)[:200]},
            )
        )
    if not requests:
        return dg.SkipReason(
            f"nothing changed for {unchanged or 'any partition'}: same config hash, data fingerprint "
            "and no source edited since the data was built"
        )
    return requests


def build_retune_schedule(cron: str) -> dg.ScheduleDefinition:
    """The periodic re-tune check on tunegate.yaml ``schedule.cron``."""
    return dg.schedule(
        name="weekly_retune_schedule",
        cron_schedule=cron,
        job=tune_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            "Periodic re-tune check (cron from tunegate.yaml `schedule.cron`): re-runs a partition only "
            "when its config hash, data fingerprint or source files changed; otherwise skips."
        ),
    )(_retune_check)


# the schema's default cron, for tests; the code location builds its own from tunegate.yaml
weekly_retune_schedule = build_retune_schedule(ScheduleSettings().cron)
