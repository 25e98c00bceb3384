"""A new base model lands (issue 16), in the fast suite: two partitions, the registry sensor
adds the second when its entry is appended, and the gate compares the new base's tune with
the champion promoted on the old base. The report names both base models, their scores,
which serves after the decision, the champion base model's age and the re-tune's cost.

The base models are real tiny folders through the real ``base_model`` asset (the second one
with its tokenizer fixes as data); the score, adapter and tuned-model assets upstream of the
gate are the test doubles of tests/doubles.py (``promotion_assets``). The champion's re-scored card is a
double too (re-scoring runs promptfoo; tests/test_promotion.py covers the asset's statuses),
but its entry is the one the first partition's real promotion wrote to the registry."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets.models import base_model
from pipelines.gate import registry
from pipelines.gate.decision import ChampionInput
from pipelines.orchestration.automation import base_model_registry_sensor
from pipelines.orchestration.resources import PromptfooResource, TunegateResource
from tests.cards import LOSS, WIN, card
from tests.doubles import TASK, metadata_of, promotion_assets
from tests.tiny_model import GEMMA_FIXES

OLD, NEW = "tiny-llama", "tiny-gemma"
# WIN: tuned 85 % vs the best prompt 30 %; LOSS: tuned 30 % vs 65 % (tests/cards.py)


def _entry(name: str, folder: Path, released: str, **extra) -> dict:
    return {"name": name, "source": str(folder), "released": released, **extra}


@pytest.fixture
def world(tmp_path, tiny_model_dir, tiny_gemma_dir, local_store):
    """A registry with the old base model only, a settings file, an instance, and the home's
    own MLflow store (``local_store``: the champion lives there)."""
    registry_file = tmp_path / "base_models.yaml"
    registry_file.write_text(yaml.safe_dump({"base_models": [_entry(OLD, tiny_model_dir, "2024-11-01")]}))
    settings = tmp_path / "tunegate.yaml"
    settings.write_text("{}\n")
    resource = TunegateResource(
        home=str(tmp_path / "out"), base_models_file=str(registry_file), settings_file=str(settings)
    )
    with dg.instance_for_test() as instance:
        yield {"registry": registry_file, "tunegate": resource, "instance": instance, "tmp": tmp_path}


def _tick(world) -> list[dg.RunRequest]:
    """One sensor evaluation, with its partition requests applied as the daemon would."""
    context = dg.build_sensor_context(instance=world["instance"], resources={"tunegate": world["tunegate"]})
    result = base_model_registry_sensor(context)
    if isinstance(result, dg.SkipReason):
        return []
    for request in result.dynamic_partitions_requests:
        world["instance"].add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return list(result.run_requests)


def _run_gate(world, partition: str, model_dir: Path, outcome, champion_double: ChampionInput | None = None):
    """The partition's promotion stage: real base_model, gate and promotion (and the real
    champion_scores unless a double is given); the doubles of tests/doubles.py upstream."""
    tuned_dir = shutil.copytree(model_dir, world["tmp"] / f"tuned-{partition}")
    doubles = promotion_assets(model_dir, tuned_dir, outcome, champion=champion_double)
    assets = [a for a in doubles if a.key != dg.AssetKey("base_model")] + [base_model]
    return dg.materialize(
        assets,
        instance=world["instance"],
        partition_key=partition,
        resources={"tunegate": world["tunegate"], "promptfoo": PromptfooResource()},
    )


def _add_new_base(world, tiny_gemma_dir):
    """What a user does: append the new entry to base_models.yaml."""
    doc = yaml.safe_load(world["registry"].read_text())
    doc["base_models"].append(
        _entry(NEW, tiny_gemma_dir, "2025-08-14", tokenizer=GEMMA_FIXES, eot_tokens=["<end_of_turn>"])
    )
    world["registry"].write_text(yaml.safe_dump(doc))


def _rescored(world, outcomes: list[bool]) -> ChampionInput:
    """The champion as champion_scores hands it on: the registry's entry and a re-scored card."""
    entry = registry.champion(world["tunegate"].tracking_store(), TASK)
    assert entry is not None and entry.partition == OLD
    return ChampionInput("scored", entry, card("champion", outcomes))


def test_a_new_base_model_is_tuned_and_beats_the_old_champion(world, tiny_model_dir, tiny_gemma_dir):
    (first,) = _tick(world)
    assert first.partition_key == OLD and _tick(world) == []  # known now: no second request
    assert _run_gate(world, OLD, tiny_model_dir, WIN).success
    assert registry.champion(world["tunegate"].tracking_store(), TASK).base_model["released"] == "2024-11-01"

    _add_new_base(world, tiny_gemma_dir)
    (request,) = _tick(world)
    assert request.partition_key == NEW and request.tags["tunegate/trigger"] == "new-base-model"
    assert set(world["instance"].get_dynamic_partitions("base_model")) == {OLD, NEW}

    champion_cases = [True] * 5 + [False] * 12 + [True] + [False] * 2  # 6/20, paired with WIN's tuned 17/20
    result = _run_gate(world, NEW, tiny_gemma_dir, WIN, _rescored(world, champion_cases))
    record = result.output_for_node("gate_decision")
    assert record.decision.promote is True
    report = record.report_md
    assert "### Base models: do we switch?" in report
    assert f"**{NEW}** (this re-tune) | 85.0% | 30.0% (static_few_shot) | PROMOTE" in report
    assert (
        f"{OLD} (champion) | 30.0% | 30.0% (static_few_shot), its last gate | replaced | re-scored on today's "
        "held-out set |"
    ) in report
    assert report.count(f"| {OLD}") == 1  # the champion's partition once, not again as "another base"
    assert f"- **Serves after this decision:** the fine-tune on **{NEW}** (promoted now)." in report
    assert f"- Champion's base model {OLD}: released 2024-11-01, " in report and "days (" in report
    assert f"- Candidate's base model {NEW}: released 2025-08-14" in report
    assert "600 s of training on 540,000 tokens" in report and "min of wall time for the run so far" in report
    assert metadata_of(result, "gate_decision")["serving_after"].startswith(f"the fine-tune on **{NEW}**")
    assert registry.champion(world["tunegate"].tracking_store(), TASK).partition == NEW
    checked = metadata_of(result, "base_model")
    assert checked["needs_bos"] is True and checked["eos_token"] == "<end_of_turn>"


def test_without_a_champion_the_old_base_scores_stand_beside_the_new(world, tiny_model_dir, tiny_gemma_dir):
    _tick(world)
    old = _run_gate(world, OLD, tiny_model_dir, LOSS)
    assert old.output_for_node("gate_decision").decision.promote is False  # the old base's gate said no
    _add_new_base(world, tiny_gemma_dir)
    assert [r.partition_key for r in _tick(world)] == [NEW]

    result = _run_gate(world, NEW, tiny_gemma_dir, LOSS)  # the real champion_scores: registry empty
    report = result.output_for_node("gate_decision").report_md
    assert "- No champion: no earlier base model's gate said yes; tiny-llama above shows what switching buys" in report
    assert f"| {OLD} | 30.0% | 65.0% (static_few_shot) | not promoted | its last gate, same held-out set |" in report
    assert "- **Serves after this decision:** no fine-tune: the prompt-only baseline" in report


# --------------------------------------------------------------------------- make demo-retune's plumbing
def test_the_demo_appends_the_entry_to_a_copy_of_the_registry(tmp_path):
    from pipelines.config.base_models import load_base_models
    from pipelines.config.paths import REPO_ROOT
    from pipelines.orchestration.demo_retune import DEFAULT_ENTRY, registry_with

    shipped = REPO_ROOT / "base_models.yaml"
    before = shipped.read_text()
    out = registry_with(DEFAULT_ENTRY, shipped, tmp_path / "retune" / "base_models.yaml")
    names = [s.name for s in load_base_models(out)]
    assert names[0] == load_base_models(shipped)[0].name and names[-1] == "gemma3-270m"
    assert registry_with(DEFAULT_ENTRY, out, out) == out and len(load_base_models(out)) == len(names)  # idempotent
    assert shipped.read_text() == before


def test_only_missing_wheels_are_installed():
    from pipelines.orchestration.demo_retune import missing_requirements

    pyyaml = f"pyyaml=={__import__('importlib.metadata').metadata.version('pyyaml')}"
    assert missing_requirements([pyyaml]) == []
    assert missing_requirements(["pyyaml==0.0.1", "no-such-dist-tunegate==1.0"]) == [
        "pyyaml==0.0.1",
        "no-such-dist-tunegate==1.0",
    ]


def test_an_old_base_scored_on_an_older_held_out_set_is_flagged():
    from pipelines.config.gate import CostSettings
    from pipelines.gate import bases, cost
    from tests.cards import TRAINING, decide, paired

    baseline, tuned = paired(*LOSS)
    decision = decide(baseline, tuned)
    costs = cost.cost_report({"static_few_shot": baseline}, "static_few_shot", tuned, TRAINING, CostSettings())
    other = bases.OtherBase(OLD, 0.4, 0.5, "zero_shot", False, "an-older-suite-fp")
    report = bases.base_models_md(decision, tuned, baseline, bases.BaseModelContext(NEW, None, [other]), costs)
    assert f"| {OLD} | 40.0% | 50.0% (zero_shot) | not promoted | its last gate, an OLDER held-out set |" in report
    assert f"- Candidate's base model {NEW}: release date unknown (set `released:` in base_models.yaml)." in report
    assert "1800 s of training on 1,800,000 tokens" in report and "wall time" not in report
