"""Re-tunes: the pure "what changed" rules, the registry sensor and the schedule's skip."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipelines.config.base_models import load_base_models
from pipelines.config.paths import Layout, default_settings_file
from pipelines.config.settings import load_settings
from pipelines.orchestration.automation import base_model_registry_sensor, tune_job, weekly_retune_schedule
from pipelines.orchestration.resources import TunegateResource
from pipelines.training import retune

CFG = "c" * 64
DATA = "d" * 64


# --------------------------------------------------------------------------- pure rules
def test_new_and_removed_partitions():
    assert retune.new_partitions(["a", "b", "c"], {"b"}) == ["a", "c"]
    assert retune.new_partitions(["a"], ["a"]) == []
    assert retune.removed_partitions(["a"], {"a", "z", "y"}) == ["y", "z"]


def test_run_key_is_stable_and_tracks_inputs():
    inputs = retune.Inputs(CFG, DATA)
    assert retune.run_key("m", inputs) == retune.run_key("m", retune.Inputs(CFG, DATA))
    assert retune.run_key("m", inputs).startswith("m:")
    assert retune.run_key("m", inputs) != retune.run_key("m", retune.Inputs(CFG, "e" * 64))
    assert retune.run_key("m", inputs) != retune.run_key("m", retune.Inputs("x" * 64, DATA))
    assert retune.run_key("m", inputs) != retune.run_key("n", inputs)


def test_nothing_changed():
    recorded = retune.Recorded(config_hash=CFG, data_fingerprint=DATA, data_built_at=2000.0)
    assert retune.what_changed(retune.Inputs(CFG, DATA), recorded, sources_modified_at=1000.0) == []


def test_never_tuned():
    (reason,) = retune.what_changed(retune.Inputs(CFG, DATA), retune.Recorded(None, None, None))
    assert "never tuned" in reason


@pytest.mark.parametrize(
    ("current", "recorded", "src_mtime", "needle"),
    [
        (
            retune.Inputs("n" * 64, DATA),
            retune.Recorded(CFG, DATA, 2000.0),
            None,
            "config hash changed: cccccccccccc -> nnnnnnnnnnnn",
        ),
        (retune.Inputs(CFG, "n" * 64), retune.Recorded(CFG, DATA, 2000.0), None, "data fingerprint changed"),
        (retune.Inputs(CFG, None), retune.Recorded(CFG, DATA, 2000.0), None, "train/eval files are missing"),
        (retune.Inputs(CFG, DATA), retune.Recorded(CFG, DATA, 2000.0), 3000.0, "modified (1970-01-01T00:50:00+00:00)"),
        (retune.Inputs(CFG, DATA), retune.Recorded(CFG, DATA, None), 3000.0, "after the data was last built"),
    ],
)
def test_each_change_is_named(current, recorded, src_mtime, needle):
    (reason,) = retune.what_changed(current, recorded, src_mtime, None)
    assert needle in reason


def test_adapter_less_partition_compares_config_only():
    # baseline met the target last time: no adapter, so no recorded data fingerprint
    recorded = retune.Recorded(config_hash=CFG, data_fingerprint=None, data_built_at=2000.0)
    assert retune.what_changed(retune.Inputs(CFG, DATA), recorded, 1000.0) == []


def test_latest_source_mtime(tmp_path):
    sources_file = tmp_path / "sources.yaml"
    data = tmp_path / "a.jsonl"
    folder = tmp_path / "hf"
    folder.mkdir()
    inner = folder / "data.arrow"
    for i, path in enumerate((sources_file, data, inner)):
        path.write_text("x")
        os.utime(path, (1000 + i, 1000 + i))
    sources_file.write_text(
        yaml.safe_dump(
            {
                "sources": [
                    {"name": "a", "kind": "jsonl", "path": str(data), "fields": {"messages": "messages"}},
                    {"name": "b", "kind": "hf_disk", "path": str(folder), "fields": {"messages": "messages"}},
                ]
            }
        )
    )
    os.utime(sources_file, (500, 500))
    from pipelines.config.sources import load_sources

    assert retune.latest_source_mtime(load_sources(sources_file), sources_file) == (1002.0, inner)


# --------------------------------------------------------------------------- Dagster shells
def _registry(path: Path, names: list[str]) -> Path:
    path.write_text(yaml.safe_dump({"base_models": [{"name": n, "source": f"/models/{n}"} for n in names]}))
    return path


@pytest.fixture
def env(tmp_path):
    """A temp instance and a resource pointing at temp registry, settings and outputs."""
    registry = _registry(tmp_path / "base_models.yaml", ["model-a"])
    settings = tmp_path / "tunegate.yaml"
    settings.write_text("{}\n")
    resource = TunegateResource(
        home=str(tmp_path / "out"),
        base_models_file=str(registry),
        settings_file=str(settings),
        sources_file=str(tmp_path / "sources.yaml"),
    )
    with dg.instance_for_test() as instance:
        yield instance, resource, registry, settings


def _tick(instance, resource):
    return base_model_registry_sensor(dg.build_sensor_context(instance=instance, resources={"tunegate": resource}))


def _apply(instance, result: dg.SensorResult) -> None:
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def test_sensor_new_known_and_removed_models(env):
    instance, resource, registry, _ = env
    first = _tick(instance, resource)
    assert isinstance(first, dg.SensorResult)
    (request,) = first.run_requests
    assert request.partition_key == "model-a"
    spec = resource.base_model("model-a")
    expected = retune.run_key("model-a", retune.current_inputs(resource.layout, spec, resource.settings()))
    assert request.run_key == expected
    assert [list(r.partition_keys) for r in first.dynamic_partitions_requests] == [["model-a"]]
    _apply(instance, first)

    known = _tick(instance, resource)  # nothing new: no run
    assert isinstance(known, dg.SkipReason)
    assert "no new base model" in known.skip_message

    _registry(registry, ["model-a", "model-b"])
    second = _tick(instance, resource)
    assert [r.partition_key for r in second.run_requests] == ["model-b"]
    _apply(instance, second)

    _registry(registry, ["model-b"])  # model-a removed from the registry
    removed = _tick(instance, resource)
    assert isinstance(removed, dg.SkipReason)
    assert set(instance.get_dynamic_partitions("base_model")) == {"model-a", "model-b"}  # history kept


def _record(instance, key: str, partition: str | None, **metadata) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=partition, metadata=metadata))


def _write_data(layout: Layout) -> str:
    layout.data_dir.mkdir(parents=True)
    layout.train_file.write_text('{"id": "1"}\n')
    layout.eval_file.write_text('{"id": "2"}\n')
    layout.validation_file.write_text('{"id": "3"}\n')
    return retune.current_data_fingerprint(layout)


def _schedule(instance, resource):
    context = dg.build_schedule_context(
        instance=instance,
        resources={"tunegate": resource},
        scheduled_execution_time=datetime(2026, 11, 30, 3, 0, tzinfo=UTC),
    )
    return weekly_retune_schedule(context)


def test_schedule_skips_when_nothing_changed_and_runs_when_config_changes(env, tmp_path):
    instance, resource, _, settings_file = env
    source = tmp_path / "tickets.jsonl"
    source.write_text("{}\n")
    Path(resource.sources_file).write_text(
        yaml.safe_dump(
            {"sources": [{"name": "t", "kind": "jsonl", "path": str(source), "fields": {"messages": "messages"}}]}
        )
    )
    past = time.time() - 3600
    for path in (source, Path(resource.sources_file)):
        os.utime(path, (past, past))
    instance.add_dynamic_partitions("base_model", ["model-a"])
    spec = load_base_models(Path(resource.base_models_file))[0]
    config_hash = retune.current_config_hash(spec, load_settings(settings_file))
    fingerprint = _write_data(resource.layout)

    first = _schedule(instance, resource)  # never tuned yet
    assert [r.partition_key for r in first] == ["model-a"]
    assert "never tuned" in first[0].tags["tunegate/changes"]

    _record(instance, "train_set", None, fingerprint=fingerprint)
    _record(instance, "axolotl_config", "model-a", config_hash=config_hash)
    _record(instance, "qlora_adapter", "model-a", data_fingerprint=fingerprint, config_hash=config_hash)
    skipped = _schedule(instance, resource)
    assert isinstance(skipped, dg.SkipReason)
    assert "nothing changed for ['model-a']" in skipped.skip_message

    settings_file.write_text(yaml.safe_dump({"training": {"overrides": {"num_epochs": 2}}}))
    changed = _schedule(instance, resource)
    (request,) = changed
    assert request.partition_key == "model-a"
    assert "config hash changed" in request.tags["tunegate/changes"]
    assert request.run_key.endswith(":20261130T0300")

    settings_file.write_text("{}\n")
    os.utime(source, None)  # a source edited after the data was built
    (request,) = _schedule(instance, resource)
    assert "tickets.jsonl was modified" in request.tags["tunegate/changes"]


def test_job_sensor_and_schedule_are_in_the_definitions():
    from pipelines.orchestration.definitions import defs

    with dg.instance_for_test():  # resolving Definitions reads defs state from the current instance
        assert defs().resolve_job_def("tune_job").name == tune_job.name
        assert defs().resolve_sensor_def("base_model_registry_sensor").job_name == "tune_job"
        schedule = defs().resolve_schedule_def("weekly_retune_schedule")
    assert schedule.cron_schedule == load_settings(default_settings_file()).schedule.cron


def test_latest_source_mtime_sees_every_file_a_glob_source_matches(tmp_path):
    """A new export dropped into a glob source's folder must count as a data change."""
    exports = tmp_path / "exports"
    exports.mkdir()
    old, new = exports / "2026-01.jsonl", exports / "2026-02.jsonl"
    for stamp, path in ((1000, old), (2000, new)):
        path.write_text("x")
        os.utime(path, (stamp, stamp))
    sources_file = tmp_path / "sources.yaml"
    sources_file.write_text(
        yaml.safe_dump(
            {
                "sources": [
                    {"name": "a", "kind": "jsonl", "path": "exports/*.jsonl", "fields": {"messages": "messages"}},
                ]
            }
        )
    )
    os.utime(sources_file, (500, 500))
    from pipelines.config.sources import load_sources

    assert retune.latest_source_mtime(load_sources(sources_file), sources_file) == (2000.0, new)
