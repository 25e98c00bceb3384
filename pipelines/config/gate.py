"""``tunegate.yaml`` ``gate:`` and ``cost:``: the promotion rule's thresholds and the prices."""

from __future__ import annotations

from pydantic import (
    Field,
)

from pipelines.config.base import Strict


class GateSettings(Strict):
    min_margin: float = 0.05
    alpha: float = Field(0.05, gt=0, lt=1)
    max_general_regression: float = Field(0.05, ge=0)


class CostSettings(Strict):
    """Prices for the cost table and break-even volume. The defaults are EXAMPLES of a
    small self-hosted model's prices, not facts: set your own."""

    input_per_1m_tokens: float = Field(0.10, ge=0)
    output_per_1m_tokens: float = Field(0.40, ge=0)
    training_per_hour: float = Field(2.00, ge=0)
    calls_per_month: int = Field(100_000, ge=0)
    retunes_per_quarter: float = Field(1.0, ge=0)
