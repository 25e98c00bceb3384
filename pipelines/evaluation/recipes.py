"""Prompt recipes: how a contender turns a held-out case into the conversation it answers.

The prompt ladder (``tunegate.yaml`` ``eval.ladder``) is a list of recipes on the base
model; the tuned model uses ``as_trained``. Every recipe reads examples from the TRAIN split
only (``fewshot.py``); none ever sees another held-out case."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from pipelines.data.records import turn
from pipelines.evaluation import fewshot
from pipelines.evaluation.task import TaskSpec

RecipeKind = Literal["zero_shot", "static_few_shot", "retrieved_few_shot", "as_trained"]
NEEDS_TRAIN = ("static_few_shot", "retrieved_few_shot")


@dataclass(frozen=True)
class Recipe:
    """One way of prompting: its kind and, for few-shot kinds, how many examples."""

    kind: RecipeKind
    k: int = 0
    system_prompt: str = ""  # the task's strong prompt; empty for as_trained

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return {
            "zero_shot": "strong system prompt, no examples",
            "static_few_shot": f"strong system prompt + the same {self.k} train examples for every case",
            "retrieved_few_shot": f"strong system prompt + the {self.k} most similar train examples (TF-IDF)",
            "as_trained": "the conversation exactly as in training (the record's own system turn)",
        }[self.kind]


def for_task(kind: RecipeKind, task: TaskSpec, k: int = 0) -> Recipe:
    if kind == "as_trained":
        return Recipe("as_trained")
    return Recipe(kind, k if kind in NEEDS_TRAIN else 0, task.system_prompt)


def as_trained_messages(record: dict) -> list[dict[str, str]]:
    """The record's conversation up to (not including) the assistant's answer: exactly what
    the tuned model saw in training before the tokens it learned to produce."""
    out = []
    for message in record["messages"]:
        if message["role"] == "assistant":
            break
        out.append({"role": message["role"], "content": message["content"]})
    return out


def _with_examples(system_prompt: str, shots: list[dict], user: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system_prompt}]
    for shot in shots:
        messages.append({"role": "user", "content": turn(shot, "user")})
        messages.append({"role": "assistant", "content": turn(shot, "assistant")})
    messages.append({"role": "user", "content": user})
    return messages


def build(recipe: Recipe, records: list[dict], train: list[dict] | None) -> tuple[list[list[dict]], list[list[str]]]:
    """The conversation of every record under ``recipe``, and the ids of the train examples
    each one shows (for the score card: which examples a case saw)."""
    if recipe.kind == "as_trained":
        return [as_trained_messages(r) for r in records], [[] for _ in records]
    users = [turn(r, "user") or "" for r in records]
    if recipe.kind == "zero_shot" or recipe.k == 0:
        shots_per_case: list[list[dict]] = [[] for _ in records]
    elif train is None:
        raise ValueError(f"recipe {recipe.kind} needs the train split for its examples")
    elif recipe.kind == "static_few_shot":
        shots = fewshot.select_static(train, recipe.k)
        shots_per_case = [shots for _ in records]
    else:
        shots_per_case = fewshot.Retriever(train).nearest(users, recipe.k)
    conversations = [_with_examples(recipe.system_prompt, shots, user) for shots, user in zip(shots_per_case, users)]
    return conversations, [[str(s.get("id")) for s in shots] for shots in shots_per_case]
