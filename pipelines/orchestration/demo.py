"""``make demo``: the whole chain for the default base model, in-process, on the
persistent instance under ``$DAGSTER_HOME`` (the Makefile points it at ``.dagster/``),
so the runs, metadata and the decision show up afterwards in ``make ui``.

Exit code 0 when the run succeeded, whatever the gate decided (a "no" is a valid
outcome); non-zero when the run failed."""

from __future__ import annotations

import argparse
import os
import sys
import time

import dagster as dg

from pipelines.orchestration.definitions import build_definitions
from pipelines.orchestration.partitions import base_model_partitions
from pipelines.orchestration.resources import TunegateResource, persistent_instance


def _ensure_partitions(instance: dg.DagsterInstance, names: list[str]) -> None:
    known = set(instance.get_dynamic_partitions(base_model_partitions.name))
    missing = [n for n in names if n not in known]
    if missing:
        instance.add_dynamic_partitions(base_model_partitions.name, missing)
        print(f"added base_model partitions: {missing}", flush=True)


def _latest_metadata(instance: dg.DagsterInstance, key: str, partition: str, run_id: str) -> dict | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition]), limit=1
    ).records
    if not records or records[0].run_id != run_id:
        return None
    return {k: getattr(v, "value", v) for k, v in records[0].asset_materialization.metadata.items()}


def outcome(instance: dg.DagsterInstance, result, partition: str) -> str:
    """The decision report, or why there is none (training skipped by the baseline check)."""
    decision = _latest_metadata(instance, "gate_decision", partition, result.run_id)
    if decision is not None:
        return decision["report"]
    for event in result.all_events:
        if event.event_type_value == "ASSET_OBSERVATION":
            observation = event.event_specific_data.asset_observation
            if observation.asset_key == dg.AssetKey("qlora_adapter"):
                meta = {k: getattr(v, "value", v) for k, v in observation.metadata.items()}
                ladder = _latest_metadata(instance, "baseline_scores", partition, result.run_id) or {}
                return f"## Training skipped\n\n{meta.get('skipped', meta)}\n\n{ladder.get('ladder', '')}"
    return "No gate decision was recorded in this run."


def _step_table(result) -> str:
    rows = []
    for event in result.all_events:
        if event.event_type_value in ("STEP_SUCCESS", "STEP_SKIPPED", "STEP_FAILURE"):
            duration = getattr(event.event_specific_data, "duration_ms", None)
            took = f"{duration / 1000:7.1f} s" if duration is not None else "      -  "
            rows.append(f"  {event.step_key:<40} {event.event_type_value:<13} {took}")
    return "\n".join(rows)


def run_tune_job(
    instance: dg.DagsterInstance, resource: TunegateResource, partition: str, tags: dict[str, str] | None = None
):
    """``tune_job`` for one partition, in-process, logging at INFO to the console; prints the
    step table with each step's time. The result, successful or not."""
    started = time.monotonic()
    result = (
        build_definitions(resource)
        .resolve_job_def("tune_job")
        .execute_in_process(
            instance=instance,
            partition_key=partition,
            tags=tags,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
    )
    elapsed = time.monotonic() - started
    print(f"\nSteps (run {result.run_id}, {elapsed / 60:.1f} min):\n{_step_table(result)}\n", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partition", help="base model (default: the registry's first entry)")
    args = parser.parse_args(argv)

    resource = TunegateResource()
    instance = persistent_instance(resource.settings().training)
    names = [spec.name for spec in resource.base_models()]
    partition = args.partition or names[0]
    if partition not in names:
        print(f"{resource.base_models_path()}: no base model named {partition!r}", file=sys.stderr)
        return 2
    _ensure_partitions(instance, names)
    print(
        f"tunegate demo: tune_job for partition {partition!r}\n"
        f"  outputs  {resource.layout.home}\n  instance {os.environ['DAGSTER_HOME']}\n"
        f"  mlflow   {resource.tracking_store().uri}",
        flush=True,
    )
    result = run_tune_job(instance, resource, partition)
    if not result.success:
        print(f"The run FAILED; see the step errors above or `make ui` (run {result.run_id}).", file=sys.stderr)
        return 1
    print(outcome(instance, result, partition))
    print(
        "\nBrowse the lineage, metadata and this decision with `make ui` (http://127.0.0.1:3000); the training,"
        "\nscoring and gate runs and the model registry with `make mlflow-ui` (http://127.0.0.1:5000)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
