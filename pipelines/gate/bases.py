""" "A new base model is out: do we switch?" The gate report's answer across partitions.

Plain Python over what the gate asset gathers: the candidate's base model and scores, the
champion (from the promotion registry, re-scored on today's held-out set, any base model),
and the latest gate decision of every other base model. It names which model serves after
this decision, how old the champion's base model is, and what this re-tune cost: the
maintenance tax of keeping a fine-tune on a current base."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from pipelines.common.tables import markdown_table
from pipelines.evaluation.scorecard import ScoreCard
from pipelines.gate.cost import CostReport
from pipelines.gate.decision import Decision


@dataclass(frozen=True)
class OtherBase:
    """Another partition's latest gate decision (from the Dagster instance)."""

    partition: str
    tuned_pass_rate: float | None
    baseline_pass_rate: float | None
    baseline_rung: str | None
    promoted: bool
    suite_fingerprint: str | None
    released: str | None = None


@dataclass(frozen=True)
class BaseModelContext:
    candidate: str  # the partition (base model) being decided on
    candidate_released: str | None
    others: list[OtherBase] = field(default_factory=list)
    champion_released: str | None = None  # fallback when the registry entry does not carry it
    run_seconds: float | None = None  # wall time of this re-tune's run so far

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _age(released: str | None, today: date) -> str:
    if not released:
        return "release date unknown (set `released:` in base_models.yaml)"
    days = (today - date.fromisoformat(str(released)[:10])).days
    return f"released {released}, {days} days ({days / 30.44:.1f} months) ago"


def serving_after(decision: Decision, candidate: str) -> str:
    """Which model answers requests once this decision is applied."""
    if decision.promote:
        return f"the fine-tune on **{candidate}** (promoted now)"
    champ = decision.champion
    if champ.status in ("scored", "same") and champ.entry:
        return f"the champion fine-tune on **{champ.entry.partition}** (unchanged)"
    return "no fine-tune: the prompt-only baseline (nothing was ever promoted, or its files are gone)"


def base_models_md(
    decision: Decision,
    tuned: ScoreCard,
    baseline: ScoreCard,
    ctx: BaseModelContext,
    cost: CostReport,
    now: datetime | None = None,
) -> str:
    """Both (all) base models side by side, what serves after the decision, the champion's
    base-model age and the re-tune's cost."""
    now = now or datetime.now(UTC)
    champ = decision.champion
    champ_partition = champ.entry.partition if champ.entry else None
    rows = [
        [
            f"**{ctx.candidate}** (this re-tune)",
            _rate(tuned.pass_rate),
            f"{_rate(baseline.pass_rate)} ({decision.baseline_rung})",
            "PROMOTE" if decision.promote else "no",
            "today's held-out set",
        ]
    ]
    others = {o.partition: o for o in ctx.others if o.partition != ctx.candidate}
    if champ.card and champ_partition != ctx.candidate:
        last = others.pop(champ_partition, None)
        prompt_only = f"{_rate(last.baseline_pass_rate)} ({last.baseline_rung or '-'}), its last gate" if last else "-"
        rows.append(
            [
                f"{champ_partition} (champion)",
                _rate(champ.card.pass_rate),
                prompt_only,
                "replaced" if decision.promote else "keeps serving",
                "re-scored on today's held-out set",
            ]
        )
    for other in others.values():
        same = other.suite_fingerprint == tuned.suite_fingerprint
        rows.append(
            [
                other.partition,
                _rate(other.tuned_pass_rate),
                f"{_rate(other.baseline_pass_rate)} ({other.baseline_rung or '-'})",
                "promoted" if other.promoted else "not promoted",
                "its last gate, same held-out set" if same else "its last gate, an OLDER held-out set",
            ]
        )
    lines = [
        "### Base models: do we switch?",
        "",
        markdown_table(["base model", "tuned pass rate", "prompt-only baseline", "gate", "scored on"], rows),
        "",
        f"- **Serves after this decision:** {serving_after(decision, ctx.candidate)}.",
    ]
    if champ.status == "none":
        shown = ", ".join(others)
        lines.append(
            "- No champion: no earlier base model's gate said yes"
            + (f"; {shown} above shows what switching buys over it." if shown else ".")
        )
    elif champ.status == "missing":
        lines.append(f"- The champion cannot be re-scored: {champ.why}")
    today = now.date()
    if champ.entry:
        base = champ.entry.base_model or {}
        released = base.get("released") or ctx.champion_released
        promoted = champ.entry.promoted_at
        served = ""
        if promoted:
            days = (now - datetime.fromisoformat(promoted)).total_seconds() / 86400
            served = f"; promoted {promoted} ({days:.0f} days ago)"
        lines.append(f"- Champion's base model {base.get('name') or champ_partition}: {_age(released, today)}{served}.")
    lines.append(f"- Candidate's base model {ctx.candidate}: {_age(ctx.candidate_released, today)}.")
    wall = f"{ctx.run_seconds / 60:.1f} min of wall time for the run so far, " if ctx.run_seconds else ""
    lines.append(
        f"- **This re-tune cost:** {wall}{cost.training_seconds:.0f} s of training on "
        f"{cost.training_tokens:,.0f} tokens = {cost.training_cost:.4f} at tunegate.yaml `cost:` prices; "
        "every new base model costs this again (the maintenance tax)."
    )
    return "\n".join(lines)
