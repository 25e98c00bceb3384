"""``tunegate.yaml`` ``eval:``: the task spec, the general-skills suite and the prompt ladder."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    field_validator,
)

from pipelines.config.base import Strict, snake_case_name


class RungSettings(Strict):
    """One rung of the prompt ladder: a prompt-only contender on the base model."""

    name: str
    recipe: Literal["zero_shot", "static_few_shot", "retrieved_few_shot"]
    k: int = Field(3, ge=0, le=32)

    @field_validator("name")
    @classmethod
    def _snake_name(cls, name: str) -> str:
        return snake_case_name(name, "rung")


DEFAULT_LADDER = (
    RungSettings(name="zero_shot", recipe="zero_shot", k=0),
    RungSettings(name="static_few_shot", recipe="static_few_shot", k=3),
    RungSettings(name="retrieved_few_shot", recipe="retrieved_few_shot", k=3),
)


class EvalSettings(Strict):
    task_file: str = "evals/task.yaml"
    general_file: str = "evals/general.jsonl"
    ladder: tuple[RungSettings, ...] = Field(DEFAULT_LADDER, min_length=1)
    batch_size: int = Field(32, ge=1)
    timeout_s: int = 1800
    general_max_new_tokens: int = Field(32, ge=1)
    max_concurrency: int = Field(4, ge=1)
    max_cases: int | None = Field(None, ge=1)  # score a fixed sample of a large held-out split

    @field_validator("ladder")
    @classmethod
    def _unique_rungs(cls, ladder: tuple[RungSettings, ...]) -> tuple[RungSettings, ...]:
        names = [r.name for r in ladder]
        if len(set(names)) != len(names):
            raise ValueError(f"rung names must be unique, got {names}")
        return ladder
