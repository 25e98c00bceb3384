"""The decision as a reviewer reads it: markdown for Dagster metadata and the demo's output,
and the gate asset's value, ``DecisionRecord`` (the verdict, its numbers, the identities it
was decided on), with ``Scores`` (every card's numbers, also kept in the registry entry)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.common.metadata import Markdown, Metadata
from pipelines.common.tables import markdown_table
from pipelines.common.typed_records import RecordError, from_fields
from pipelines.evaluation.scorecard import CardSummary, ScoreCard
from pipelines.evaluation.task_metrics import contenders_md
from pipelines.gate import bases
from pipelines.gate.cost import CostReport
from pipelines.gate.decision import Decision, Pairing


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _num(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _pts(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f} pts"


def _ci(card: ScoreCard) -> str:
    return f"[{_rate(card.ci_low)}, {_rate(card.ci_high)}]"


def _pairing_row(label: str, p: Pairing | None, drop_of: str) -> list[str]:
    if p is None:
        return [label, "-", "-", "-", "-", "no quantisation (adapter: lora)"]
    return [label, str(p.n), str(p.only_first), str(p.only_second), _pts(p.difference), drop_of]


def ladder_md(rungs: dict[str, ScoreCard], baseline_rung: str, cost: CostReport | None = None) -> str:
    costs = {c.name: c for c in cost.contenders} if cost else {}
    rows = []
    for name, card in rungs.items():
        c = costs.get(name)
        rows.append(
            [
                f"**{name}** (baseline)" if name == baseline_rung else name,
                card.recipe_text,
                _rate(card.pass_rate),
                _ci(card),
                f"{card.passed}/{card.n}",
                _num(card.mean_prompt_tokens),
                _num(card.mean_output_tokens),
                _num(card.mean_latency_ms, 0),
                f"{c.per_call * 1000:.4f}" if c else "-",
            ]
        )
    return markdown_table(
        [
            "rung",
            "prompt",
            "pass rate",
            "95% CI",
            "passed",
            "prompt tok/call",
            "output tok/call",
            "ms/call",
            "cost per 1k calls",
        ],
        rows,
        max_cell=90,
    )


def cost_md(cost: CostReport) -> str:
    rows = [
        [
            c.name,
            _num(c.prompt_tokens),
            _num(c.output_tokens),
            _num(c.latency_ms, 0),
            f"{c.per_call * 1000:.4f}",
            f"{c.per_month:,.2f}",
        ]
        for c in cost.contenders
    ]
    table = markdown_table(
        [
            "contender",
            "prompt tok/call",
            "output tok/call",
            "ms/call",
            "cost per 1k calls",
            f"per month at {cost.calls_per_month:,} calls",
        ],
        rows,
    )
    if cost.break_even_calls_per_month is None:
        verdict = (
            f"The tuned model is not cheaper per call than the baseline ({cost.saving_per_call * 1000:+.4f} "
            "per 1k calls saved): on cost alone it never pays back its training."
        )
    else:
        verdict = (
            f"Training took {cost.training_seconds:.0f} s ({cost.training_tokens:,.0f} tokens) = "
            f"{cost.training_cost:.4f}; with the re-tunes that is {cost.training_per_month:.4f} per month. "
            f"The tune saves {cost.saving_per_call * 1000:.4f} per 1k calls, so it pays back from "
            f"**{cost.break_even_calls_per_month:,.0f} calls per month**."
        )
    return table + "\n\n" + verdict + "\n\n_Prices from tunegate.yaml `cost:` (examples unless you set yours)._"


def decision_md(
    decision: Decision,
    rungs: dict[str, ScoreCard],
    tuned: ScoreCard,
    general: dict[str, ScoreCard | None],
    cost: CostReport,
    title: str = "Promotion decision",
    bases_md: str = "",
) -> str:
    """The whole report, for a yes as much as a no (``bases_md``: the base models side by side)."""
    verdict = "PROMOTE" if decision.promote else "DO NOT PROMOTE"
    baseline = rungs[decision.baseline_rung]
    lines = [f"## {title}: **{verdict}**", "", decision.reason, ""]
    if decision.actions:
        lines += ["**What to change:**", *[f"- {a}" for a in decision.actions], ""]
    if bases_md:
        lines += [bases_md, ""]
    lines += ["### The prompt ladder (held-out cases)", "", ladder_md(rungs, decision.baseline_rung, cost), ""]
    figures = contenders_md({**rungs, "tuned": tuned})
    if figures:
        pass_rule = tuned.task_metrics["pass_rule"]
        lines += [f"Pass rule per case (what the paired tests count): {pass_rule}. Beyond pass/fail:", "", figures, ""]
    vb = decision.versus_baseline
    contenders = [
        ["tuned (merged, as trained)", _rate(tuned.pass_rate), _ci(tuned), f"{tuned.passed}/{tuned.n}"],
        [
            f"baseline = {decision.baseline_rung}",
            _rate(baseline.pass_rate),
            _ci(baseline),
            f"{baseline.passed}/{baseline.n}",
        ],
    ]
    champ = decision.champion
    if champ.card:
        contenders.append(
            [
                f"champion ({champ.entry.partition if champ.entry else '?'})",
                _rate(champ.card.pass_rate),
                _ci(champ.card),
                f"{champ.card.passed}/{champ.card.n}",
            ]
        )
    lines += [
        "### Tuned vs the baseline" + (" and the champion" if champ.card else ""),
        "",
        markdown_table(["contender", "pass rate", "95% CI", "passed"], contenders),
        "",
        f"Paired vs baseline ({vb.n} cases): both right {vb.both}, only tuned {vb.only_first}, "
        f"only baseline {vb.only_second}, both wrong {vb.neither}; margin {_pts(decision.margin)}, "
        f"one-sided exact McNemar p = {decision.p_value:.4g}.",
    ]
    if decision.versus_champion:
        vc = decision.versus_champion
        lines.append(
            f"Paired vs champion ({vc.n} cases): only tuned {vc.only_first}, only champion "
            f"{vc.only_second}; p = {decision.champion_p_value:.4g}."
        )
    elif champ.status != "none":
        lines.append(f"Champion: {champ.status}. {champ.why}")
    f = decision.forgetting
    gen_rows = [["fp32 base (serves without tuning)", _rate(general["reference"].pass_rate), _ci(general["reference"])]]
    if general.get("base_as_trained"):
        gen_rows.append(
            [
                "base as trained (4-bit, dequantised)",
                _rate(general["base_as_trained"].pass_rate),
                _ci(general["base_as_trained"]),
            ]
        )
    gen_rows.append(["tuned (what ships)", _rate(general["candidate"].pass_rate), _ci(general["candidate"])])
    lines += [
        "",
        f"### General skills ({f.total.n} items): where a drop comes from",
        "",
        markdown_table(["artefact", "pass rate", "95% CI"], gen_rows),
        "",
        markdown_table(
            ["step", "items", "lost", "gained", "drop", "what it measures"],
            [
                _pairing_row("quantisation: fp32 -> base as trained", f.quantisation, "the 4-bit base alone"),
                _pairing_row("adapter: base as trained -> tuned", f.adapter, "the adapter's own effect"),
                _pairing_row("total: fp32 -> tuned", f.total, "what a user of the shipped model sees"),
            ],
        ),
        "",
        f"Upper one-sided {f.confidence:.0%} bound of the total drop (Newcombe paired score interval): "
        f"{_pts(f.drop_upper)}.",
    ]
    lines += [
        "",
        "### Checks",
        "",
        markdown_table(
            ["check", "result", "value", "threshold", "detail"],
            [
                [c.name, "pass" if c.passed else "FAIL", _num(c.value, 4), _num(c.threshold, 4), c.detail]
                for c in decision.checks
            ],
            max_cell=400,
        ),
    ]
    lines += ["", "### Cost", "", cost_md(cost)]
    artefact = tuned.artefact or {}
    lines += [
        "",
        f"Scored artefact: `{artefact.get('id', '?')[:16]}` at `{artefact.get('path', '?')}`; "
        f"suite `{tuned.suite_fingerprint[:16]}`.",
    ]
    return "\n".join(lines)


def _summaries(cards: Any) -> dict[str, CardSummary | None]:
    if not isinstance(cards, dict):
        raise RecordError(f"expected an object of card summaries, got {type(cards).__name__}")
    return {name: None if card is None else CardSummary.from_dict(card) for name, card in cards.items()}


@dataclass(frozen=True)
class Scores:
    """The numbers of every card the gate decided on (no per-case rows)."""

    ladder: dict[str, CardSummary]
    baseline: CardSummary
    tuned: CardSummary
    general: dict[str, CardSummary | None]  # reference, base_as_trained (None: not quantised), candidate
    champion: CardSummary | None = None

    @classmethod
    def of(
        cls,
        rungs: dict[str, ScoreCard],
        baseline_rung: str,
        tuned: ScoreCard,
        general: dict[str, ScoreCard | None],
        champion: ScoreCard | None,
    ) -> Scores:
        return cls(
            ladder={name: card.summary() for name, card in rungs.items()},
            baseline=rungs[baseline_rung].summary(),
            tuned=tuned.summary(),
            general={name: card.summary() if card else None for name, card in general.items()},
            champion=champion.summary() if champion else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ladder": {name: s.to_dict() for name, s in self.ladder.items()},
            "baseline": self.baseline.to_dict(),
            "tuned": self.tuned.to_dict(),
            "general": {name: s.to_dict() if s else None for name, s in self.general.items()},
            "champion": self.champion.to_dict() if self.champion else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scores:
        return from_fields(
            cls,
            data,
            ladder=_summaries,
            baseline=CardSummary.from_dict,
            tuned=CardSummary.from_dict,
            general=_summaries,
            champion=lambda c: None if c is None else CardSummary.from_dict(c),
        )


@dataclass(frozen=True)
class DecisionRecord:
    """The gate asset's value: the verdict, its numbers, the report, what was scored."""

    decision: Decision
    report_md: str
    suite_fingerprint: str
    candidate: dict[str, Any]  # the tuned card's artefact identity: what promotion registers
    cost: CostReport
    scores: Scores
    base_models: bases.BaseModelContext | None = None  # every base model side by side (the gate asset sets it)
    mlflow_run_id: str | None = None  # the decision's MLflow run, once logged

    def to_dict(self) -> dict[str, Any]:
        """The decision's fields and the record's, in one JSON object (decision.json)."""
        out = self.decision.to_dict()
        out.update(
            report_md=self.report_md,
            suite_fingerprint=self.suite_fingerprint,
            candidate=self.candidate,
            cost=self.cost.to_dict(),
            scores=self.scores.to_dict(),
        )
        if self.base_models is not None:
            out["base_models"] = self.base_models.to_dict()
        if self.mlflow_run_id is not None:
            out["mlflow_run_id"] = self.mlflow_run_id
        return out

    def metadata(self) -> Metadata:
        """The verdict as the UI shows it (``base_model``: the partition in ``base_models``)."""
        d = self.decision
        partition = self.base_models.candidate if self.base_models else ""
        return {
            "promote": d.promote,
            "reason": d.reason,
            "baseline_rung": d.baseline_rung,
            "margin": float(round(d.margin, 4)),
            "p_value": float(f"{d.p_value:.4g}"),
            "general_drop": float(round(d.forgetting.total.difference, 4)),
            "general_drop_upper_95": float(round(d.forgetting.drop_upper, 4)),
            "break_even_calls_per_month": float(self.cost.break_even_calls_per_month or 0.0),
            "champion": d.champion.status,
            "serving_after": bases.serving_after(d, partition),
            "base_model": partition,
            "tuned_pass_rate": float(round(self.scores.tuned.pass_rate, 4)),
            "baseline_pass_rate": float(round(self.scores.baseline.pass_rate, 4)),
            "suite_fingerprint": self.suite_fingerprint,
            "candidate_artefact_id": self.candidate["id"],
            "mlflow_run_id": self.mlflow_run_id or "",
            "report": Markdown(self.report_md),
        }


def decision_record(
    decision: Decision,
    rungs: dict[str, ScoreCard],
    tuned: ScoreCard,
    general: dict[str, ScoreCard | None],
    cost: CostReport,
    bases_md: str = "",
    base_models: bases.BaseModelContext | None = None,
) -> DecisionRecord:
    """The gate asset's value: the verdict, its numbers, the report, what was scored."""
    return DecisionRecord(
        decision=decision,
        report_md=decision_md(decision, rungs, tuned, general, cost, bases_md=bases_md),
        suite_fingerprint=tuned.suite_fingerprint,
        candidate=tuned.artefact,
        cost=cost,
        scores=Scores.of(rungs, decision.baseline_rung, tuned, general, decision.champion.card),
        base_models=base_models,
    )
