"""What each contender costs per call, and when a fine-tune pays for itself.

Per call: prompt tokens x the input price + output tokens x the output price (measured
means from the score cards). The base model and the tuned model are the same size here, so
the per-token prices are the same and the difference is the prompt: a few-shot prompt sends
hundreds of tokens per call that a tuned model does not need. Training is paid once per
tune, plus ``retunes_per_quarter`` re-tunes (new base models, new data); the break-even
volume is the monthly call count at which the per-call saving covers that.

Prices come from ``tunegate.yaml`` ``cost:``; the defaults are examples, not facts."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pipelines.config.gate import CostSettings
from pipelines.evaluation.scorecard import ScoreCard


@dataclass(frozen=True)
class ContenderCost:
    name: str
    prompt_tokens: float
    output_tokens: float
    latency_ms: float
    per_call: float
    per_month: float  # calls_per_month x per_call (+ amortised training for the tune)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CostReport:
    contenders: list[ContenderCost]
    training_seconds: float
    training_tokens: float
    training_cost: float
    training_per_month: float  # (1 + re-tunes) per quarter, per month
    saving_per_call: float  # baseline per call - tuned per call
    break_even_calls_per_month: float | None  # None: the tune is not cheaper per call
    calls_per_month: int

    def to_dict(self) -> dict:
        return asdict(self)


def per_call(card: ScoreCard, prices: CostSettings) -> float:
    return (
        card.mean_prompt_tokens * prices.input_per_1m_tokens + card.mean_output_tokens * prices.output_per_1m_tokens
    ) / 1e6


@dataclass(frozen=True)
class TrainingTime:
    """What the training run took (from the adapter record): priced as the re-tune's cost."""

    train_runtime_s: float | None
    tokens_per_second: float | None


def cost_report(
    rungs: dict[str, ScoreCard], baseline_rung: str, tuned: ScoreCard, training: TrainingTime, prices: CostSettings
) -> CostReport:
    seconds = float(training.train_runtime_s or 0.0)
    tokens = seconds * float(training.tokens_per_second or 0.0)
    training_cost = seconds / 3600 * prices.training_per_hour
    training_per_month = training_cost * (1 + prices.retunes_per_quarter) / 3
    rows = []
    for name, card in [*rungs.items(), ("tuned", tuned)]:
        call = per_call(card, prices)
        monthly = prices.calls_per_month * call + (training_per_month if name == "tuned" else 0.0)
        rows.append(
            ContenderCost(name, card.mean_prompt_tokens, card.mean_output_tokens, card.mean_latency_ms, call, monthly)
        )
    saving = per_call(rungs[baseline_rung], prices) - per_call(tuned, prices)
    break_even = training_per_month / saving if saving > 0 else None
    return CostReport(
        rows, seconds, tokens, training_cost, training_per_month, saving, break_even, prices.calls_per_month
    )
