"""The task spec (``evals/task.yaml``): the strong system prompt, the answer's contract and
the pass rule. Also the small record helpers every other evaluation module reads turns with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.artefacts import sha256_json
from pipelines.config import ConfigError, _explain, _read_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OutputSpec(_Strict):
    type: Literal["json"] = "json"
    schema_: dict[str, Any] = Field(alias="schema")


class TaskSpec(_Strict):
    """``evals/task.yaml``: the task's prompt, output contract and scoring rules."""

    name: str
    system_prompt: str
    output: OutputSpec
    match_fields: list[str] = Field(min_length=1)
    max_new_tokens: int = Field(32, ge=1, le=2048)
    target_pass_rate: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _fields_in_schema(self) -> TaskSpec:
        known = set((self.output.schema_.get("properties") or {}).keys())
        missing = [f for f in self.match_fields if f not in known]
        if missing:
            raise ValueError(f"match_fields {missing} are not properties of output.schema")
        return self


def load_task(path: Path) -> TaskSpec:
    """Parse and validate the task spec; errors name the file and the key."""
    doc = _read_yaml(path)
    try:
        return TaskSpec.model_validate(doc or {})
    except ValidationError as exc:
        raise _explain(path, "task spec", exc) from exc


def task_fingerprint(task: TaskSpec) -> str:
    return sha256_json(task.model_dump(by_alias=True))


# --------------------------------------------------------------------------- records
def turn(record: dict, role: str) -> str | None:
    """The first ``role`` turn's text of a ``{"messages": [...]}`` record."""
    for message in record.get("messages") or []:
        if message.get("role") == role:
            return message.get("content")
    return None


def where(path: Path, record: dict) -> str:
    return f"{path}: line {record.get('_line')} (id {record.get('id')!r})"


def gold_answer(record: dict, path: Path, task: TaskSpec) -> dict[str, Any]:
    """The record's assistant turn, parsed: the gold answer the fields are compared with."""
    answer = turn(record, "assistant")
    if answer is None:
        raise ConfigError(f"{where(path, record)}: no assistant turn to score against")
    try:
        gold = json.loads(answer)
    except ValueError as exc:
        raise ConfigError(f"{where(path, record)}: assistant turn is not JSON: {exc}") from exc
    missing = [f for f in task.match_fields if not isinstance(gold, dict) or f not in gold]
    if missing:
        raise ConfigError(f"{where(path, record)}: gold answer lacks fields {missing}")
    return gold


def label_of(record: dict) -> str:
    if record.get("label") is not None:
        return str(record["label"])
    return turn(record, "assistant") or ""
