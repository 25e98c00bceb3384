"""The promotion gate: decide, on evidence, whether a fine-tune ships.

Plain Python, no Dagster: every rule is a function tested directly."""

from __future__ import annotations


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
