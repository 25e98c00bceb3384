"""The whole chain on the tiny model: every real stage (sources, dataset, Axolotl QLoRA,
the merged candidate, promptfoo scoring of the ladder, the tuned model, general skills and
the champion, the gate), end to end through Dagster."""

from __future__ import annotations

import dagster as dg
import pytest

from pipelines.orchestration.resources import TunegateResource

PARTITION = "tiny-llama"


A1 = {"category": "billing", "priority": "low"}  # the one answer the yes-test's task asks for


def _constant_answer_tickets(path, rows: int):
    """The first ``rows`` well-formed demo tickets, every answer replaced by ``A1``: a task the
    tiny learner cannot do from a prompt and learns in seconds."""
    import json

    from pipelines.config.paths import REPO_ROOT

    out = []
    for line in (
        (REPO_ROOT / "data" / "demo" / "tickets.jsonl").read_text(encoding="utf-8", errors="replace").splitlines()
    ):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        turns = record.get("messages") or []
        if [t.get("role") for t in turns][-2:] != ["user", "assistant"] or not all(
            isinstance(t.get("content"), str) for t in turns
        ):
            continue
        turns[-1]["content"] = json.dumps(A1)
        out.append(json.dumps(record))
        if len(out) == rows:
            break
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def _tiny_chain_setup(tmp_path, home, registry, tickets: int, overrides: dict, min_eval_loss_drop: float = 0.01):
    """One source of constant-answer tickets, settings for the tiny model, a small general suite."""
    import yaml

    from pipelines.config.paths import REPO_ROOT
    from pipelines.config.sources import load_sources
    from tests.doubles import TINY_OVERRIDES

    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    _constant_answer_tickets(data / "tickets.jsonl", tickets)
    shipped = {s.name: s for s in load_sources(REPO_ROOT / "sources.yaml")}
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        yaml.safe_dump(
            {
                "sources": [
                    {**shipped["tickets_jsonl"].model_dump(exclude_none=True), "path": str(data / "tickets.jsonl")},
                ]
            }
        )
    )
    general = tmp_path / "general.jsonl"
    general.write_bytes(b"".join((REPO_ROOT / "evals" / "general.jsonl").read_bytes().splitlines(True)[::12]))
    settings = tmp_path / "tunegate.yaml"
    settings.write_text(
        yaml.safe_dump(
            {
                "split": {"eval_fraction": 0.2, "min_eval": 10, "min_validation": 6},
                "training": {"overrides": {**TINY_OVERRIDES, **overrides}, "min_eval_loss_drop": min_eval_loss_drop},
                "eval": {"general_file": str(general), "general_max_new_tokens": 8},
                # The tiny models answer no general item either way; with 0 of 25 items discordant the
                # one-sided 95 % bound on the drop is still 9.8 pts, so the default 5 pts could never pass.
                "gate": {"max_general_regression": 0.10},
            }
        )
    )
    return TunegateResource(
        home=str(home), sources_file=str(sources), base_models_file=str(registry), settings_file=str(settings)
    )


def _materialize_chain(tunegate, instance):
    from assets import evaluation, gate, models, training
    from assets.data import build_dataset_assets, build_source_assets
    from pipelines.orchestration.resources import AxolotlResource, PromptfooResource

    specs = tunegate.sources()
    return dg.materialize(
        [
            *build_source_assets(specs),
            *build_dataset_assets(specs),
            *dg.load_assets_from_modules([training, models, evaluation, gate]),
        ],
        instance=instance,
        partition_key=PARTITION,
        resources={
            "tunegate": tunegate,
            "axolotl": AxolotlResource(),
            "promptfoo": PromptfooResource(),
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
        },
    )


CHAIN_ASSETS = (
    "train_set",
    "validation_set",
    "eval_set",
    "base_model",
    "axolotl_config",
    "ladder/zero_shot",
    "ladder/static_few_shot",
    "ladder/retrieved_few_shot",
    "baseline_scores",
    "qlora_adapter",
    "base_as_trained",
    "tuned_model",
    "tuned_scores",
    "baseline_general_scores",
    "base_as_trained_general_scores",
    "tuned_general_scores",
    "champion_scores",
    "gate_decision",
)


def _checks(record) -> dict:
    return {c.name: c for c in record.decision.checks}


@pytest.mark.slow
def test_a_real_yes_then_a_worse_challenger_loses_to_the_champion(tmp_path, learner_registry, local_store):
    """Every real stage twice, on the tiny learner (tests/tiny_model.py) and tickets that all
    want one answer. Run 1: no prompt gets it right, a QLoRA through Axolotl learns it, promptfoo
    scores it and the gate says yes: the adapter that was scored is registered as champion.
    Run 2, on refreshed data (more tickets, so a new held-out set): a challenger that learned
    nothing (learning rate 0; the guard's threshold set to 0 so that the gate, not the guard, must
    refuse it) loses to the champion re-scored on the new held-out set, and the champion stays.
    Both runs share one home and its own MLflow store (``local_store``), where the champion lives."""
    from assets.evaluation import task_spec
    from pipelines.gate import registry

    home = tmp_path / "out"
    first = _tiny_chain_setup(
        tmp_path / "run1", home, learner_registry, tickets=50, overrides={"learning_rate": 0.01, "num_epochs": 5}
    )
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("base_model", [PARTITION])
        result = _materialize_chain(first, instance)
        assert result.success
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert set(CHAIN_ASSETS) | {"promoted_model"} <= materialized
        record = result.asset_value("gate_decision")
        assert record.decision.promote is True, record.decision.reason
        assert all(c.passed for c in record.decision.checks), record.decision.checks
        n = result.asset_value("eval_set").rows
        assert record.decision.versus_baseline.n == n >= 10
        tuned = result.asset_value("tuned_scores")
        assert tuned.pass_rate >= 0.9, tuned.pass_rate
        baseline = result.asset_value("baseline_scores")
        assert baseline.rungs[baseline.baseline_rung].pass_rate <= 0.1  # no prompt does it
        assert record.decision.champion.status == "none"
        assert "Promotion decision: **PROMOTE**" in record.report_md and "### Cost" in record.report_md
        assert first.tracking_store().uri == local_store.uri
        champion = registry.champion(local_store, task_spec(first).name)
        assert champion.artefact["id"] == tuned.artefact["id"] == record.candidate["id"]

        # Run 2: same instance and registry home, refreshed data, a challenger that learned nothing.
        second = _tiny_chain_setup(
            tmp_path / "run2",
            home,
            learner_registry,
            tickets=65,
            overrides={"learning_rate": 0.0, "num_epochs": 1},
            min_eval_loss_drop=0.0,
        )
        result = _materialize_chain(second, instance)
        assert result.success
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert set(CHAIN_ASSETS) <= materialized and "promoted_model" not in materialized  # ran, yielded a "no"
        record = result.asset_value("gate_decision")
        assert record.decision.promote is False
        assert record.decision.champion.status == "scored"
        n2 = result.asset_value("eval_set").rows
        assert n2 > n  # the refreshed data set's held-out cases, not run 1's
        champion_card = result.asset_value("champion_scores").card
        assert champion_card.suite_fingerprint == result.asset_value("tuned_scores").suite_fingerprint
        assert champion_card.pass_rate >= 0.9
        versus = record.decision.versus_champion
        assert versus.n == n2 and versus.only_second > versus.only_first
        checks = _checks(record)
        assert not checks["champion_margin"].passed and not checks["champion_significance"].passed
        assert "DO NOT PROMOTE" in record.report_md
        assert registry.champion(local_store, task_spec(first).name).artefact["id"] == champion.artefact["id"]
