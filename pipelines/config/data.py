"""``tunegate.yaml`` ``validation:``, ``dedup:`` and ``split:``: the data stage's thresholds."""

from __future__ import annotations

from pydantic import (
    Field,
)

from pipelines.config.base import Strict


class ValidationSettings(Strict):
    max_chars: int = 4000
    max_reject_rate: float = Field(0.20, ge=0, le=1)


class DedupSettings(Strict):
    near_threshold: float = Field(0.85, gt=0, le=1)
    num_perm: int = Field(128, ge=16)
    shingle_size: int = Field(3, ge=1)
    conflict_examples: int = 5


class SplitSettings(Strict):
    eval_fraction: float = Field(0.10, gt=0, lt=1)
    min_eval: int = Field(40, ge=1)
    salt: str = "tunegate-split-v1"
    # Stricter than dedup's near_threshold on purpose: after dedup no pair reaches that one,
    # so checking eval against train at the same threshold would always report 0.
    contamination_threshold: float = Field(0.70, gt=0, le=1)
    # The validation slice (what Axolotl evaluates on, and the "did it learn" guard judges) is
    # carved out of TRAIN, so the held-out eval split never steers training or its retries.
    validation_fraction: float = Field(0.10, gt=0, le=0.25)
    min_validation: int = Field(16, ge=1)
