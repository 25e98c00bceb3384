"""The decision as a reviewer reads it: markdown for Dagster metadata and the demo's output,
and the gate asset's value (the verdict, its numbers, the identities it was decided on)."""

from __future__ import annotations

from typing import Any

from pipelines.evaluation.task_metrics import contenders_md
from pipelines.gate.cost import CostReport
from pipelines.gate.decision import Decision, Pairing
from pipelines.common.tables import markdown_table


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _num(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _pts(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f} pts"


def _ci(card: dict) -> str:
    return f"[{_rate(card.get('ci_low'))}, {_rate(card.get('ci_high'))}]"


def _pairing_row(label: str, p: Pairing | None, drop_of: str) -> list[str]:
    if p is None:
        return [label, "-", "-", "-", "-", "no quantisation (adapter: lora)"]
    return [label, str(p.n), str(p.only_first), str(p.only_second), _pts(p.difference), drop_of]


def ladder_md(rungs: dict[str, dict], baseline_rung: str, cost: CostReport | None = None) -> str:
    costs = {c.name: c for c in cost.contenders} if cost else {}
    rows = []
    for name, card in rungs.items():
        c = costs.get(name)
        rows.append([
            f"**{name}** (baseline)" if name == baseline_rung else name, card.get("recipe_text", ""),
            _rate(card["pass_rate"]), _ci(card), f"{card['passed']}/{card['n']}",
            _num(card.get("mean_prompt_tokens")), _num(card.get("mean_output_tokens")),
            _num(card.get("mean_latency_ms"), 0), f"{c.per_call * 1000:.4f}" if c else "-",
        ])  # fmt: skip
    return markdown_table(
        ["rung", "prompt", "pass rate", "95% CI", "passed", "prompt tok/call", "output tok/call", "ms/call",
         "cost per 1k calls"], rows, max_cell=90)  # fmt: skip


def cost_md(cost: CostReport) -> str:
    rows = [[c.name, _num(c.prompt_tokens), _num(c.output_tokens), _num(c.latency_ms, 0),
             f"{c.per_call * 1000:.4f}", f"{c.per_month:,.2f}"] for c in cost.contenders]  # fmt: skip
    table = markdown_table(["contender", "prompt tok/call", "output tok/call", "ms/call", "cost per 1k calls",
                            f"per month at {cost.calls_per_month:,} calls"], rows)  # fmt: skip
    if cost.break_even_calls_per_month is None:
        verdict = (f"The tuned model is not cheaper per call than the baseline ({cost.saving_per_call * 1000:+.4f} "
                   "per 1k calls saved): on cost alone it never pays back its training.")  # fmt: skip
    else:
        verdict = (f"Training took {cost.training_seconds:.0f} s ({cost.training_tokens:,.0f} tokens) = "
                   f"{cost.training_cost:.4f}; with the re-tunes that is {cost.training_per_month:.4f} per month. "
                   f"The tune saves {cost.saving_per_call * 1000:.4f} per 1k calls, so it pays back from "
                   f"**{cost.break_even_calls_per_month:,.0f} calls per month**.")  # fmt: skip
    return table + "\n\n" + verdict + "\n\n_Prices from tunegate.yaml `cost:` (examples unless you set yours)._"


def decision_md(decision: Decision, rungs: dict[str, dict], tuned: dict, general: dict[str, dict | None],
                cost: CostReport, title: str = "Promotion decision", bases_md: str = "") -> str:  # fmt: skip
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
        pass_rule = tuned["task_metrics"]["pass_rule"]
        lines += [f"Pass rule per case (what the paired tests count): {pass_rule}. Beyond pass/fail:", "", figures, ""]
    vb = decision.versus_baseline
    contenders = [["tuned (merged, as trained)", _rate(tuned["pass_rate"]), _ci(tuned), f"{tuned['passed']}/{tuned['n']}"],
                  [f"baseline = {decision.baseline_rung}", _rate(baseline["pass_rate"]), _ci(baseline),
                   f"{baseline['passed']}/{baseline['n']}"]]  # fmt: skip
    champ = decision.champion
    if champ.card:
        contenders.append([f"champion ({(champ.entry or {}).get('partition', '?')})", _rate(champ.card["pass_rate"]),
                           _ci(champ.card), f"{champ.card['passed']}/{champ.card['n']}"])  # fmt: skip
    lines += ["### Tuned vs the baseline" + (" and the champion" if champ.card else ""), "",
              markdown_table(["contender", "pass rate", "95% CI", "passed"], contenders), "",
              f"Paired vs baseline ({vb.n} cases): both right {vb.both}, only tuned {vb.only_first}, "
              f"only baseline {vb.only_second}, both wrong {vb.neither}; margin {_pts(decision.margin)}, "
              f"one-sided exact McNemar p = {decision.p_value:.4g}."]  # fmt: skip
    if decision.versus_champion:
        vc = decision.versus_champion
        lines.append(f"Paired vs champion ({vc.n} cases): only tuned {vc.only_first}, only champion "
                     f"{vc.only_second}; p = {decision.champion_p_value:.4g}.")  # fmt: skip
    elif champ.status != "none":
        lines.append(f"Champion: {champ.status}. {champ.why}")
    f = decision.forgetting
    gen_rows = [["fp32 base (serves without tuning)", _rate(general["reference"]["pass_rate"]), _ci(general["reference"])]]
    if general.get("base_as_trained"):
        gen_rows.append(["base as trained (4-bit, dequantised)", _rate(general["base_as_trained"]["pass_rate"]),
                         _ci(general["base_as_trained"])])  # fmt: skip
    gen_rows.append(["tuned (what ships)", _rate(general["candidate"]["pass_rate"]), _ci(general["candidate"])])
    lines += ["", f"### General skills ({f.total.n} items): where a drop comes from", "",
              markdown_table(["artefact", "pass rate", "95% CI"], gen_rows), "",
              markdown_table(["step", "items", "lost", "gained", "drop", "what it measures"], [
                  _pairing_row("quantisation: fp32 -> base as trained", f.quantisation, "the 4-bit base alone"),
                  _pairing_row("adapter: base as trained -> tuned", f.adapter, "the adapter's own effect"),
                  _pairing_row("total: fp32 -> tuned", f.total, "what a user of the shipped model sees"),
              ]), "",
              f"Upper one-sided {f.confidence:.0%} bound of the total drop (Newcombe paired score interval): "
              f"{_pts(f.drop_upper)}."]  # fmt: skip
    lines += ["", "### Checks", "", markdown_table(
        ["check", "result", "value", "threshold", "detail"],
        [[c.name, "pass" if c.passed else "FAIL", _num(c.value, 4), _num(c.threshold, 4), c.detail] for c in decision.checks],
        max_cell=400)]  # fmt: skip
    lines += ["", "### Cost", "", cost_md(cost)]
    artefact = tuned.get("artefact") or {}
    lines += ["", f"Scored artefact: `{artefact.get('id', '?')[:16]}` at `{artefact.get('path', '?')}`; "
              f"suite `{tuned['suite_fingerprint'][:16]}`."]  # fmt: skip
    return "\n".join(lines)


def summary(card: dict | None) -> dict | None:
    """The numbers of a card worth keeping in a decision (no per-case rows)."""
    if card is None:
        return None
    keys = ("contender", "n", "passed", "pass_rate", "ci_low", "ci_high", "mean_latency_ms", "mean_output_tokens",
            "mean_prompt_tokens", "suite_fingerprint", "artefact", "recipe")  # fmt: skip
    return {k: card.get(k) for k in keys}


def decision_record(decision: Decision, rungs: dict[str, dict], tuned: dict, general: dict[str, dict | None],
                    cost: CostReport, bases_md: str = "") -> dict[str, Any]:  # fmt: skip
    """The gate asset's value: the verdict, its numbers, the report, what was scored."""
    record = decision.to_dict()
    record["report_md"] = decision_md(decision, rungs, tuned, general, cost, bases_md=bases_md)
    record["suite_fingerprint"] = tuned["suite_fingerprint"]
    record["candidate"] = tuned["artefact"]
    record["cost"] = cost.to_dict()
    record["scores"] = {
        "ladder": {name: summary(card) for name, card in rungs.items()},
        "baseline": summary(rungs[decision.baseline_rung]),
        "tuned": summary(tuned),
        "general": {name: summary(card) for name, card in general.items()},
        "champion": summary(decision.champion.card),
    }
    return record
