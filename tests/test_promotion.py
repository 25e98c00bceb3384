"""The promotion assets inside Dagster (assets/promotion.py): a win registers the scored
artefact as a version of the task's MLflow model and moves the `champion` alias to it; a
"no" is still a materialised (and logged) decision with nothing promoted; promotion refuses
a folder that is not byte for byte what the gate scored; and training is skipped when a
prompt-only rung already meets the target. Each test has its own local MLflow store.

Upstream score, model and adapter assets are replaced by clearly named test doubles
(tests/doubles.py: ``promotion_assets``); the tuned model is a copy of the tiny model's
folder (its content hash is real). The full chain on the tiny model is tests/test_chain.py."""

from __future__ import annotations

import json
import shutil
import stat
from dataclasses import replace
from urllib.parse import urlparse

import dagster as dg
import pytest

from pipelines.gate import registry
from pipelines.gate.decision import ChampionInput, meets_target
from pipelines.gate.ladder import Ladder
from pipelines.models import artefacts
from pipelines.orchestration.partitions import base_model_partitions
from pipelines.orchestration.resources import PromptfooResource, TunegateResource
from pipelines.training.adapter import AdapterRecord
from tests.cards import (
    FP,
    LOSS,
    OTHER_FP,
    adapter_record,
    base_model_info,
    card,
    champion_entry,
    logged_win,
    run_plan_double,
)
from tests.doubles import PARTITION, TASK, TEMPLATE, double, metadata_of, promotion_assets


@pytest.fixture
def tuned_dir(tiny_model_dir, tmp_path):
    """The candidate's folder: a copy of the tiny model, so a test may edit it."""
    return shutil.copytree(tiny_model_dir, tmp_path / "tuned-model")


@pytest.fixture
def tunegate(tmp_path, tiny_registry, local_store):
    """Outputs, and the local MLflow store, under tmp_path/out."""
    settings = tmp_path / "tunegate.yaml"
    settings.write_text("{}\n")
    return TunegateResource(
        home=str(tmp_path / "out"), base_models_file=str(tiny_registry), settings_file=str(settings)
    )


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("base_model", [PARTITION])
        yield inst


def _materialize(assets, instance, tunegate, **kw):
    return dg.materialize(
        assets,
        instance=instance,
        partition_key=PARTITION,
        resources={"tunegate": tunegate, "promptfoo": PromptfooResource()},
        **kw,
    )


def _materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def _failure(result, node: str) -> str:
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE" and e.step_key == node]
    data = event.event_specific_data
    return f"{data.error.message if data.error else ''} {getattr(data.user_failure_data, 'description', '')}"


# --------------------------------------------------------------------------- a win
def test_a_win_registers_the_candidate_and_records_the_champion(
    instance, tunegate, tiny_model_dir, tuned_dir, local_store
):
    scored = artefacts.identity(tuned_dir, TEMPLATE, {"dtype": "float32"})
    result = _materialize(promotion_assets(tiny_model_dir, tuned_dir), instance, tunegate)
    assert result.success
    assert {"champion_scores", "gate_decision", "promoted_model"} <= _materialized(result)
    assert result.output_for_node("champion_scores").status == "none"
    meta = metadata_of(result, "gate_decision")
    assert meta["promote"] is True and meta["champion"] == "none"
    assert meta["candidate_artefact_id"] == scored["id"]
    assert "**PROMOTE**" in meta["report"] and "Promoted" in meta["reason"]
    record = result.output_for_node("gate_decision")
    assert record.candidate == scored and record.suite_fingerprint == FP

    entry = result.output_for_node("promoted_model")
    store = tunegate.tracking_store()
    assert store.uri == local_store.uri  # the embedded default: SQLite under the output root
    champion = registry.champion(store, TASK)
    assert champion == replace(entry, version=1)
    assert entry.task == TASK and entry.partition == PARTITION and entry.version == 1
    assert entry.artefact == scored and entry.model_dir == str(tuned_dir)
    assert entry.adapter_dir == "/runs/adapter" and entry.run_key == "run-1"
    assert entry.data_fingerprint == "data-fp" and entry.config_hash == "cfg-hash"
    assert entry.suite_fingerprint == FP and entry.base_model["name"] == PARTITION
    assert entry.scores.tuned.pass_rate == pytest.approx(0.85)
    assert entry.p_value == pytest.approx(record.decision.p_value)
    assert entry.decision_run_id == record.mlflow_run_id == meta["mlflow_run_id"]
    client = store.client()
    gate_run = client.get_run(record.mlflow_run_id)
    assert gate_run.data.tags["tunegate.partition"] == PARTITION and gate_run.data.metrics["promote"] == 1.0
    version = client.get_model_version(TASK, "1")
    assert version.run_id == record.mlflow_run_id and version.aliases == ["champion"]
    assert version.tags["tunegate.artefact_id"] == scored["id"]
    promoted = metadata_of(result, "promoted_model")
    assert promoted["artefact_id"] == scored["id"] and promoted["task"] == TASK
    assert promoted["version"] == 1 and promoted["alias"] == "champion" and promoted["registered_model"] == TASK

    path = tunegate.layout.registry_file  # the derived, read-only export
    assert json.loads(path.read_text())["champions"][TASK]["artefact"]["id"] == scored["id"]
    assert not path.stat().st_mode & stat.S_IWUSR

    # the same candidate again: the champion IS the candidate, nothing to beat, it stays champion
    again = _materialize(promotion_assets(tiny_model_dir, tuned_dir), instance, tunegate)
    assert again.success
    assert again.output_for_node("champion_scores").status == "same"
    assert metadata_of(again, "gate_decision")["promote"] is True
    assert registry.champion(store, TASK).version == 1  # the same artefact: the same version
    assert [v.version for v in client.search_model_versions(f"name='{TASK}'")] == [1]


def test_a_champion_whose_files_are_gone_is_named_and_defends_nothing(
    instance, tunegate, tiny_model_dir, tuned_dir, tmp_path
):
    """Gone from where it was built AND from the registry's artifact store."""
    store = tunegate.tracking_store()
    gone = shutil.copytree(tiny_model_dir, tmp_path / "deleted-model")
    record = logged_win(store, TASK, "old-model", gone)
    old = registry.promote(
        store,
        registry.entry(TASK, "old-model", record.candidate, base_model_info("old-model"), adapter_record(), record),
        base_model_info("old-model"),
    )
    shutil.rmtree(gone)
    shutil.rmtree(urlparse(old.source).path)
    result = _materialize(promotion_assets(tiny_model_dir, tuned_dir), instance, tunegate)
    assert result.success
    champion = result.output_for_node("champion_scores")
    assert champion.status == "missing" and "old-model" in champion.why and str(gone) in champion.why
    assert "could not be downloaded" in champion.why
    meta = metadata_of(result, "gate_decision")
    assert meta["promote"] is True and meta["champion"] == "missing"
    assert "Champion: missing. old-model at" in meta["report"]
    versions = store.client().search_model_versions(f"name='{TASK}'")
    assert sorted((int(v.version), v.tags["tunegate.partition"]) for v in versions) == [
        (1, "old-model"),
        (2, PARTITION),
    ]
    assert registry.champion(store, TASK).partition == PARTITION


def test_a_better_rescored_champion_blocks_promotion(instance, tunegate, tiny_model_dir, tuned_dir):
    better = card("champion", [True] * 19 + [False])
    champion = ChampionInput("scored", champion_entry("other-model"), better)
    result = _materialize(promotion_assets(tiny_model_dir, tuned_dir, champion=champion), instance, tunegate)
    assert result.success
    assert "gate_decision" in _materialized(result) and "promoted_model" not in _materialized(result)
    record = result.output_for_node("gate_decision")
    assert record.decision.promote is False
    assert {c.name for c in record.decision.checks if not c.passed} == {"champion_margin", "champion_significance"}
    assert "champion (other-model)" in record.report_md
    assert not tunegate.layout.registry_file.exists()


# --------------------------------------------------------------------------- a no
def test_a_no_is_recorded_and_nothing_is_promoted(instance, tunegate, tiny_model_dir, tuned_dir):
    result = _materialize(promotion_assets(tiny_model_dir, tuned_dir, LOSS), instance, tunegate)
    assert result.success  # a "no" is a result, not a failure
    keys = _materialized(result)
    assert "gate_decision" in keys and "promoted_model" not in keys
    meta = metadata_of(result, "gate_decision")
    assert meta["promote"] is False
    assert "DO NOT PROMOTE" in meta["report"] and meta["p_value"] > 0.9
    assert meta["reason"].startswith("Not promoted")
    assert not tunegate.layout.registry_file.exists()
    assert not tunegate.layout.registry_file.parent.exists()


def test_incomparable_cards_fail_the_gate(instance, tunegate, tiny_model_dir, tuned_dir):
    assets = promotion_assets(tiny_model_dir, tuned_dir, tuned_fingerprint=OTHER_FP)
    result = _materialize(assets, instance, tunegate, raise_on_error=False)
    assert not result.success
    message = _failure(result, "gate_decision")
    assert "cannot compare these score cards" in message and FP in message and OTHER_FP in message
    assert not tunegate.layout.registry_file.exists()


# --------------------------------------------------------------------------- promotion checks the artefact
def test_promoted_model_refuses_a_folder_changed_after_scoring(instance, tunegate, tiny_model_dir, tuned_dir):
    assets = promotion_assets(tiny_model_dir, tuned_dir)
    upstream = [a.key for a in assets if a.key != dg.AssetKey("promoted_model")]
    first = _materialize(assets, instance, tunegate, selection=upstream)
    assert first.success and first.output_for_node("gate_decision").decision.promote is True
    assert "promoted_model" not in _materialized(first)

    config = tuned_dir / "config.json"  # someone edits the folder after the gate scored it
    config.write_text(config.read_text().replace("\n}", ',\n  "edited_after_scoring": true\n}'))
    result = _materialize(assets, instance, tunegate, selection=[dg.AssetKey("promoted_model")], raise_on_error=False)
    assert not result.success
    message = _failure(result, "promoted_model")
    assert "refusing to promote" in message and "the artefact changed since it was scored" in message
    assert not tunegate.layout.registry_file.exists()


def test_promoted_model_refuses_another_candidate(instance, tunegate, tiny_model_dir, tuned_dir):
    """tuned_model now names another artefact (here: another chat template) than the gate scored."""
    assets = promotion_assets(tiny_model_dir, tuned_dir, tuned_model_template="chatml")
    scored = artefacts.identity(tuned_dir, TEMPLATE, {"dtype": "float32"})["id"]
    now = artefacts.identity(tuned_dir, "chatml", {"dtype": "float32"})["id"]
    assert scored != now
    result = _materialize(assets, instance, tunegate, raise_on_error=False)
    assert not result.success
    assert result.output_for_node("gate_decision").decision.promote is True
    message = _failure(result, "promoted_model")
    assert f"the gate scored artefact {scored[:16]}, but tuned_model is now {now[:16]}" in message
    assert not tunegate.layout.registry_file.exists()


# --------------------------------------------------------------------------- training skipped
def test_training_is_skipped_when_the_baseline_meets_the_target(tmp_path, tunegate, instance):
    """The seed's rule: prove the prompt can't do it before paying for training."""
    from assets.training import qlora_adapter
    from pipelines.orchestration.resources import AxolotlResource

    rungs = {
        "zero_shot": card("zero_shot", [True] * 10 + [False] * 10, target=0.9),
        "static_few_shot": card("static_few_shot", [True] * 19 + [False], target=0.9),
    }  # 95 % pass
    skip = meets_target(rungs)
    assert skip

    @dg.asset(name="tuned_model", partitions_def=base_model_partitions, group_name="test_doubles")
    def downstream_double(qlora_adapter: AdapterRecord) -> AdapterRecord:
        """Test double for the model built from the adapter."""
        return qlora_adapter

    result = dg.materialize(
        [
            double("baseline_scores", Ladder("static_few_shot", rungs, skip)),
            double("axolotl_config", run_plan_double()),
            double("base_model", base_model_info()),
            qlora_adapter,
            downstream_double,
        ],
        instance=instance,
        partition_key=PARTITION,
        resources={
            "tunegate": tunegate,
            "axolotl": AxolotlResource(),
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
        },
    )
    assert result.success
    materialized = _materialized(result)
    assert "qlora_adapter" not in materialized and "tuned_model" not in materialized
    assert "tuned_model" in {e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"}
    (observation,) = [
        e.event_specific_data.asset_observation for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert "no fine-tune needed" in observation.metadata["skipped"].value
    assert "'static_few_shot'" in observation.metadata["skipped"].value
    assert observation.metadata["baseline_rung"].value == "static_few_shot"
    assert not (tmp_path / "out" / "runs").exists()  # nothing was trained
