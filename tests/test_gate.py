"""The promotion gate's rules, on hand-made ScoreCards (the evaluation stage's contract)."""

from __future__ import annotations

import json
import os
from math import comb
from pathlib import Path

import pytest

from pipelines import gate
from pipelines.config import GateSettings

SETTINGS = GateSettings()  # the shipped defaults: margin 0.05, alpha 0.05, general drop 0.05
FP = "evalfp-123"


def card(contender: str, outcomes: list[bool], suite: str = "task", fingerprint: str = FP) -> dict:
    """A ScoreCard with one case per outcome (ids c0, c1, ...)."""
    n = len(outcomes)
    passed = sum(outcomes)
    return {
        "contender": contender,
        "suite": suite,
        "n": n,
        "passed": passed,
        "pass_rate": passed / n,
        "ci_low": max(0.0, passed / n - 0.1),
        "ci_high": min(1.0, passed / n + 0.1),
        "target_pass_rate": None,
        "assertion_pass_rates": {},
        "mean_latency_ms": 120.0,
        "mean_output_tokens": 14.0,
        "results_path": "/nowhere/results.json",
        "eval_fingerprint": fingerprint,
        "cases": [
            {"id": f"c{i}", "passed": ok, "output": "", "gold": "", "latency_ms": 1.0, "output_tokens": 3}
            for i, ok in enumerate(outcomes)
        ],
    }


def paired(both: int, only_tuned: int, only_base: int, neither: int) -> tuple[dict, dict]:
    tuned = [True] * both + [True] * only_tuned + [False] * only_base + [False] * neither
    base = [True] * both + [False] * only_tuned + [True] * only_base + [False] * neither
    return card("baseline", base), card("tuned", tuned)


GENERAL_OK = (card("baseline", [True] * 9 + [False], "general"), card("tuned", [True] * 9 + [False], "general"))


def decide(baseline, tuned, general=GENERAL_OK, champion=None, settings=SETTINGS) -> gate.Decision:
    return gate.decide(baseline, tuned, general[0], general[1], champion, settings)


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
    assert gate.mcnemar_one_sided(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_matches_binomial_tail_definition():
    for n in range(1, 25):
        for b in range(n + 1):
            tail = sum(comb(n, k) for k in range(b, n + 1)) / 2**n
            assert gate.mcnemar_one_sided(b, n - b) == pytest.approx(tail)


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError, match="b=-1"):
        gate.mcnemar_one_sided(-1, 2)


# --------------------------------------------------------------------------- decisions
def test_clear_win_is_promoted():
    baseline, tuned = paired(both=5, only_tuned=12, only_base=1, neither=2)
    d = decide(baseline, tuned)
    assert d.promote
    assert d.reason.startswith("Promoted")
    assert d.margin == pytest.approx(11 / 20)
    assert d.p_value == pytest.approx(gate.mcnemar_one_sided(12, 1))
    assert all(c.passed for c in d.checks)
    assert {c.name for c in d.checks} == {"margin", "significance", "general_skills", "champion"}


def test_tie_is_not_promoted():
    baseline, tuned = paired(both=10, only_tuned=3, only_base=3, neither=4)
    d = decide(baseline, tuned)
    assert not d.promote
    assert d.margin == 0
    failed = {c.name for c in d.checks if not c.passed}
    assert failed == {"margin", "significance"}
    assert "margin" in d.reason and "not significant" in d.reason


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
    checks = {c.name: c for c in d.checks}
    assert checks["margin"].passed
    assert not checks["significance"].passed
    assert checks["significance"].value == pytest.approx(3 / 16)
    assert "not significant" in d.reason


def test_general_skills_regression_blocks_a_task_win():
    baseline, tuned = paired(both=5, only_tuned=12, only_base=1, neither=2)
    general = (card("baseline", [True] * 10, "general"), card("tuned", [True] * 8 + [False] * 2, "general"))
    d = decide(baseline, tuned, general=general)
    assert not d.promote
    checks = {c.name: c for c in d.checks}
    assert not checks["general_skills"].passed
    assert checks["general_skills"].value == pytest.approx(0.2)
    assert "general skills dropped by +20.0 pts" in d.reason


def test_small_general_drop_within_tolerance_passes():
    baseline, tuned = paired(both=5, only_tuned=12, only_base=1, neither=2)
    general = (
        card("baseline", [True] * 20, "general"),
        card("tuned", [True] * 19 + [False], "general"),  # -5 pts: exactly the allowance
    )
    assert decide(baseline, tuned, general=general).promote


def test_better_champion_blocks_promotion():
    baseline, tuned = paired(both=5, only_tuned=12, only_base=1, neither=2)  # tuned 85 %
    champion = {"partition": "other-model", "eval_fingerprint": FP, "adapter_dir": "/a",
                "scores": {"tuned": {"pass_rate": 0.9}}}
    d = decide(baseline, tuned, champion=champion)
    assert not d.promote
    assert "champion" in d.reason
    assert [c.name for c in d.checks if not c.passed] == ["champion"]


def test_worse_champion_is_beaten():
    baseline, tuned = paired(both=5, only_tuned=12, only_base=1, neither=2)
    champion = {"partition": "other", "eval_fingerprint": FP, "adapter_dir": "/a",
                "scores": {"tuned": {"pass_rate": 0.6}}}
    d = decide(baseline, tuned, champion=champion)
    assert d.promote and "beats the champion" in d.reason


def test_champion_on_another_eval_set_is_not_comparable():
    baseline, tuned = paired(both=5, only_tuned=12, only_base=1, neither=2)
    champion = {"partition": "x", "eval_fingerprint": "old", "scores": {"tuned": {"pass_rate": 1.0}}}
    d = decide(baseline, tuned, champion=champion)
    assert d.promote
    assert "different eval set" in {c.name: c for c in d.checks}["champion"].detail


def test_thresholds_come_from_settings():
    baseline, tuned = paired(both=8, only_tuned=4, only_base=1, neither=7)  # p = 0.1875
    assert decide(baseline, tuned, settings=GateSettings(alpha=0.2)).promote
    assert not decide(baseline, tuned, settings=GateSettings(alpha=0.2, min_margin=0.5)).promote


def test_cases_are_paired_by_id_not_position():
    baseline, tuned = paired(both=5, only_tuned=12, only_base=1, neither=2)
    tuned["cases"] = list(reversed(tuned["cases"]))
    p = gate.pair_cases(tuned, baseline)
    assert (p.only_tuned, p.only_baseline, p.both_right, p.both_wrong) == (12, 1, 5, 2)


def test_different_case_ids_are_an_error():
    baseline, tuned = paired(both=5, only_tuned=5, only_base=0, neither=0)
    tuned["cases"][0]["id"] = "stranger"
    with pytest.raises(ValueError, match="case ids differ.*stranger"):
        decide(baseline, tuned)


def test_duplicate_case_ids_are_an_error():
    baseline, tuned = paired(both=5, only_tuned=5, only_base=0, neither=0)
    tuned["cases"][1]["id"] = "c0"
    with pytest.raises(ValueError, match="duplicate case id 'c0'"):
        gate.pair_cases(tuned, baseline)


def test_different_eval_fingerprints_are_an_error():
    baseline, tuned = paired(both=5, only_tuned=5, only_base=0, neither=0)
    tuned["eval_fingerprint"] = "another"
    with pytest.raises(ValueError, match="different eval sets"):
        decide(baseline, tuned)


def test_report_shows_every_number_for_a_no():
    baseline, tuned = paired(both=8, only_tuned=4, only_base=1, neither=7)
    d = decide(baseline, tuned)
    md = gate.decision_report(d, baseline, tuned, *GENERAL_OK)
    assert "DO NOT PROMOTE" in md
    assert d.reason in md
    for needle in ("95% CI", "ms/call", "output tokens", "McNemar", "p = 0.1875", "+15.0 pts", "| significance | FAIL"):
        assert needle in md, needle


def test_baseline_meets_target():
    baseline = card("baseline", [True] * 9 + [False])
    assert gate.baseline_meets_target(baseline) is None  # no target set
    baseline["target_pass_rate"] = 0.8
    assert "no fine-tune needed" in gate.baseline_meets_target(baseline)
    baseline["target_pass_rate"] = 0.95
    assert gate.baseline_meets_target(baseline) is None


# --------------------------------------------------------------------------- registry
def _entry(partition: str, rate: float, fingerprint: str = FP) -> dict:
    baseline, tuned = paired(both=5, only_tuned=12, only_base=1, neither=2)
    tuned["pass_rate"] = rate
    tuned["eval_fingerprint"] = baseline["eval_fingerprint"] = fingerprint
    record = gate.decision_record(decide(baseline, tuned), baseline, tuned, *GENERAL_OK)
    return gate.registry_entry(
        partition,
        {"name": partition, "path": "/m", "source": "s", "weights_sha256": "w"},
        {"adapter_dir": f"/runs/{partition}", "data_fingerprint": "d", "config_hash": "h", "load_in_4bit": True},
        record,
    )


def test_registry_roundtrip_and_champion(tmp_path):
    path = tmp_path / "registry" / "promoted.json"
    assert gate.find_champion(path, FP) is None
    gate.write_registry_entry(path, _entry("a", 0.7))
    gate.write_registry_entry(path, _entry("b", 0.8))
    gate.write_registry_entry(path, _entry("c", 0.99, fingerprint="other-eval"))
    doc = gate.read_registry(path)
    assert set(doc["partitions"]) == {"a", "b", "c"}
    assert len(doc["history"]) == 3
    entry = doc["partitions"]["b"]
    for key in ("base_model", "adapter_dir", "data_fingerprint", "config_hash", "scores", "p_value"):
        assert key in entry
    assert gate.find_champion(path, FP)["partition"] == "b"  # c is on another eval set
    assert gate.find_champion(path, "other-eval")["partition"] == "c"
    assert not list(path.parent.glob("*.tmp"))


def test_crash_mid_write_leaves_old_registry_intact(tmp_path, monkeypatch):
    path = tmp_path / "promoted.json"
    gate.write_registry_entry(path, _entry("a", 0.7))
    before = path.read_bytes()

    real_fdopen = os.fdopen

    class Crashing:
        """Writes half the document, then dies like a killed process would."""

        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()
            return False

        def write(self, text):
            self.handle.write(text[: len(text) // 2])
            self.handle.flush()
            raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(gate.os, "fdopen", lambda fd, *a, **k: Crashing(real_fdopen(fd, *a, **k)))
    with pytest.raises(KeyboardInterrupt):
        gate.write_registry_entry(path, _entry("b", 0.8))
    assert path.read_bytes() == before
    assert set(json.loads(before)["partitions"]) == {"a"}
    assert not list(tmp_path.glob("*.tmp"))  # temp file cleaned up


def test_crash_before_rename_leaves_old_registry_intact(tmp_path, monkeypatch):
    path = tmp_path / "promoted.json"
    gate.write_registry_entry(path, _entry("a", 0.7))
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(gate.os, "replace", boom)
    with pytest.raises(OSError, match="disk gone"):
        gate.write_registry_entry(path, _entry("b", 0.8))
    assert path.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_registry_is_a_clear_error(tmp_path):
    path = tmp_path / "promoted.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="promoted.json: promotion registry is not valid JSON"):
        gate.read_registry(path)


def test_concurrent_promotions_lose_no_entry(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "promoted.json"
    entries = [_entry(f"model-{i}", 0.5 + i / 100) for i in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda e: gate.write_registry_entry(path, e), entries))
    doc = gate.read_registry(path)
    assert set(doc["partitions"]) == {f"model-{i}" for i in range(12)}
    assert len(doc["history"]) == 12
