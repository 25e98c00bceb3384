"""MLflow tracking and the champion registry (pipelines/common/tracking.py, pipelines/gate/registry.py)
against both stores: the embedded SQLite store under the output root, and a real
``mlflow server`` process on a free loopback port. A promotion registers a version and
moves the ``champion`` alias, or leaves the champion as it was (the server going away
between the two included); concurrent promotions are all registered; rollback moves the
alias; ``promoted.json`` is a derived, read-only export.

The "model folders" here are small folders of bytes: the registry hashes and copies files,
it never loads them (the assets' test, tests/test_promotion.py, uses the tiny model)."""

from __future__ import annotations

import json
import shutil
import stat
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from pipelines.common import tracking
from pipelines.config.base import ConfigError
from pipelines.config.settings import load_settings
from pipelines.gate import registry
from pipelines.gate.registry import RegistryEntry
from pipelines.models import artefacts
from tests.cards import BASE_MODEL, FP, WIN, candidate_entry, card, logged_win, model_folder, promote_candidate


@pytest.fixture(params=["local", "server"])
def store(request, local_store) -> tracking.Store:
    if request.param == "local":
        return local_store
    return tracking.Store(request.getfixturevalue("mlflow_server").uri)


@pytest.fixture
def task() -> str:
    """A task (registered model) of this test alone: the server is shared by the session."""
    return f"triage-{uuid.uuid4().hex[:8]}"


def _versions(store, task) -> dict[int, object]:
    return {int(v.version): v for v in store.client().search_model_versions(f"name='{task}'")}


# --------------------------------------------------------------------------- the store
def test_the_store_is_the_resource_then_the_environment_then_tunegate_yaml_then_local(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    local = tracking.resolve("", "", tmp_path / "home")
    assert local.uri == f"sqlite:///{(tmp_path / 'home' / 'mlflow' / 'mlflow.db').resolve()}"
    assert local.is_local and local.artifact_root == (tmp_path / "home" / "mlflow" / "artifacts").resolve()
    assert tracking.resolve("", "http://yaml:5000", tmp_path).uri == "http://yaml:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert tracking.resolve("", "http://yaml:5000", tmp_path).uri == "http://env:5000"
    server = tracking.resolve("http://resource:5000", "http://yaml:5000", tmp_path)
    assert server.uri == "http://resource:5000" and not server.is_local  # a server keeps its own artifacts


def test_tunegate_yaml_tracking_uri_is_validated_early(tmp_path):
    path = tmp_path / "tunegate.yaml"
    path.write_text(yaml.safe_dump({"mlflow": {"tracking_uri": "localhost:5000"}}))
    with pytest.raises(ConfigError, match=r"tunegate\.yaml.*mlflow.*tracking_uri.*not a tracking URI"):
        load_settings(path)
    path.write_text(yaml.safe_dump({"mlflow": {"tracking_uri": "http://mlflow.internal:5000"}}))
    assert load_settings(path).mlflow.tracking_uri == "http://mlflow.internal:5000"


def test_a_fresh_local_store_needs_no_set_up(tmp_path, monkeypatch):
    """No seeded database: the first use creates and migrates it under the output root."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = tracking.resolve("", "", tmp_path / "home")
    experiment_id = store.experiment_id("tunegate-fresh")
    assert (tmp_path / "home" / "mlflow" / "mlflow.db").is_file()
    found = store.client().get_experiment(experiment_id)
    assert found.artifact_location == (store.artifact_root / "tunegate-fresh").as_uri()
    assert store.experiment_id("tunegate-fresh") == experiment_id  # created once


# --------------------------------------------------------------------------- runs
def test_score_cards_and_decisions_are_runs_side_by_side(local_store, task, tmp_path):
    experiment = tracking.experiment_name(task)
    cards = {
        "zero_shot": replace(card("zero_shot", [True, False, False, False]), artefact={"id": "base-id"}),
        "static_few_shot": replace(card("static_few_shot", [True, True, False, False]), artefact={"id": "base-id"}),
    }
    ids = tracking.log_scores(local_store, experiment, "ladder", "tiny-llama", cards, tracking.tags(suite="task"))
    record = logged_win(local_store, task, "tiny-llama", model_folder(tmp_path / "m", b"weights"))
    client = local_store.client()
    runs = {r.info.run_id: r for r in client.search_runs([client.get_experiment_by_name(experiment).experiment_id])}
    assert set(runs) == {*ids.values(), record.mlflow_run_id}

    zero = runs[ids["zero_shot"]]
    assert zero.info.run_name == "ladder/zero_shot @ tiny-llama" and zero.info.status == "FINISHED"
    assert zero.data.metrics["pass_rate"] == 0.25 and zero.data.metrics["n"] == 4
    assert runs[ids["static_few_shot"]].data.metrics["pass_rate"] == 0.5
    assert zero.data.tags["tunegate.kind"] == "scoring" and zero.data.tags["tunegate.partition"] == "tiny-llama"
    assert zero.data.tags["tunegate.suite_fingerprint"] == FP and zero.data.tags["tunegate.suite"] == "task"

    gate = runs[record.mlflow_run_id]
    m = gate.data.metrics
    assert m["promote"] == 1.0 and m["p_value"] == pytest.approx(record.decision.p_value)
    assert m["margin"] == pytest.approx(record.decision.margin) and m["tuned_pass_rate"] == pytest.approx(0.85)
    vb = record.decision.versus_baseline
    assert (
        (m["vs_baseline.both"], m["vs_baseline.only_tuned"], m["vs_baseline.only_baseline"], m["vs_baseline.neither"])
        == (vb.both, vb.only_first, vb.only_second, vb.neither)
        == WIN
    )
    assert m["general_drop_upper"] == pytest.approx(record.decision.forgetting.drop_upper)
    assert m["check.baseline_significance.passed"] == 1.0
    assert gate.data.params["threshold.baseline_margin"] == "0.05"
    assert gate.data.tags["tunegate.promote"] == "True" and gate.data.tags["tunegate.data_fingerprint"] == "data-fp"
    assert gate.data.tags["mlflow.note.content"].startswith("PROMOTE: ")
    with_report = Path(client.download_artifacts(gate.info.run_id, "report.md", str(tmp_path / "dl")))
    assert with_report.read_text() == record.report_md and "**PROMOTE**" in record.report_md
    logged = json.loads(
        Path(client.download_artifacts(gate.info.run_id, "decision.json", str(tmp_path / "dl2"))).read_text()
    )
    assert logged["p_value"] == pytest.approx(record.decision.p_value)


# --------------------------------------------------------------------------- the registry
def test_an_entry_round_trips_and_a_damaged_one_is_named(tmp_path):
    from pipelines.common.typed_records import RecordError
    from tests.cards import champion_entry

    entry = champion_entry("model-a")
    doc = json.loads(json.dumps(entry.to_dict()))
    assert RegistryEntry.from_dict(doc) == entry
    assert "version" not in replace(entry, version=None, source=None).to_dict()  # entry.json before registering
    with pytest.raises(RecordError, match=r"RegistryEntry: missing \['scores'\]"):
        RegistryEntry.from_dict({k: v for k, v in doc.items() if k != "scores"})
    with pytest.raises(RecordError, match=r"RegistryEntry.scores: Scores.tuned: CardSummary: missing \['pass_rate'\]"):
        RegistryEntry.from_dict({**doc, "scores": {**doc["scores"], "tuned": {"contender": "t", "n": 1, "passed": 1}}})
    with pytest.raises(RecordError, match=r"RegistryEntry.p_value: 'low' is not"):
        RegistryEntry.from_dict({**doc, "p_value": "low"})


def test_promotion_registers_a_version_and_moves_the_champion(store, task, tmp_path):
    assert registry.champion(store, task) is None
    a = promote_candidate(store, task, tmp_path, "model-a")
    assert a.version == 1
    champ = registry.champion(store, task)
    assert champ.partition == "model-a" and champ.version == 1 and champ.artefact == a.artefact
    assert champ.decision_run_id == a.decision_run_id and champ.base_model["name"] == "tiny"
    assert champ == a  # entry.json read back is the entry promoted

    version = _versions(store, task)[1]
    assert version.run_id == a.decision_run_id  # the decision is the version's source run
    t = version.tags
    assert t["tunegate.base_model"] == "tiny" and t["tunegate.data_fingerprint"] == "data-fp"
    assert t["tunegate.eval_fingerprint"] == FP and t["tunegate.artefact_id"] == a.artefact["id"]
    assert (
        float(t["tunegate.tuned_pass_rate"]) == pytest.approx(0.85) and t["tunegate.decision_run"] == a.decision_run_id
    )
    client = store.client()
    files = {f.path for f in client.list_artifacts(version.run_id, "promoted")}
    assert files == {"promoted/model", "promoted/adapter", "promoted/base_model.json", "promoted/entry.json"}
    assert {f.path for f in client.list_artifacts(version.run_id, "promoted/model")} == {
        "promoted/model/model.safetensors",
        "promoted/model/config.json",
    }

    b = promote_candidate(store, task, tmp_path, "model-b")
    assert b.version == 2 and registry.champion(store, task).partition == "model-b"
    again = registry.promote(store, replace(a, promoted_at="later"), BASE_MODEL)  # the same artefact: its version
    assert again.version == 1 and set(_versions(store, task)) == {1, 2}
    assert registry.champion(store, task).partition == "model-a"

    rolled = registry.set_champion(store, task, 2)  # the rollback: move the alias
    assert rolled.partition == "model-b" and registry.champion(store, task).version == 2
    with pytest.raises(Exception, match="3"):
        registry.set_champion(store, task, 3)
    assert registry.champion(store, task).version == 2


def test_the_json_file_is_a_read_only_export(local_store, task, tmp_path):
    promote_candidate(local_store, task, tmp_path, "model-a")
    promote_candidate(local_store, task, tmp_path, "model-b")
    registry.set_champion(local_store, task, 1)
    path = registry.export(local_store, tmp_path / "registry" / "promoted.json")
    doc = json.loads(path.read_text())
    assert doc["champions"][task]["partition"] == "model-a" and doc["champions"][task]["version"] == 1
    assert [v["version"] for v in doc["versions"][task]] == [1, 2]
    assert doc["versions"][task][0]["aliases"] == ["champion"] and doc["versions"][task][1]["aliases"] == []
    assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    registry.set_champion(local_store, task, 2)
    assert json.loads(registry.export(local_store, path).read_text())["champions"][task]["version"] == 2


def test_a_champion_whose_build_folder_is_gone_comes_from_the_registry(store, task, tmp_path):
    a = promote_candidate(store, task, tmp_path, "model-a")
    shutil.rmtree(a.model_dir)
    entry = registry.champion(store, task)
    cache = tmp_path / "cache"
    got = registry.champion_model_dir(store, entry, cache)
    assert got.parent == cache and (got / "model.safetensors").read_bytes() == b"model-a" * 100
    artefacts.verify(entry.artefact, got)
    assert registry.champion_model_dir(store, entry, cache) == got  # downloaded once


def test_a_champion_gone_from_both_places_is_named(local_store, task, tmp_path):
    a = promote_candidate(local_store, task, tmp_path, "model-a")
    entry = registry.champion(local_store, task)
    shutil.rmtree(a.model_dir)
    shutil.rmtree(local_store.artifact_root)
    with pytest.raises(FileNotFoundError, match=r"model-a.*could not be downloaded"):
        registry.champion_model_dir(local_store, entry, tmp_path / "cache")


def test_two_partitions_promoting_at_once_are_both_registered(store, task, tmp_path):
    candidates = [candidate_entry(store, task, tmp_path, p) for p in ("model-a", "model-b")]
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(lambda c: registry.promote(store, c, BASE_MODEL), candidates))
    versions = _versions(store, task)
    assert sorted(versions) == [1, 2] == sorted(d.version for d in done)
    assert {v.tags["tunegate.partition"] for v in versions.values()} == {"model-a", "model-b"}
    assert registry.champion(store, task).partition in {"model-a", "model-b"}


# --------------------------------------------------------------------------- nothing half-written
def test_a_failed_alias_move_removes_the_new_version_and_keeps_the_champion(local_store, task, tmp_path, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    promote_candidate(local_store, task, tmp_path, "model-a")

    def refuse(self, name, alias, version):
        raise MlflowException("permission denied on alias")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", refuse)
    with pytest.raises(registry.RegistryError, match=r"version 2 was removed, the champion is unchanged \(version 1\)"):
        promote_candidate(local_store, task, tmp_path, "model-b")
    monkeypatch.undo()
    assert set(_versions(local_store, task)) == {1}
    assert registry.champion(local_store, task).partition == "model-a"


def test_the_server_going_away_between_register_and_alias_leaves_the_champion(
    mlflow_server, task, tmp_path, monkeypatch
):
    """The server is stopped after the version is registered and before the alias moves,
    then started again on the same port and database (it is running again afterwards)."""
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast while the server is down
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    store = tracking.Store(mlflow_server.uri)
    promote_candidate(store, task, tmp_path, "model-a")
    candidate = candidate_entry(store, task, tmp_path, "model-b")
    real_move = MlflowClient.set_registered_model_alias

    def server_dies_first(self, name, alias, version):
        mlflow_server.stop()
        return real_move(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", server_dies_first)
    try:
        with pytest.raises(registry.RegistryError, match=r"`champion` could not be moved.*the champion is unchanged"):
            registry.promote(store, candidate, BASE_MODEL)
        assert not mlflow_server.running
    finally:
        monkeypatch.setattr(MlflowClient, "set_registered_model_alias", real_move)
        mlflow_server.start()
    assert registry.champion(store, task).partition == "model-a"  # as it was
    assert store.client().get_model_version(task, "2").aliases == []  # registered, not champion
    retried = registry.promote(store, candidate, BASE_MODEL)  # the retry reuses version 2
    assert retried.version == 2 and set(_versions(store, task)) == {1, 2}
    assert registry.champion(store, task).partition == "model-b"


def test_an_unreachable_store_is_named_not_taken_for_no_champion(monkeypatch):
    from tests.mlflow_store import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    store = tracking.Store(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(
        registry.RegistryError, match=rf"cannot read the 'triage' champion from the MLflow store {store.uri}"
    ):
        registry.champion(store, "triage")
