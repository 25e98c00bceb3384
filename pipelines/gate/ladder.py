"""The prompt ladder as the gate uses it: every prompt-only rung's card on the base model,
the strongest rung (the baseline a tune must beat) and, when a rung already meets the
task's target, why training is skipped. The ``baseline_scores`` asset's value."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.common.metadata import Markdown, Metadata
from pipelines.evaluation.scorecard import ScoreCard
from pipelines.gate.decision import meets_target, strongest_rung
from pipelines.gate.report import ladder_md


@dataclass(frozen=True)
class Ladder:
    baseline_rung: str  # the strongest rung (decision.strongest_rung)
    rungs: dict[str, ScoreCard]  # rung name -> its card, in the order of tunegate.yaml eval.ladder
    skip_training: str | None = None  # why no fine-tune is needed (decision.meets_target); None: train

    @classmethod
    def of(cls, rungs: dict[str, ScoreCard]) -> Ladder:
        """The ladder of these rungs' cards; IncomparableCards when they are from different suites."""
        return cls(strongest_rung(rungs), rungs, meets_target(rungs))

    @property
    def baseline(self) -> ScoreCard:
        return self.rungs[self.baseline_rung]

    def metadata(self) -> Metadata:
        return {
            "baseline_rung": self.baseline_rung,
            "pass_rate": float(round(self.baseline.pass_rate, 4)),
            "ladder": Markdown(ladder_md(self.rungs, self.baseline_rung)),
            "skip_training": self.skip_training or "no: no rung meets the target",
            "suite_fingerprint": self.baseline.suite_fingerprint,
        }
