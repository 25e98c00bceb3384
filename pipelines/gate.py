"""The promotion gate: decide, on evidence, whether a fine-tune ships.

Plain Python, no Dagster: every rule is a function tested directly. A win needs all of
(1) a pass-rate margin over the prompt-only baseline, (2) significance on the paired
per-case outcomes (one-sided exact McNemar), (3) no real loss of general skills and
(4) a better score than the recorded champion on the same eval set. Thresholds come
from ``GateSettings`` (tunegate.yaml), never from code.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipelines.config import GateSettings

REGISTRY_VERSION = 1


def baseline_meets_target(baseline_scores: dict) -> str | None:
    """If the prompt-only baseline already reaches the task's ``target_pass_rate``,
    training is not worth paying for: return the reason to skip it, else None."""
    target = baseline_scores.get("target_pass_rate")
    if target is None:
        return None
    rate = baseline_scores["pass_rate"]
    if rate >= target:
        return (
            f"the prompt-only baseline already passes {rate:.1%} of held-out cases "
            f"(target {target:.1%}): no fine-tune needed"
        )
    return None


# --------------------------------------------------------------------------- statistics
def mcnemar_one_sided(b: int, c: int) -> float:
    """Exact one-sided McNemar p-value that the challenger is better.

    ``b`` = cases only the challenger gets right, ``c`` = cases only the baseline gets
    right. Under H0 the discordant pairs split 50/50, so p = P(X >= b), X ~ Bin(b+c, 1/2).
    Concordant pairs carry no information and are ignored by design."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(b, n + 1))
    return min(1.0, tail / 2**n)


@dataclass(frozen=True)
class Pairing:
    """Per-case outcomes of two contenders on the same cases, paired by id."""

    n: int
    both_right: int
    only_tuned: int  # b
    only_baseline: int  # c
    both_wrong: int


def pair_cases(tuned: dict, baseline: dict) -> Pairing:
    """Pair two ScoreCards' cases by id; differing id sets are an error, not a guess,
    because a paired test on unmatched cases is meaningless."""
    tuned_by_id = _cases_by_id(tuned)
    base_by_id = _cases_by_id(baseline)
    if tuned_by_id.keys() != base_by_id.keys():
        only_t = sorted(tuned_by_id.keys() - base_by_id.keys())
        only_b = sorted(base_by_id.keys() - tuned_by_id.keys())
        raise ValueError(
            f"cannot pair {tuned.get('contender')!r} with {baseline.get('contender')!r}: case ids differ "
            f"({len(only_t)} only in the first, e.g. {only_t[:3]}; "
            f"{len(only_b)} only in the second, e.g. {only_b[:3]}); score both on the same eval split"
        )
    counts = {(True, True): 0, (True, False): 0, (False, True): 0, (False, False): 0}
    for case_id, t_ok in tuned_by_id.items():
        counts[(t_ok, base_by_id[case_id])] += 1
    return Pairing(
        n=len(tuned_by_id),
        both_right=counts[(True, True)],
        only_tuned=counts[(True, False)],
        only_baseline=counts[(False, True)],
        both_wrong=counts[(False, False)],
    )


def _cases_by_id(card: dict) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for index, case in enumerate(card.get("cases") or []):
        case_id = case.get("id")
        if case_id is None:
            raise ValueError(f"ScoreCard {card.get('contender')!r}: case #{index} has no id")
        if case_id in out:
            raise ValueError(f"ScoreCard {card.get('contender')!r}: duplicate case id {case_id!r}")
        out[str(case_id)] = bool(case["passed"])
    if not out:
        raise ValueError(f"ScoreCard {card.get('contender')!r} has no cases to compare")
    return out


# --------------------------------------------------------------------------- decision
@dataclass(frozen=True)
class Check:
    """One rule of the gate, with the numbers it was decided on."""

    name: str
    passed: bool
    value: float | None
    threshold: float | None
    detail: str


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    checks: list[Check]
    margin: float
    p_value: float
    general_drop: float
    pairing: Pairing
    champion: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    baseline: dict,
    tuned: dict,
    baseline_general: dict,
    tuned_general: dict,
    champion: dict | None,
    settings: GateSettings,
) -> Decision:
    """Apply the four rules; promote only when every one passes."""
    fp_t, fp_b = tuned.get("eval_fingerprint"), baseline.get("eval_fingerprint")
    if fp_t and fp_b and fp_t != fp_b:
        raise ValueError(
            f"tuned and baseline were scored on different eval sets ({fp_t[:12]} vs {fp_b[:12]}): "
            "re-score both on the same split"
        )
    pairing = pair_cases(tuned, baseline)
    margin = tuned["pass_rate"] - baseline["pass_rate"]
    p_value = mcnemar_one_sided(pairing.only_tuned, pairing.only_baseline)
    general_drop = baseline_general["pass_rate"] - tuned_general["pass_rate"]

    checks = [
        Check(
            "margin",
            margin >= settings.min_margin - 1e-12,
            margin,
            settings.min_margin,
            f"tuned {tuned['pass_rate']:.1%} - baseline {baseline['pass_rate']:.1%} = {_pts(margin)} "
            f"(need >= {_pts(settings.min_margin)})",
        ),
        Check(
            "significance",
            p_value < settings.alpha,
            p_value,
            settings.alpha,
            f"one-sided exact McNemar on {pairing.n} paired cases: {pairing.only_tuned} only tuned right, "
            f"{pairing.only_baseline} only baseline right, p = {p_value:.4g} (need < {settings.alpha:g})",
        ),
        Check(
            "general_skills",
            general_drop <= settings.max_general_regression + 1e-12,
            general_drop,
            settings.max_general_regression,
            f"general-skills pass rate {baseline_general['pass_rate']:.1%} -> {tuned_general['pass_rate']:.1%} "
            f"(drop {_pts(general_drop)}, allowed <= {_pts(settings.max_general_regression)})",
        ),
        _champion_check(tuned, champion),
    ]
    failed = [c for c in checks if not c.passed]
    if failed:
        reason = "Not promoted: " + "; ".join(_failure_phrase(c) for c in failed) + "."
    else:
        reason = (
            f"Promoted: the tuned model passes {tuned['pass_rate']:.1%} vs the baseline's "
            f"{baseline['pass_rate']:.1%} ({_pts(margin)}, McNemar p = {p_value:.3g}) without losing "
            f"general skills{' and beats the champion' if champion and checks[3].value is not None else ''}."
        )
    return Decision(
        promote=not failed,
        reason=reason,
        checks=checks,
        margin=margin,
        p_value=p_value,
        general_drop=general_drop,
        pairing=pairing,
        champion=champion,
    )


def _champion_check(tuned: dict, champion: dict | None) -> Check:
    if champion is None:
        return Check("champion", True, None, None, "no model promoted for this task yet")
    champ_fp = champion.get("eval_fingerprint")
    champ_rate = (champion.get("scores") or {}).get("tuned", {}).get("pass_rate")
    label = f"champion {champion.get('partition', '?')} ({str(champion.get('adapter_dir', ''))[-40:]})"
    if champ_rate is None or champ_fp != tuned.get("eval_fingerprint"):
        return Check(
            "champion", True, None, None,
            f"{label} was scored on a different eval set: not comparable, no champion to beat",
        )
    return Check(
        "champion",
        tuned["pass_rate"] > champ_rate,
        tuned["pass_rate"] - champ_rate,
        champ_rate,
        f"tuned {tuned['pass_rate']:.1%} vs {label} {champ_rate:.1%} on the same eval set (must be higher)",
    )


def _failure_phrase(check: Check) -> str:
    if check.name == "margin":
        return f"the margin over the baseline is {_pts(check.value)}, below the required {_pts(check.threshold)}"
    if check.name == "significance":
        return f"the gain is not significant (McNemar p = {check.value:.3g}, need < {check.threshold:g})"
    if check.name == "general_skills":
        return (
            f"general skills dropped by {_pts(check.value)}, more than the allowed {_pts(check.threshold)}"
        )
    return f"it does not beat the champion's {check.threshold:.1%} on the same eval set"


def _pts(x: float) -> str:
    return f"{x * 100:+.1f} pts"


# --------------------------------------------------------------------------- report
def decision_report(
    decision: Decision,
    baseline: dict,
    tuned: dict,
    baseline_general: dict,
    tuned_general: dict,
    title: str = "Promotion decision",
) -> str:
    """The markdown report shown in logs and asset metadata, for a yes as much as a no."""
    verdict = "PROMOTE" if decision.promote else "DO NOT PROMOTE"
    lines = [
        f"## {title}: **{verdict}**",
        "",
        decision.reason,
        "",
        "| contender | task pass rate | 95% CI | n | general pass rate | mean latency (ms/call) | mean output tokens/call |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, task, general in (("baseline (prompt only)", baseline, baseline_general), ("tuned", tuned, tuned_general)):
        lines.append(
            f"| {name} | {task['pass_rate']:.1%} | [{_fmt_rate(task.get('ci_low'))}, {_fmt_rate(task.get('ci_high'))}] "
            f"| {task.get('n', '?')} | {general['pass_rate']:.1%} | {_fmt_num(task.get('mean_latency_ms'))} "
            f"| {_fmt_num(task.get('mean_output_tokens'))} |"
        )
    champ = decision.champion
    if champ:
        rate = (champ.get("scores") or {}).get("tuned", {}).get("pass_rate")
        lines.append(
            f"| champion ({champ.get('partition', '?')}) | {_fmt_rate(rate)} | - | - | - | - | - |"
        )
    lines += ["", "| check | result | value | threshold | detail |", "|---|---|---|---|---|"]
    for c in decision.checks:
        lines.append(
            f"| {c.name} | {'pass' if c.passed else 'FAIL'} | {_fmt_num(c.value, 4)} "
            f"| {_fmt_num(c.threshold, 4)} | {c.detail} |"
        )
    p = decision.pairing
    lines += [
        "",
        f"Paired outcomes ({p.n} cases): both right {p.both_right}, only tuned right {p.only_tuned}, "
        f"only baseline right {p.only_baseline}, both wrong {p.both_wrong}. "
        f"Margin {_pts(decision.margin)}, McNemar one-sided p = {decision.p_value:.4g}.",
    ]
    return "\n".join(lines)


def _fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _fmt_num(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


# --------------------------------------------------------------------------- registry
def read_registry(path: Path) -> dict:
    """The promotion registry: ``{"version", "partitions": {key: entry}, "history": [entry]}``."""
    if not path.is_file():
        return {"version": REGISTRY_VERSION, "partitions": {}, "history": []}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: promotion registry is not valid JSON ({exc}); restore it from history") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("partitions"), dict):
        raise ValueError(f"{path}: promotion registry has no `partitions` object")
    doc.setdefault("history", [])
    return doc


def find_champion(path: Path, eval_fingerprint: str | None) -> dict | None:
    """The best promoted entry for this task on the same eval set (any base model), or None.

    Entries scored on another eval set are not comparable and are ignored."""
    best: dict | None = None
    for entry in read_registry(path)["partitions"].values():
        if eval_fingerprint is None or entry.get("eval_fingerprint") != eval_fingerprint:
            continue
        rate = entry.get("scores", {}).get("tuned", {}).get("pass_rate", -1.0)
        if best is None or rate > best["scores"]["tuned"]["pass_rate"]:
            best = entry
    return best


def card_summary(card: dict) -> dict:
    """The numbers of a ScoreCard worth keeping (no per-case rows)."""
    return {
        k: card.get(k)
        for k in ("contender", "n", "passed", "pass_rate", "ci_low", "ci_high", "mean_latency_ms", "mean_output_tokens")
    }


def decision_record(
    decision: Decision, baseline: dict, tuned: dict, baseline_general: dict, tuned_general: dict
) -> dict:
    """The gate's output: the verdict, its numbers, the report and the contenders' summaries."""
    record = decision.to_dict()
    record["report_md"] = decision_report(decision, baseline, tuned, baseline_general, tuned_general)
    record["eval_fingerprint"] = tuned.get("eval_fingerprint")
    record["scores"] = {
        "baseline": card_summary(baseline),
        "tuned": card_summary(tuned),
        "baseline_general": card_summary(baseline_general),
        "tuned_general": card_summary(tuned_general),
    }
    return record


def registry_entry(partition: str, base_model: dict, adapter: dict, record: dict) -> dict:
    """Everything needed to reproduce or serve the promoted model, and why it won."""
    return {
        "partition": partition,
        "promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base_model": {k: base_model.get(k) for k in ("name", "path", "source", "weights_sha256")},
        "adapter_dir": adapter["adapter_dir"],
        "base_model_dir": adapter.get("base_model_dir", base_model.get("path")),
        "load_in_4bit": adapter.get("load_in_4bit"),
        "data_fingerprint": adapter.get("data_fingerprint"),
        "config_hash": adapter.get("config_hash"),
        "eval_fingerprint": record.get("eval_fingerprint"),
        "scores": record["scores"],
        "p_value": record["p_value"],
        "margin": record["margin"],
        "reason": record["reason"],
    }


def write_registry_entry(path: Path, entry: dict) -> dict:
    """Record a promotion atomically: a crash mid-write leaves the previous file intact.

    The whole document goes to a temp file in the same directory, is fsynced, then
    ``os.replace``d over the old one (atomic on POSIX); a lock file serialises writers.
    History keeps every promotion."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Two partitions may promote at once: serialise the read-modify-write so neither
    # entry is lost (the rename alone only protects against torn files).
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc = read_registry(path)
        doc["partitions"][entry["partition"]] = entry
        doc["history"].append(entry)
        atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return doc


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
