"""The promotion gate (pipelines/gate/): the decision rules, the report and the cost table,
on hand-made score cards (tests/cards.py: the evaluation stage's contract). The champion registry (MLflow)
is tests/test_registry.py."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from math import comb

import pytest

from pipelines.common import stats
from pipelines.config.gate import CostSettings, GateSettings
from pipelines.gate import cost, decision, report
from pipelines.gate.decision import ChampionInput, IncomparableCards
from pipelines.gate.report import Scores
from tests.cards import (
    FP,
    GFP,
    NO_CHAMPION,
    OTHER_FP,
    PRICES,
    SETTINGS,
    TRAINING,
    WIN,
    card,
    champion_entry,
    cost_of,
    decide,
    general,
    general_ok,
    outcomes,
    paired,
    with_case,
)


def failed(d) -> set[str]:
    return {c.name for c in d.checks if not c.passed}


def checks(d) -> dict:
    return {c.name: c for c in d.checks}


# --------------------------------------------------------------------------- McNemar
@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (0, 0, 1.0),
        (5, 0, 1 / 32),  # all 5 discordant pairs favour the challenger: 0.5**5
        (10, 0, 1 / 1024),
        (3, 3, 0.65625),  # P(X>=3 | Bin(6, .5)) = 42/64
        (0, 4, 1.0),
        (9, 1, 11 / 1024),  # (C(10,9)+C(10,10)) / 2**10 = 0.0107421875
        (8, 2, 56 / 1024),  # 0.0546875: just not significant at 0.05
    ],
)
def test_mcnemar_known_values(b, c, expected):
    assert stats.mcnemar_one_sided(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_matches_binomial_tail_definition():
    for n in range(1, 25):
        for b in range(n + 1):
            tail = sum(comb(n, k) for k in range(b, n + 1)) / 2**n
            assert stats.mcnemar_one_sided(b, n - b) == pytest.approx(tail)


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError, match="b=-1"):
        stats.mcnemar_one_sided(-1, 2)


# --------------------------------------------------------------------------- baseline rule
def test_clear_win_is_promoted():
    baseline, tuned = paired(both=5, only_tuned=12, only_base=1, neither=2)
    d = decide(baseline, tuned)
    assert d.promote
    assert d.reason.startswith("Promoted")
    assert d.baseline_rung == "static_few_shot"
    assert d.margin == pytest.approx(11 / 20)
    assert d.p_value == pytest.approx(stats.mcnemar_one_sided(12, 1))
    assert (
        d.versus_baseline.both,
        d.versus_baseline.only_first,
        d.versus_baseline.only_second,
        d.versus_baseline.neither,
    ) == (5, 12, 1, 2)
    assert all(c.passed for c in d.checks) and d.actions == []
    assert {c.name for c in d.checks} == {"baseline_margin", "baseline_significance", "general_skills", "champion"}


def test_tie_is_not_promoted():
    baseline, tuned = paired(both=10, only_tuned=3, only_base=3, neither=4)
    d = decide(baseline, tuned)
    assert not d.promote
    assert d.margin == 0
    assert failed(d) == {"baseline_margin", "baseline_significance"}
    assert d.reason.startswith("Not promoted")
    assert "baseline_margin fails" in d.reason and "baseline_significance fails" in d.reason
    assert any("could be chance" in a for a in d.actions)


def test_loss_is_not_promoted():
    baseline, tuned = paired(both=5, only_tuned=1, only_base=8, neither=6)
    d = decide(baseline, tuned)
    assert not d.promote
    assert d.margin < 0
    assert d.p_value > 0.9


def test_win_without_significance_is_not_promoted():
    # +15 pts on 20 cases from 4 vs 1 discordant pairs: big margin, p = 0.1875
    baseline, tuned = paired(both=8, only_tuned=4, only_base=1, neither=7)
    d = decide(baseline, tuned)
    assert not d.promote
    c = checks(d)
    assert c["baseline_margin"].passed
    assert not c["baseline_significance"].passed
    assert c["baseline_significance"].value == pytest.approx(3 / 16)
    assert failed(d) == {"baseline_significance"}
    assert "baseline_significance fails" in d.reason and "p = 0.1875" in d.reason


def test_thresholds_come_from_settings():
    baseline, tuned = paired(both=8, only_tuned=4, only_base=1, neither=7)  # +15 pts, p = 0.1875
    assert not decide(baseline, tuned).promote
    assert decide(baseline, tuned, settings=GateSettings(alpha=0.2)).promote
    assert not decide(baseline, tuned, settings=GateSettings(alpha=0.2, min_margin=0.5)).promote
    assert (
        checks(decide(baseline, tuned, settings=GateSettings(alpha=0.2, min_margin=0.5)))["baseline_margin"].threshold
        == 0.5
    )
    forgot = general([True] * 10, [True] * 8 + [False] * 2)
    win = paired(both=5, only_tuned=12, only_base=1, neither=2)
    assert not decide(*win, general_cards=forgot).promote
    assert decide(*win, general_cards=forgot, settings=GateSettings(max_general_regression=0.5)).promote


# --------------------------------------------------------------------------- the prompt ladder
def _ladder(static_tokens: float = 400.0, retrieved_tokens: float = 350.0, retrieved_passes: int = 14) -> dict:
    return {
        "zero_shot": card("zero_shot", [True] * 10 + [False] * 10, prompt_tokens=120.0),
        "static_few_shot": card("static_few_shot", [True] * 14 + [False] * 6, prompt_tokens=static_tokens),
        "retrieved_few_shot": card(
            "retrieved_few_shot",
            [False] * (20 - retrieved_passes) + [True] * retrieved_passes,
            prompt_tokens=retrieved_tokens,
        ),
    }


def test_strongest_rung_is_the_highest_pass_rate():
    assert decision.strongest_rung(_ladder(retrieved_passes=15, retrieved_tokens=900.0)) == "retrieved_few_shot"
    assert decision.strongest_rung(_ladder(retrieved_passes=13, retrieved_tokens=10.0)) == "static_few_shot"


def test_strongest_rung_tie_goes_to_the_fewer_prompt_tokens():
    assert decision.strongest_rung(_ladder(static_tokens=400.0, retrieved_tokens=350.0)) == "retrieved_few_shot"
    assert decision.strongest_rung(_ladder(static_tokens=300.0, retrieved_tokens=350.0)) == "static_few_shot"
    # same rate, same tokens: the name decides, so the choice never depends on dict order
    rungs = _ladder(static_tokens=350.0, retrieved_tokens=350.0)
    assert (
        decision.strongest_rung(rungs) == decision.strongest_rung(dict(reversed(rungs.items()))) == "retrieved_few_shot"
    )
    with pytest.raises(ValueError, match="no rungs"):
        decision.strongest_rung({})


def test_decide_compares_the_tune_with_the_strongest_rung():
    rungs = _ladder(static_tokens=400.0, retrieved_tokens=350.0)
    tuned = card("tuned", [True] * 19 + [False])
    d = decision.decide(rungs, tuned, general_ok(), NO_CHAMPION, SETTINGS)
    assert d.baseline_rung == "retrieved_few_shot"
    assert d.versus_baseline.second == "retrieved_few_shot"
    # retrieved passes c6..c19, the tune c0..c18: 6 only tuned, 1 only the rung
    assert (d.versus_baseline.only_first, d.versus_baseline.only_second) == (6, 1)
    assert d.margin == pytest.approx(0.25)


def test_meets_target_fires_when_any_rung_reaches_it():
    rungs = {
        "zero_shot": card("zero_shot", [True] * 10 + [False] * 10, target=0.8),
        "static_few_shot": card("static_few_shot", [True] * 17 + [False] * 3, target=0.8),
        "retrieved_few_shot": card("retrieved_few_shot", [True] * 12 + [False] * 8, target=0.8),
    }
    reason = decision.meets_target(rungs)
    assert reason and "'static_few_shot'" in reason and "no fine-tune needed" in reason and "85.0%" in reason
    rungs = {name: replace(c, target_pass_rate=0.9) for name, c in rungs.items()}
    assert decision.meets_target(rungs) is None
    rungs = {name: replace(c, target_pass_rate=None) for name, c in rungs.items()}
    assert decision.meets_target(rungs) is None


def test_baseline_meets_target():
    baseline = card("baseline", [True] * 9 + [False])
    assert decision.meets_target({"baseline": baseline}) is None  # no target set
    baseline = replace(baseline, target_pass_rate=0.8)
    assert "no fine-tune needed" in decision.meets_target({"baseline": baseline})
    baseline = replace(baseline, target_pass_rate=0.95)
    assert decision.meets_target({"baseline": baseline}) is None


# --------------------------------------------------------------------------- general skills
def test_general_skills_regression_blocks_a_task_win():
    baseline, tuned = paired(both=5, only_tuned=12, only_base=1, neither=2)
    forgot = general([True] * 10, [True] * 8 + [False] * 2)
    d = decide(baseline, tuned, general_cards=forgot)
    assert not d.promote
    assert failed(d) == {"general_skills"}
    check = checks(d)["general_skills"]
    assert d.forgetting.total.difference == pytest.approx(0.2)
    assert check.value == pytest.approx(stats.drop_upper_bound(8, 2, 0, 0, 0.95)) and check.value > 0.2
    assert check.threshold == 0.05
    assert "general_skills fails" in d.reason and "drop +20.0 pts" in d.reason
    assert d.forgetting.quantisation is None  # no base_as_trained card: a plain LoRA


def test_a_small_drop_on_few_items_is_not_enough_evidence():
    """Non-inferiority: 1 item lost of 20 (-5 pts, the allowance) cannot rule out a large drop."""
    baseline, tuned = paired(both=5, only_tuned=12, only_base=1, neither=2)
    d = decide(baseline, tuned, general_cards=general([True] * 20, [True] * 19 + [False]))
    assert not d.promote and failed(d) == {"general_skills"}
    assert checks(d)["general_skills"].value == pytest.approx(stats.drop_upper_bound(19, 1, 0, 0, 0.95))


def test_a_small_drop_with_large_n_passes():
    baseline, tuned = paired(both=5, only_tuned=12, only_base=1, neither=2)
    reference, candidate = outcomes(both=950, only_first=6, only_second=4, neither=40)
    d = decide(baseline, tuned, general_cards=general(reference, candidate, reference))
    assert d.promote
    value = checks(d)["general_skills"].value
    assert 0 < d.forgetting.total.difference < value <= SETTINGS.max_general_regression
    assert value == pytest.approx(stats.drop_upper_bound(950, 6, 4, 40, 0.95))


def test_a_drop_from_quantisation_recommends_a_plain_lora():
    baseline, tuned = paired(both=5, only_tuned=12, only_base=1, neither=2)
    four_bit = [True] * 14 + [False] * 6  # the 4-bit base alone loses 6 of 20
    d = decide(baseline, tuned, general_cards=general([True] * 20, four_bit, base_as_trained=four_bit))
    assert not d.promote and failed(d) == {"general_skills"}
    f = d.forgetting
    assert (f.quantisation.only_first, f.adapter.only_first, f.total.only_first) == (6, 0, 6)
    action = checks(d)["general_skills"].action
    assert "adapter: lora" in action and "4-bit base alone loses 30.0 pts" in action
    assert action in d.actions


def test_a_drop_from_the_adapter_recommends_changing_the_adapter():
    baseline, tuned = paired(both=5, only_tuned=12, only_base=1, neither=2)
    d = decide(
        baseline, tuned, general_cards=general([True] * 20, [True] * 14 + [False] * 6, base_as_trained=[True] * 20)
    )
    assert not d.promote
    action = checks(d)["general_skills"].action
    assert "adapter itself costs 30.0 pts" in action and "adapter: lora" not in action
    # without quantisation (plain LoRA) the whole drop is the adapter's
    d = decide(baseline, tuned, general_cards=general([True] * 20, [True] * 14 + [False] * 6))
    assert "adapter itself" in checks(d)["general_skills"].action


# --------------------------------------------------------------------------- champion
def test_better_champion_blocks_promotion():
    baseline, tuned = paired(*WIN)
    champ = card("champion", [True] * 19 + [False])  # 95 %: right on c17, c18 where the tune is wrong
    d = decide(baseline, tuned, champion=ChampionInput("scored", champion_entry("other-model"), champ))
    assert not d.promote
    assert failed(d) == {"champion_margin", "champion_significance"}
    assert "champion" in d.reason
    assert (d.versus_champion.only_first, d.versus_champion.only_second) == (0, 2)


def test_worse_champion_is_beaten():
    baseline, tuned = paired(*WIN)
    champ = card("champion", [True] * 5 + [False] * 15)
    d = decide(baseline, tuned, champion=ChampionInput("scored", champion_entry("other-model"), champ))
    assert d.promote and "beats the champion" in d.reason
    assert {"champion_margin", "champion_significance"} <= set(checks(d))
    assert d.champion_p_value == pytest.approx(stats.mcnemar_one_sided(12, 0))


def test_the_candidate_being_the_champion_passes():
    baseline, tuned = paired(*WIN)
    d = decide(baseline, tuned, champion=ChampionInput("same", champion_entry("tiny")))
    assert d.promote
    c = checks(d)["champion"]
    assert c.passed and "IS the champion" in c.detail
    assert "beats the champion" not in d.reason


def test_a_missing_champion_passes_and_the_report_names_it():
    baseline, tuned = paired(*WIN)
    why = "old-model at /gone/model: no such folder"
    d = decide(baseline, tuned, champion=ChampionInput("missing", champion_entry("old-model"), why=why))
    assert d.promote
    c = checks(d)["champion"]
    assert c.passed and why in c.detail
    md = report.decision_md(d, {"static_few_shot": baseline}, tuned, general_ok(), cost_of(baseline, tuned))
    assert f"Champion: missing. {why}" in md


def test_no_champion_passes():
    baseline, tuned = paired(*WIN)
    assert "no model promoted" in checks(decide(baseline, tuned))["champion"].detail


# --------------------------------------------------------------------------- comparability
def test_missing_suite_fingerprint_names_the_card():
    baseline, tuned = paired(*WIN)
    tuned = replace(tuned, suite_fingerprint=None)
    with pytest.raises(IncomparableCards, match=r"\['tuned'\] carry no suite fingerprint"):
        decide(baseline, tuned)
    baseline, tuned = paired(*WIN)
    with pytest.raises(IncomparableCards, match=r"\['static_few_shot'\] carry no suite fingerprint"):
        decide(card("static_few_shot", [True] * 20, fingerprint=""), tuned)
    cards = general_ok()
    cards["base_as_trained"] = replace(cards["base_as_trained"], suite_fingerprint=None)
    with pytest.raises(IncomparableCards, match=r"\['base_as_trained'\] carry no suite fingerprint"):
        decide(baseline, tuned, general_cards=cards)


def _both_values(excinfo, *names) -> None:
    text = str(excinfo.value)
    for needle in names:
        assert needle in text, (needle, text)


def test_task_cards_from_different_suites_are_an_error():
    baseline, tuned = paired(*WIN)
    tuned = replace(tuned, suite_fingerprint=OTHER_FP)
    with pytest.raises(IncomparableCards, match="different suites") as excinfo:
        decide(baseline, tuned)
    _both_values(excinfo, f"static_few_shot={FP}", f"tuned={OTHER_FP}")
    rungs = _ladder()
    rungs["zero_shot"] = replace(rungs["zero_shot"], suite_fingerprint=OTHER_FP)
    with pytest.raises(IncomparableCards, match="different suites") as excinfo:
        decision.strongest_rung(rungs)
    _both_values(excinfo, f"zero_shot={OTHER_FP}", f"static_few_shot={FP}")


def test_general_cards_from_different_suites_are_an_error():
    baseline, tuned = paired(*WIN)
    for name in ("reference", "base_as_trained", "candidate"):
        cards = general_ok()
        cards[name] = replace(cards[name], suite_fingerprint="general-suite-99")
        with pytest.raises(IncomparableCards, match="different suites") as excinfo:
            decide(baseline, tuned, general_cards=cards)
        _both_values(excinfo, f"{name}=general-suite-99", GFP)


def test_champion_from_another_suite_is_an_error():
    baseline, tuned = paired(*WIN)
    champ = card("champion", [True] * 5 + [False] * 15, fingerprint=OTHER_FP)
    with pytest.raises(IncomparableCards, match="different suites") as excinfo:
        decide(baseline, tuned, champion=ChampionInput("scored", champion_entry("x"), champ))
    _both_values(excinfo, f"champion={OTHER_FP}", f"tuned={FP}")


def test_cases_are_paired_by_id_not_position():
    baseline, tuned = paired(*WIN)
    tuned = replace(tuned, cases=list(reversed(tuned.cases)))
    by_position = sum(a.passed and not b.passed for a, b in zip(tuned.cases, baseline.cases))
    assert by_position != 12  # pairing by position would count something else
    p = decision.pair(tuned, baseline)
    assert (p.first, p.second, p.n) == ("tuned", "static_few_shot", 20)
    assert (p.only_first, p.only_second, p.both, p.neither) == (12, 1, 5, 2)
    assert p.difference == pytest.approx(11 / 20)


def test_different_case_ids_are_an_error():
    baseline, tuned = paired(both=5, only_tuned=5, only_base=0, neither=0)
    tuned = with_case(tuned, 0, id="stranger")
    with pytest.raises(IncomparableCards, match="case ids differ.*stranger"):
        decide(baseline, tuned)


def test_duplicate_and_missing_case_ids_are_an_error():
    baseline, tuned = paired(both=5, only_tuned=5, only_base=0, neither=0)
    tuned = with_case(tuned, 1, id="c0")
    with pytest.raises(IncomparableCards, match="duplicate case id 'c0'"):
        decision.pair(tuned, baseline)
    baseline, tuned = paired(both=5, only_tuned=5, only_base=0, neither=0)
    tuned = with_case(tuned, 0, id=None)
    with pytest.raises(IncomparableCards, match="case #0 has no id"):
        decision.pair(tuned, baseline)


# --------------------------------------------------------------------------- cost
def test_per_call_cost_from_tokens_and_prices():
    c = card("x", [True], prompt_tokens=400.0)  # 14 output tokens
    # 400 x 0.10 / 1M + 14 x 0.40 / 1M = (40 + 5.6) / 1M
    assert cost.per_call(c, PRICES) == pytest.approx(45.6e-6)
    assert cost.per_call(c, CostSettings(input_per_1m_tokens=1.0, output_per_1m_tokens=0.0)) == pytest.approx(400e-6)


def test_break_even_volume_by_hand():
    baseline, tuned = paired(*WIN)
    baseline = replace(baseline, mean_prompt_tokens=400.0, mean_output_tokens=15.0)
    tuned = replace(tuned, mean_prompt_tokens=100.0, mean_output_tokens=15.0)
    r = cost_of(baseline, tuned)
    baseline_call = (400 * 0.10 + 15 * 0.40) / 1e6  # 46e-6
    tuned_call = (100 * 0.10 + 15 * 0.40) / 1e6  # 16e-6
    training_cost = 1800 / 3600 * 2.0  # half an hour at 2.00 = 1.00
    per_month = training_cost * (1 + 1) / 3  # the first tune + 1 re-tune per quarter, monthly
    assert r.training_seconds == 1800 and r.training_tokens == pytest.approx(1.8e6)
    assert r.training_cost == pytest.approx(training_cost)
    assert r.training_per_month == pytest.approx(per_month)
    assert r.saving_per_call == pytest.approx(baseline_call - tuned_call)
    assert r.break_even_calls_per_month == pytest.approx(per_month / 30e-6)  # 22,222 calls
    rows = {c.name: c for c in r.contenders}
    assert rows["static_few_shot"].per_call == pytest.approx(baseline_call)
    assert rows["static_few_shot"].per_month == pytest.approx(100_000 * baseline_call)  # 4.60
    assert rows["tuned"].per_month == pytest.approx(100_000 * tuned_call + per_month)  # 1.60 + 0.67
    assert "pays back from **22,222 calls per month**" in report.cost_md(r)


def test_no_break_even_when_the_tune_is_not_cheaper():
    baseline, tuned = paired(*WIN)
    assert cost_of(baseline, tuned).break_even_calls_per_month is None  # same tokens: no saving
    tuned = replace(tuned, mean_prompt_tokens=500.0)
    r = cost_of(baseline, tuned)
    assert r.break_even_calls_per_month is None and r.saving_per_call < 0
    assert "never pays back its training" in report.cost_md(r)


# --------------------------------------------------------------------------- report
def _a_no():
    """A "no": +15 pts on 20 cases, p = 0.1875; general skills 40/40 -> 38 (4-bit) -> 35 (tuned)."""
    baseline, tuned = paired(both=8, only_tuned=4, only_base=1, neither=7)
    baseline, tuned = replace(baseline, mean_prompt_tokens=400.0), replace(tuned, mean_prompt_tokens=80.0)
    rungs = {
        "zero_shot": card("zero_shot", [True] * 6 + [False] * 14, prompt_tokens=150.0),
        "static_few_shot": baseline,
    }
    reference, bat, cand = [True] * 40, [True] * 38 + [False] * 2, [True] * 35 + [False] * 5
    general_cards = general(reference, cand, base_as_trained=bat)
    d = decision.decide(rungs, tuned, general_cards, NO_CHAMPION, SETTINGS)
    costs = cost.cost_report(rungs, d.baseline_rung, tuned, TRAINING, PRICES)
    return d, rungs, tuned, general_cards, costs


def test_report_shows_every_number_for_a_no():
    d, rungs, tuned, general_cards, costs = _a_no()
    assert not d.promote and failed(d) == {"baseline_significance", "general_skills"}
    md = report.decision_md(d, rungs, tuned, general_cards, costs)
    assert "DO NOT PROMOTE" in md and d.reason in md
    assert "**What to change:**" in md and all(a in md for a in d.actions)
    for needle in (
        # the ladder
        "### The prompt ladder",
        "| rung | prompt | pass rate | 95% CI | passed | prompt tok/call | output tok/call | ms/call",
        "| **static_few_shot** (baseline) | recipe of static_few_shot | 45.0% |",
        "| zero_shot | recipe of zero_shot | 30.0% |",
        # tuned vs baseline, paired
        "Paired vs baseline (20 cases): both right 8, only tuned 4, only baseline 1, both wrong 7",
        "McNemar p = 0.1875",
        "+15.0 pts",
        # general skills, decomposed
        "| quantisation: fp32 -> base as trained | 40 | 2 | 0 | +5.0 pts | the 4-bit base alone |",
        "| adapter: base as trained -> tuned | 40 | 3 | 0 | +7.5 pts | the adapter's own effect |",
        "| total: fp32 -> tuned | 40 | 5 | 0 | +12.5 pts | what a user of the shipped model sees |",
        "| base as trained (4-bit, dequantised) | 95.0% |",
        # the checks
        "### Checks",
        "| baseline_margin | pass | 0.1500 | 0.0500 |",
        "| baseline_significance | FAIL | 0.1875 | 0.0500 |",
        "| general_skills | FAIL |",
        "| champion | pass |",
        # cost
        "### Cost",
        "| contender | prompt tok/call | output tok/call | ms/call | cost per 1k calls | per month at 100,000 calls |",
        "pays back from **20,833 calls per month**",  # 0.6667 / ((400 - 80) x 0.10 / 1M)
        "Scored artefact: `artefact-of-tune",
        f"suite `{FP}`",
    ):
        assert needle in md, needle


def test_report_without_quantisation_says_so():
    baseline, tuned = paired(*WIN)
    plain_lora = general_ok()
    plain_lora["base_as_trained"] = None  # adapter: lora, nothing quantised
    d = decide(baseline, tuned, general_cards=plain_lora)
    md = report.decision_md(d, {"static_few_shot": baseline}, tuned, plain_lora, cost_of(baseline, tuned))
    assert "## Promotion decision: **PROMOTE**" in md
    assert "base as trained (4-bit, dequantised)" not in md
    assert "| quantisation: fp32 -> base as trained | - | - | - | - | no quantisation (adapter: lora) |" in md


def test_decision_record_carries_identity_and_fingerprint():
    d, rungs, tuned, general_cards, costs = _a_no()
    value = report.decision_record(d, rungs, tuned, general_cards, costs)
    assert pickle.loads(pickle.dumps(value)) == value  # the asset's value, through Dagster's IO manager
    record = json.loads(json.dumps(value.to_dict()))  # decision.json: plain JSON
    assert record["promote"] is False and record["reason"] == d.reason
    assert record["candidate"] == tuned.artefact == {"id": "artefact-of-tuned", "path": "/models/tuned"}
    assert record["suite_fingerprint"] == FP
    assert record["report_md"] == report.decision_md(d, rungs, tuned, general_cards, costs)
    assert record["baseline_rung"] == "static_few_shot" and record["p_value"] == pytest.approx(3 / 16)
    assert record["general_drop"] == pytest.approx(5 / 40) and record["general_drop_upper"] > 5 / 40
    assert record["cost"]["break_even_calls_per_month"] == pytest.approx(costs.break_even_calls_per_month)
    scores = record["scores"]
    assert set(scores["ladder"]) == {"zero_shot", "static_few_shot"}
    assert scores["baseline"]["contender"] == "static_few_shot"
    assert scores["tuned"]["artefact"]["id"] == "artefact-of-tuned" and "cases" not in scores["tuned"]
    assert set(scores["general"]) == {"reference", "base_as_trained", "candidate"}
    assert scores["champion"] is None
    assert Scores.from_dict(scores) == value.scores  # the registry entry reads them back
