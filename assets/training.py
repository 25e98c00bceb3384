"""Training: the generated Axolotl config and the QLoRA adapter.

Thin shells over ``pipelines.models`` and ``pipelines.training``; Axolotl itself runs
in a subprocess through Dagster Pipes (``pipelines/orchestration/axolotl_launcher.py``), so its output
streams into the run's logs and its metrics land in the adapter's metadata."""

import sys
from dataclasses import replace
from pathlib import Path

import dagster as dg

from assets.evaluation import experiment
from assets.metadata import to_dagster
from pipelines.common import tracking
from pipelines.common.files import tail
from pipelines.config.paths import REPO_ROOT
from pipelines.config.project import Project
from pipelines.config.training import TrainingSettings
from pipelines.data.split import SplitFile
from pipelines.gate.ladder import Ladder
from pipelines.models.materialize import BaseModelInfo
from pipelines.orchestration.partitions import base_model_partitions
from pipelines.orchestration.resources import AxolotlResource, TunegateResource
from pipelines.training import (
    adapter,
    axolotl_schema,
    done_marker,
    guard,
    k8s_pod,
    launch,
    run_plan,
    train_metrics,
)

GROUP = "training"


LAUNCHER_MODULE = "pipelines.orchestration.axolotl_launcher"


def _on_cuda(settings: TrainingSettings) -> bool | None:
    """Whether the training process will see CUDA: a Kubernetes pod with GPUs does, whatever
    this machine has; None lets the local machine say."""
    if settings.backend == "kubernetes":
        return k8s_pod.pod_gpus(settings.kubernetes, settings.processes) > 0
    return None


def _pod_launch(settings: TrainingSettings, plan: run_plan.RunPlan) -> k8s_pod.PodLaunch:
    paths = [
        str(plan.run_dir),
        str(plan.base_model_dir),
        plan.config["dataset_prepared_path"],
        *[entry["path"] for key in ("datasets", "test_datasets") for entry in plan.config[key]],
    ]
    return k8s_pod.pod_launch(
        settings.kubernetes, processes=settings.processes, launcher_module=LAUNCHER_MODULE, paths=paths
    )


def _check_pod(pod: k8s_pod.PodLaunch) -> None:
    """Build the pod as ``PipesK8sClient.run`` will (``build_pod_body``: the kubernetes
    client's models), so a bad key fails here, before any training is queued."""
    from dagster_k8s.pipes import build_pod_body

    try:
        build_pod_body(
            pod_name="tunegate-check",
            image=pod.image,
            command=pod.command,
            env_vars=pod.env,
            base_pod_meta=pod.base_pod_meta,
            base_pod_spec=pod.base_pod_spec,
        )
    except Exception as exc:  # dagster-k8s raises invariant violations and model errors
        raise k8s_pod.PodSpecError(f"training.kubernetes: the pod spec is invalid: {exc}") from exc


def _md_code(text: str, lang: str = "") -> dg.MetadataValue:
    return dg.MetadataValue.md(f"```{lang}\n{text.rstrip()}\n```")


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
    base_model: BaseModelInfo,
    train_set: SplitFile,
    validation_set: SplitFile,
) -> dg.MaterializeResult:
    if train_set.fingerprint != validation_set.fingerprint:
        raise dg.Failure(
            "train_set and validation_set come from different dataset versions "
            f"({train_set.fingerprint[:12]} vs {validation_set.fingerprint[:12]}): rematerialise both"
        )
    spec = tunegate.base_model(context.partition_key)
    settings = tunegate.settings().training
    train_path, validation_path = Path(train_set.path), Path(validation_set.path)
    run_plan.assert_disjoint(train_path, validation_path)
    store, experiment_name = tunegate.tracking_store(), experiment(tunegate)
    store.experiment_id(experiment_name)  # created here, so a local store puts its artifacts under home
    plan = run_plan.plan_run(
        tunegate.layout,
        spec,
        settings,
        base_model_dir=Path(base_model.path),
        base_model_sha256=base_model.weights_sha256,
        train_path=train_path,
        validation_path=validation_path,
        data_fingerprint=train_set.fingerprint,
        cuda=_on_cuda(settings),
        tracking_keys=tracking.axolotl_keys(store, experiment_name, f"train @ {context.partition_key}"),
    )
    if settings.backend == "kubernetes":
        _check_pod(_pod_launch(settings, plan))
        axolotl_schema.validate_config(plan.config, k8s_pod.pod_capabilities(settings.kubernetes, settings.processes))
    else:
        axolotl_schema.validate_config(plan.config)
    path = run_plan.write_config(plan)
    text = path.read_text(encoding="utf-8")
    context.log.info(f"Axolotl config {plan.config_hash[:12]} -> {path}")
    return dg.MaterializeResult(
        value=plan,
        metadata={
            "config_hash": plan.config_hash,
            "run_key": plan.run_key,
            "run_dir": dg.MetadataValue.path(str(plan.run_dir)),
            "yaml_path": dg.MetadataValue.path(str(path)),
            "profile": run_plan.GPU_OVERLAY if plan.cuda else run_plan.CPU_OVERLAY,
            "launch": f"{settings.backend}: axolotl --launcher {plan.launcher}, {plan.processes} process(es)",
            "cpu_qlora_patch": plan.needs_cpu_qlora_patch,
            "data_fingerprint": plan.data_fingerprint,
            "mlflow_experiment": experiment_name,
            "mlflow_tracking_uri": store.uri,
            "yaml": _md_code(text, "yaml"),
        },
    )


def _training_tags(partition: str, plan: run_plan.RunPlan) -> dict[str, str]:
    """Tags of the training run (set by Axolotl's MLflow integration from ``MLFLOW_TAGS``)."""
    return tracking.tags(
        kind="training",
        partition=partition,
        data_fingerprint=plan.data_fingerprint,
        config_hash=plan.config_hash,
        run_key=plan.run_key,
        base_model_sha256=plan.base_model_sha256,
    )


def _training_run(tunegate: TunegateResource, plan: run_plan.RunPlan) -> str | None:
    """The MLflow run Axolotl logged this training to (None when tracking was off)."""
    if not plan.config.get("use_mlflow"):
        return None
    return tracking.find_run(
        tunegate.tracking_store(), plan.config["mlflow_experiment_name"], kind="training", run_key=plan.run_key
    )


def _qlora_adapter(
    context: dg.AssetExecutionContext,
    tunegate: TunegateResource,
    axolotl: AxolotlResource,
    pipes_subprocess_client: dg.PipesSubprocessClient,
    axolotl_config: run_plan.RunPlan,
    base_model: BaseModelInfo,
    baseline_scores: Ladder,
):
    reason = baseline_scores.skip_training  # a prompt-only rung already meets the target
    if reason:
        context.log.info(f"Not training {context.partition_key}: {reason}")
        context.log_event(
            dg.AssetObservation(
                asset_key=context.asset_key,
                partition=context.partition_key,
                metadata={"skipped": reason, "baseline_rung": baseline_scores.baseline_rung},
            )
        )
        return  # a generator that yields nothing: no materialization, downstream skipped

    plan = axolotl_config
    done = done_marker.completed_run(plan.run_dir)
    if done is not None:
        context.log.info(f"Cache hit: {plan.run_dir} already holds a trained, checked adapter")
        metrics = train_metrics.read_metrics(plan.run_dir)
        record = replace(done, cache_hit=True)
        yield dg.Output(record, metadata=to_dagster(record.metadata(metrics)))
        return

    if not plan.config_path.is_file():  # the run dir was cleaned since axolotl_config ran
        run_plan.write_config(plan)
    launch_path, checkpoint = launch.prepare_launch(plan)
    if checkpoint is not None:
        context.log.info(f"Resuming from {checkpoint}")
    settings = tunegate.settings().training
    on_k8s = settings.backend == "kubernetes"
    timeout_s = axolotl.timeout_s or settings.timeout_s
    extras = {
        "command": launch.launch_command(
            launch_path,
            settings.kubernetes.axolotl if on_k8s else axolotl.executable,
            launcher=plan.launcher,
            processes=plan.processes,
            cuda=plan.cuda,
        ),
        "run_dir": str(plan.run_dir),
        "cpu_qlora_patch": plan.needs_cpu_qlora_patch,
        "extra_env": {**axolotl.extra_env, **tracking.tags_env(_training_tags(context.partition_key, plan))},
        "timeout_s": timeout_s,
    }
    try:
        if on_k8s:  # the same launcher and extras, in a pod; Pipes messages come back in its logs
            invocation = axolotl.k8s_client().run(
                context=context,
                extras=extras,
                pod_wait_timeout=timeout_s + 600,
                **_pod_launch(settings, plan).run_kwargs(),
            )
        else:
            invocation = pipes_subprocess_client.run(
                context=context,
                command=[sys.executable, "-m", LAUNCHER_MODULE],
                cwd=str(REPO_ROOT),
                extras=extras,
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
        metrics = train_metrics.read_metrics(plan.run_dir)
        guard.check_learned(metrics, settings.min_eval_loss_drop)
    except (OSError, ValueError) as exc:
        raise dg.Failure(
            description=str(exc), metadata={"train_log": dg.MetadataValue.path(str(plan.log_path))}
        ) from exc
    except guard.NotLearnedError as exc:
        raise dg.Failure(
            description=str(exc),
            metadata={
                "loss_curve": dg.MetadataValue.md(train_metrics.loss_table_md(metrics)),
                "train_log": dg.MetadataValue.path(str(plan.log_path)),
                "metrics_file": dg.MetadataValue.path(str(plan.metrics_path)),
            },
        ) from exc
    record = adapter.adapter_record(plan, metrics, _training_run(tunegate, plan))
    done_marker.mark_done(plan.run_dir, record)
    yield dg.Output(record, metadata={**reported, **to_dagster(record.metadata(metrics))})


def build_qlora_adapter(pool: str) -> dg.AssetsDefinition:
    """``qlora_adapter`` in the Dagster pool ``pool`` (tunegate.yaml ``training.pool``; its limit,
    ``training.pool_limit``, is set on the instance by the sensor, the schedule and ``make``)."""
    return dg.asset(
        name="qlora_adapter",
        partitions_def=base_model_partitions,
        group_name=GROUP,
        kinds={"axolotl", "pytorch"},
        output_required=False,
        pool=pool,
        description=(
            "A QLoRA adapter trained by `axolotl train` through Dagster Pipes: a local subprocess, or a "
            "Kubernetes pod (training.backend), with training.launcher and training.processes. Runs in "
            "the training.pool concurrency pool (at most training.pool_limit at once). Skipped when "
            "the prompt-only baseline already meets the task target; reused when data, config and "
            "base weights are unchanged; fails unless eval loss fell by training.min_eval_loss_drop."
        ),
    )(_qlora_adapter)


# the schema's default pool, for tests; the code location builds its own from tunegate.yaml
qlora_adapter = build_qlora_adapter(TrainingSettings().pool)


def build_assets(project: Project) -> list[dg.AssetsDefinition]:
    """The training stage of the code location, in the configured pool."""
    return [axolotl_config, build_qlora_adapter(project.settings.training.pool)]
