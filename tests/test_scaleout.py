"""Scale-out on existing engines: the Dagster instance on a real PostgreSQL server, the
training concurrency pool on a real instance, Axolotl's launchers with N processes, the
Kubernetes pod the training step submits through dagster-k8s, and the GPU profile against
Axolotl's schema. Multi-process training for real is in ``test_data_parallel_training.py``."""

from __future__ import annotations

import base64
import json
import threading
import time
import zlib
from pathlib import Path

import dagster as dg
import kubernetes
import pytest
import yaml

from assets import models, training
from pipelines.config.base import ConfigError
from pipelines.config.settings import load_settings
from pipelines.config.training import KubernetesSettings, TrainingSettings
from pipelines.orchestration.automation import base_model_registry_sensor
from pipelines.orchestration.resources import apply_pool_limit, persistent_instance
from pipelines.training import axolotl_schema, k8s_pod, launch, run_plan
from tests import pg_server
from tests.doubles import (
    FIXTURES,
    PARTITION,
    baseline_double,
    train_set_double,
    training_resources,
    training_stage_assets,
    validation_set_double,
)

POOL = "accelerator"


@pytest.fixture(scope="module")
def pg_url():
    reason = pg_server.why_unavailable()
    if reason:
        pytest.skip(reason)
    with pg_server.postgres_server() as url:
        yield url


def _settings(tmp_path: Path, training_cfg: dict) -> Path:
    path = tmp_path / "tunegate.yaml"
    path.write_text(yaml.safe_dump({"training": training_cfg}))
    return path


# --------------------------------------------------------------------------- 1. PostgreSQL
def test_instance_on_postgres_runs_a_partition_and_the_sensor(tmp_path, monkeypatch, pg_url, tiny_registry):
    """DAGSTER_PG_URL -> dagster.yaml with dagster-postgres storage -> a real server holds the
    sensor's partitions and run requests, a partitioned materialisation and the pool limit."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("DAGSTER_PG_URL", pg_url)
    settings = _settings(tmp_path, {"pool_limit": 2})
    monkeypatch.setenv("TUNEGATE_SETTINGS", str(settings))
    resources = training_resources(tmp_path / "home", tiny_registry, settings)

    with persistent_instance(load_settings(settings).training) as instance:
        dagster_yaml = (tmp_path / "dagster_home" / "dagster.yaml").read_text()
        assert "env: DAGSTER_PG_URL" in dagster_yaml and pg_url not in dagster_yaml  # no secret in the file
        from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert instance.event_log_storage.get_concurrency_info(POOL).slot_count == 2  # from tunegate.yaml

        tick = base_model_registry_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        (request,) = tick.run_requests
        assert request.partition_key == PARTITION
        for add in tick.dynamic_partitions_requests:
            instance.add_dynamic_partitions(add.partitions_def_name, list(add.partition_keys))
        assert instance.get_dynamic_partitions("base_model") == [PARTITION]

        result = dg.materialize(
            [models.base_model],
            instance=instance,
            resources=resources,
            partition_key=request.partition_key,
            tags=request.tags,
        )
        assert result.success
        (record,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("base_model"), asset_partitions=[PARTITION]), limit=5
        ).records
        assert record.run_id == result.run_id and record.asset_materialization.metadata["parameters"].value > 0
        assert instance.get_run_by_id(result.run_id).tags["tunegate/trigger"] == "new-base-model"

        again = base_model_registry_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert isinstance(again, dg.SkipReason) and "no new base model" in again.skip_message

    # a second process (fresh instance object from the same dagster.yaml) sees the same history
    with dg.DagsterInstance.get() as reopened:
        assert reopened.get_run_by_id(result.run_id).is_success


def test_dagster_yaml_is_sqlite_by_default_and_a_users_file_is_kept(tmp_path, monkeypatch):
    from pipelines.orchestration.resources import ensure_dagster_home

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    text = (ensure_dagster_home() / "dagster.yaml").read_text()
    assert "postgres" not in text and "enabled: false" in text
    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql://u@127.0.0.1:1/db")
    with pytest.raises(ConfigError, match="use postgresql\\+psycopg2://"):
        ensure_dagster_home()
    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql+psycopg2://u@127.0.0.1:1/db")
    assert "postgres_url" in (ensure_dagster_home() / "dagster.yaml").read_text()  # ours: follows the variable

    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: true\n")  # a user's own file
    with pytest.raises(ConfigError, match="DAGSTER_PG_URL is set but this dagster.yaml"):
        ensure_dagster_home()
    monkeypatch.delenv("DAGSTER_PG_URL")
    ensure_dagster_home()
    assert (tmp_path / "dagster.yaml").read_text() == "telemetry:\n  enabled: true\n"


# --------------------------------------------------------------------------- 2. the training pool
def test_qlora_adapter_is_in_the_pool_from_tunegate_yaml():
    assert training.qlora_adapter.op.pool == load_settings(Path("tunegate.yaml")).training.pool == POOL
    others = [a for a in (models.base_model, training.axolotl_config)]
    assert all(a.op.pool is None for a in others)  # only the accelerator-bound step queues


def _step_events(instance, run_id: str, event_type) -> set[str]:
    return {e.step_key for e in instance.all_logs(run_id, of_type=event_type)}


def _instances(pg_url_or_none):
    if pg_url_or_none is None:
        return dg.instance_for_test()
    return dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": pg_url_or_none}}})


@pytest.fixture(params=["sqlite", "postgres"])
def pool_instance(request):
    url = None
    if request.param == "postgres":
        reason = pg_server.why_unavailable()
        if reason:
            pytest.skip(reason)
        url = request.getfixturevalue("pg_url")
    with _instances(url) as instance:
        yield instance


def test_training_waits_for_a_pool_slot_while_data_and_evaluation_run(tmp_path, tiny_registry, pool_instance):
    """A first base model's training holds the only slot (pool_limit 1). A second run starts:
    its data, base-model, config and evaluation steps finish, its training step waits, queued,
    and runs as soon as the slot is freed."""
    instance = pool_instance
    settings = _settings(tmp_path, {"pool_limit": 1})
    assert apply_pool_limit(instance, TrainingSettings(pool_limit=1)) is True
    assert apply_pool_limit(instance, TrainingSettings(pool_limit=1)) is False  # already set: untouched
    instance.add_dynamic_partitions("base_model", [PARTITION])
    storage = instance.event_log_storage
    held = storage.claim_concurrency_slot(POOL, "first-base-model-run", "qlora_adapter")
    assert held.is_claimed

    resources = training_resources(tmp_path / "home", tiny_registry, settings)
    assets = training_stage_assets(baseline_double(target=0.5, pass_rate=0.8))
    outcome: dict = {}
    worker = threading.Thread(
        target=lambda: outcome.setdefault(
            "result", dg.materialize(assets, instance=instance, resources=resources, partition_key=PARTITION)
        ),
        daemon=True,
    )
    worker.start()

    upstream = {"train_set", "validation_set", "baseline_scores", "base_model", "axolotl_config"}
    deadline = time.monotonic() + 240
    run_id = None
    while time.monotonic() < deadline:
        runs = [r for r in instance.get_runs() if r.run_id != "first-base-model-run"]
        if runs:
            run_id = runs[0].run_id
            if upstream <= _step_events(instance, run_id, dg.DagsterEventType.STEP_SUCCESS):
                break
        time.sleep(0.5)
    else:
        pytest.fail("the upstream steps did not all finish while training was queued")
    time.sleep(3)  # the executor re-checks pending claims; training must still not have started
    assert "qlora_adapter" not in _step_events(instance, run_id, dg.DagsterEventType.STEP_START)
    info = storage.get_concurrency_info(POOL)
    assert info.slot_count == 1 and info.pending_step_count == 1
    assert worker.is_alive()

    storage.free_concurrency_slots_for_run("first-base-model-run")
    worker.join(timeout=120)
    assert not worker.is_alive() and outcome["result"].success
    assert "qlora_adapter" in _step_events(instance, run_id, dg.DagsterEventType.STEP_SUCCESS)
    assert storage.get_concurrency_info(POOL).active_slot_count == 0  # released after the step


# --------------------------------------------------------------------------- 3. launchers
def test_launch_commands_follow_axolotl_and_the_launchers(tmp_path):
    yaml_path = tmp_path / "axolotl.yaml"
    base = [launch.axolotl_executable(), "train", str(yaml_path), "--launcher"]
    assert launch.launch_command(yaml_path) == base + ["python"]
    assert launch.launch_command(yaml_path, launcher="torchrun", processes=2) == base + [
        "torchrun",
        "--",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    assert launch.launch_command(yaml_path, launcher="accelerate", processes=4, cuda=True) == base + [
        "accelerate",
        "--",
        "--num_processes",
        "4",
        "--num_machines",
        "1",
        "--dynamo_backend",
        "no",
        "--multi_gpu",
    ]
    assert launch.launch_command(yaml_path, launcher="accelerate", processes=1) == base + [
        "accelerate",
        "--",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--dynamo_backend",
        "no",
        "--cpu",
    ]
    with pytest.raises(run_plan.AxolotlConfigError, match="accelerate's multi-CPU launch goes through mpirun"):
        launch.launch_command(yaml_path, launcher="accelerate", processes=2, cuda=False)


def test_launch_settings_are_validated_early(tmp_path):
    with pytest.raises(ConfigError, match="`processes: 2` needs `launcher: torchrun`"):
        load_settings(_settings(tmp_path, {"processes": 2}))
    with pytest.raises(ConfigError, match="launcher"):
        load_settings(_settings(tmp_path, {"launcher": "deepspeed"}))
    with pytest.raises(ConfigError, match="needs `kubernetes.image`"):
        load_settings(_settings(tmp_path, {"backend": "kubernetes"}))
    with pytest.raises(ConfigError, match="pool_limit"):
        load_settings(_settings(tmp_path, {"pool_limit": 0}))


def _plan(tmp_path: Path, model_dir: Path, settings: TrainingSettings, *, cuda: bool) -> run_plan.RunPlan:
    return run_plan.plan_run(
        _layout(tmp_path),
        _tiny_spec(model_dir),
        settings,
        base_model_dir=model_dir,
        base_model_sha256="0" * 64,
        train_path=FIXTURES / "chat_train.jsonl",
        validation_path=FIXTURES / "chat_eval.jsonl",
        data_fingerprint="f" * 64,
        cuda=cuda,
    )


def test_cpu_runs_with_several_processes_get_the_ddp_plugin_and_their_own_run_key(tmp_path, tiny_model_dir):
    one = _plan(tmp_path, tiny_model_dir, TrainingSettings(), cuda=False)
    two = _plan(tmp_path, tiny_model_dir, TrainingSettings(launcher="torchrun", processes=2), cuda=False)
    on_gpus = _plan(tmp_path, tiny_model_dir, TrainingSettings(launcher="torchrun", processes=2), cuda=True)
    assert run_plan.CPU_DDP_PLUGIN in two.config["plugins"] and run_plan.CPU_DDP_PLUGIN not in one.config["plugins"]
    assert run_plan.CPU_DDP_PLUGIN not in on_gpus.config["plugins"]  # GPUs need no help
    # one process keeps the hash earlier runs were keyed by; two train on twice the global batch
    assert one.config_hash == run_plan.config_hash(
        run_plan.training_config(_tiny_spec(tiny_model_dir), TrainingSettings(), cuda=False)
    )
    assert two.run_key != one.run_key and (two.launcher, two.processes) == ("torchrun", 2)


# --------------------------------------------------------------------------- 4. Kubernetes
class _RecordingCoreApi:
    """Test double of the Kubernetes API (no cluster here): keeps the pod and refuses it."""

    def __init__(self):
        self.created: list[tuple[str, kubernetes.client.V1Pod]] = []

    def create_namespaced_pod(self, namespace, body):
        self.created.append((namespace, body))
        raise RuntimeError("no Kubernetes cluster in tests: pod recorded")


K8S = {
    "image": "registry.example.com/tunegate:1.0",
    "namespace": "ml-training",
    "working_dir": "/app",
    "resources": {"requests": {"cpu": "8", "memory": "64Gi"}, "limits": {"memory": "64Gi"}},
    "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "service_account_name": "tunegate-trainer",
    "env": {"HF_HOME": "/cache/hf"},
    "pod_meta": {"annotations": {"team": "ml"}},
}


def _k8s_stage(tmp_path, tiny_model_dir, monkeypatch, k8s: dict):
    from dagster_k8s import PipesK8sClient
    from dagster_k8s.client import DagsterKubernetesClient

    mounts = [tmp_path, tiny_model_dir.parent, FIXTURES]
    k8s = {
        **k8s,
        "volumes": [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": f"claim-{i}"}} for i in range(3)],
        "volume_mounts": [{"name": f"v{i}", "mountPath": str(p)} for i, p in enumerate(mounts)],
    }
    settings = _settings(tmp_path, {"backend": "kubernetes", "launcher": "torchrun", "processes": 2, "kubernetes": k8s})
    registry = tmp_path / "base_models.yaml"
    from tests.tiny_model import tiny_registry_yaml

    registry.write_text(tiny_registry_yaml(tiny_model_dir))
    api = _RecordingCoreApi()
    client = DagsterKubernetesClient(
        batch_api=None, core_api=api, logger=lambda *_: None, sleeper=lambda *_: None, timer=time.time
    )
    monkeypatch.setattr(DagsterKubernetesClient, "production_client", staticmethod(lambda **_: client))
    monkeypatch.setattr(PipesK8sClient, "_load_k8s_config", lambda self: None)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("base_model", [PARTITION])
    return instance, training_resources(tmp_path / "home", registry, settings), api


def test_training_pod_is_built_by_pipes_k8s_client_and_valid(tmp_path, tiny_model_dir, monkeypatch):
    instance, resources, api = _k8s_stage(tmp_path, tiny_model_dir, monkeypatch, K8S)
    result = dg.materialize(
        training_stage_assets(baseline_double(target=0.9, pass_rate=0.1)),
        instance=instance,
        resources=resources,
        partition_key=PARTITION,
        raise_on_error=False,
    )
    assert not result.success  # no cluster: the pod was built and submitted to the test double
    ((namespace, pod),) = api.created
    assert namespace == "ml-training" and isinstance(pod, kubernetes.client.V1Pod)

    # what the API server would receive, parsed back with the kubernetes client's own models
    wire = kubernetes.client.ApiClient().sanitize_for_serialization(pod)
    json.dumps(wire)
    spec = wire["spec"]
    (container,) = spec["containers"]
    assert container["image"] == K8S["image"] and container["workingDir"] == "/app"
    assert container["command"] == ["python", "-m", "pipelines.orchestration.axolotl_launcher"]  # the local launcher
    assert container["resources"]["limits"] == {"memory": "64Gi", "nvidia.com/gpu": "2"}  # one GPU per process
    assert container["resources"]["requests"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"}
    assert spec["restartPolicy"] == "Never" and spec["serviceAccountName"] == "tunegate-trainer"
    assert spec["nodeSelector"] == K8S["node_selector"] and spec["tolerations"] == K8S["tolerations"]
    assert [v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]] == ["claim-0", "claim-1", "claim-2"]
    assert container["volumeMounts"][0] == {"mountPath": str(tmp_path), "name": "v0"}
    assert wire["metadata"]["annotations"] == {"team": "ml"}
    assert wire["metadata"]["labels"]["tunegate/step"] == "training"
    assert wire["metadata"]["labels"]["app.kubernetes.io/part-of"] == "tunegate"

    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["HF_HOME"] == "/cache/hf"
    pipes_context = json.loads(zlib.decompress(base64.b64decode(env["DAGSTER_PIPES_CONTEXT"])))["data"]
    assert pipes_context["partition_key"] == PARTITION and "DAGSTER_PIPES_MESSAGES" in env
    extras = pipes_context["extras"]
    config = result.output_for_node("axolotl_config")
    assert extras["command"] == [
        "axolotl",
        "train",
        str(config.config_path),
        "--launcher",
        "torchrun",
        "--",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    assert extras["run_dir"] == str(config.run_dir) and extras["cpu_qlora_patch"] is False
    generated = yaml.safe_load(config.config_path.read_text())
    assert generated["bf16"] is True and generated["sequence_len"] == 2048  # the pod has GPUs: gpu.yaml
    assert run_plan.CPU_DDP_PLUGIN not in generated["plugins"]
    pod_model = kubernetes.client.ApiClient()._ApiClient__deserialize(wire, "V1Pod")
    assert pod_model.spec.containers[0].resources.limits["nvidia.com/gpu"] == "2"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"tolerations": [{"key": "x", "operatr": "Exists"}]}, "operatr"),
        ({"pod_spec": {"containers": [{"name": "x"}]}}, "`containers` is built by tunegate"),
    ],
)
def test_a_bad_pod_spec_fails_the_config_step_naming_the_key(tmp_path, tiny_model_dir, monkeypatch, change, needle):
    instance, resources, api = _k8s_stage(tmp_path, tiny_model_dir, monkeypatch, {**K8S, **change})
    result = dg.materialize(
        [train_set_double, validation_set_double, models.base_model, training.axolotl_config],
        instance=instance,
        resources=resources,
        partition_key=PARTITION,
        raise_on_error=False,
    )
    assert not result.success and not api.created
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert needle in str(failure.event_specific_data.error)


def test_pod_paths_must_be_mounted():
    k8s = KubernetesSettings(image="i", volume_mounts=[{"name": "home", "mount_path": "/data/tunegate"}])
    k8s_pod.launch_paths_mounted(k8s, ["/data/tunegate/runs/m/k"])
    with pytest.raises(k8s_pod.PodSpecError, match=r"must see \['/models/m'\]"):
        k8s_pod.launch_paths_mounted(k8s, ["/data/tunegate/runs/m/k", "/models/m"])


# --------------------------------------------------------------------------- 5. the GPU profile
def test_gpu_profile_is_the_seeds_8b_qlora_and_passes_axolotls_schema(tmp_path, tiny_model_dir):
    cfg = _plan(tmp_path, tiny_model_dir, TrainingSettings(), cuda=True).config
    assert (cfg["adapter"], cfg["load_in_4bit"], cfg["bf16"]) == ("qlora", True, True)
    assert (cfg["lora_r"], cfg["lora_alpha"], cfg["sequence_len"]) == (16, 32, 2048)
    assert (cfg["micro_batch_size"], cfg["gradient_accumulation_steps"]) == (2, 4)
    assert cfg["lora_target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    # flash attention where the flash_attn package is there, torch SDPA otherwise
    assert cfg["flash_attention"] is run_plan.flash_attention_available()
    assert cfg.get("sdp_attention", False) is not run_plan.flash_attention_available()
    assert cfg["sample_packing"] is run_plan.flash_attention_available()  # packing needs flash attention
    gpu = k8s_pod.pod_capabilities(KubernetesSettings(image="i"), 1)
    axolotl_schema.validate_config(cfg, gpu)  # Axolotl's own schema, as on a bf16-capable GPU
    with pytest.raises(run_plan.AxolotlConfigError, match="micro_batch_size"):
        axolotl_schema.validate_config({**cfg, "micro_batch_size": "two"}, gpu)  # the schema really judges it
    with pytest.raises(run_plan.AxolotlConfigError, match="sequence_lenn"):
        axolotl_schema.validate_config({**cfg, "sequence_lenn": 1}, gpu)


def _tiny_spec(model_dir: Path):
    from pipelines.config.base_models import BaseModelSpec

    return BaseModelSpec(
        name=PARTITION,
        source=str(model_dir),
        chat_template="tokenizer_default",
        eot_tokens=["<|im_end|>"],
        lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    )


def _layout(tmp_path: Path):
    from pipelines.config.paths import Layout

    return Layout(tmp_path / "home")
