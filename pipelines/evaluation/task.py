"""The task spec (``evals/task.yaml``): the strong system prompt, the answer's contract and
the pass rule. Also the small record helpers (``where``, ``gold_answer``, ``label_of``); turns are
read with ``pipelines.data.records.turn``.

Three output types, each with one explicit per-case pass rule (what the gate's paired test
counts):

- ``json``: an object matching ``output.schema`` whose ``match_fields`` all equal the gold
  answer's. Per-field outcomes are partial credit (field accuracy, field F1), reported,
  never the pass rule.
- ``label``: one class of a closed set (``output.labels``, or every answer of the train
  split), equal to the gold after ``normalise_label``.
- ``text``: free text whose similarity to the gold (``output.metric``, a promptfoo built-in
  offline metric) reaches ``output.threshold``."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from pipelines.common.hashing import sha256_json
from pipelines.config.base import ConfigError, Strict, read_yaml, validation_problems
from pipelines.data.records import turn

# promptfoo built-ins that score a free-text answer against a reference offline (no model,
# no network). meteor is left out: it needs WordNet data that is not installed.
TEXT_METRICS = ("rouge-n", "bleu", "gleu", "levenshtein")


class JsonOutput(Strict):
    """A JSON object; the schema is checked by promptfoo's ``is-json``."""

    type: Literal["json"] = "json"
    schema_: dict[str, Any] = Field(alias="schema")


class LabelOutput(Strict):
    """One class name, nothing else. ``labels`` omitted: the train split's answers."""

    type: Literal["label"]
    labels: list[str] | None = Field(None, min_length=2)

    @model_validator(mode="after")
    def _distinct(self) -> LabelOutput:
        if self.labels is not None:
            check_label_set(self.labels)
        return self


class TextOutput(Strict):
    """Free text scored against the gold with an offline similarity metric."""

    type: Literal["text"]
    metric: Literal[TEXT_METRICS] = "rouge-n"  # type: ignore[valid-type]
    threshold: float = Field(ge=0)

    @model_validator(mode="after")
    def _threshold_fits_metric(self) -> TextOutput:
        if self.metric == "levenshtein":
            if self.threshold != int(self.threshold):
                raise ValueError("output.threshold: levenshtein's threshold is a maximum edit distance, a whole number")
        elif self.threshold > 1:
            raise ValueError(f"output.threshold: {self.metric} scores lie in [0, 1], got {self.threshold}")
        return self


def _default_json(value: Any) -> Any:
    """``output`` without ``type`` is today's json contract (task specs written before types)."""
    if isinstance(value, dict) and "type" not in value:
        return {**value, "type": "json"}
    return value


OutputSpec = Annotated[JsonOutput | LabelOutput | TextOutput, Field(discriminator="type")]


class TaskSpec(Strict):
    """``evals/task.yaml``: the task's prompt, output contract and scoring rules."""

    name: str
    system_prompt: str
    output: OutputSpec
    match_fields: list[str] = Field(default_factory=list)
    max_new_tokens: int = Field(32, ge=1, le=2048)
    target_pass_rate: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _output_type_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and "output" in data:
            return {**data, "output": _default_json(data["output"])}
        return data

    @model_validator(mode="after")
    def _fields_fit_output(self) -> TaskSpec:
        if self.output.type != "json":
            if self.match_fields:
                raise ValueError(
                    f"match_fields: only output.type json has fields to match, this task's is {self.output.type}"
                )
            return self
        if not self.match_fields:
            raise ValueError("match_fields: output.type json needs at least one field that must equal the gold")
        known = set((self.output.schema_.get("properties") or {}).keys())
        missing = [f for f in self.match_fields if f not in known]
        if missing:
            raise ValueError(f"match_fields {missing} are not properties of output.schema")
        return self

    @property
    def pass_rule(self) -> str:
        """The per-case pass rule in words (the gate counts cases that pass it)."""
        out = self.output
        if out.type == "json":
            return f"valid JSON matching output.schema, and {', '.join(self.match_fields)} all equal to the gold"
        if out.type == "label":
            return "the answer, normalised (case, spaces, _ and -, quotes, final period), equals the gold label"
        if out.metric == "levenshtein":
            return f"edit distance to the gold answer <= {int(out.threshold)} characters"
        return f"{out.metric} similarity to the gold answer >= {out.threshold}"


def load_task(path: Path) -> TaskSpec:
    """Parse and validate the task spec; errors name the file and the key."""
    doc = read_yaml(path)
    try:
        return TaskSpec.model_validate(doc or {})
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc, TaskSpec))
        raise ConfigError(f"{path}: task spec: {problems}") from exc


def task_fingerprint(task: TaskSpec) -> str:
    return sha256_json(task.model_dump(by_alias=True))


# --------------------------------------------------------------------------- labels
_EDGES = re.compile(r"^[\s\"'`]+|[\s\"'`.!]+$")
_SEPARATORS = re.compile(r"[\s_-]+")
# The same normalisation in promptfoo's javascript check (suite.py); tests run both on the
# same strings. Nunjucks renders assertion values, so this text holds no "{{", "{%" or "{#".
NORMALISE_LABEL_JS = (
    "const norm = (s) => String(s).normalize('NFKC').toLowerCase()"
    ".replace(/^[\\s\"'`]+|[\\s\"'`.!]+$/g, '').replace(/[\\s_-]+/g, ' ').trim();"
)
MAX_DERIVED_LABELS = 1000  # more distinct answers than this is free text, not a closed set


def normalise_label(text: str) -> str:
    """How a label answer is compared: NFKC, lower case, surrounding spaces, quotes and a
    final period or ! dropped, runs of spaces, ``_`` and ``-`` as one space. So ``"Card
    arrival."`` answers ``card_arrival``; ``billing: refund`` does not answer ``refund``."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _SEPARATORS.sub(" ", _EDGES.sub("", text)).strip()


def check_label_set(labels: list[str]) -> None:
    """A closed set must be distinguishable after normalisation."""
    empty = [label for label in labels if not normalise_label(label)]
    if empty:
        raise ValueError(f"output.labels: {empty} are empty after normalisation")
    seen: dict[str, str] = {}
    clashes = []
    for label in labels:
        key = normalise_label(label)
        if key in seen:
            clashes.append(f"{seen[key]!r} and {label!r}")
        seen.setdefault(key, label)
    if clashes:
        raise ValueError(
            f"output.labels: {'; '.join(clashes)} are the same label after normalisation (case, spaces, _ -)"
        )


def derive_labels(train: list[dict], path: Path) -> list[str]:
    """The closed set when ``output.labels`` is not given: every distinct answer of the train
    split (first spelling of each normalised label), sorted."""
    seen: dict[str, str] = {}
    for record in train:
        answer = turn(record, "assistant", None)
        if answer is not None and normalise_label(answer):
            seen.setdefault(normalise_label(answer), answer.strip())
    if len(seen) < 2:
        raise ConfigError(
            f"{path}: output.type label needs at least 2 distinct answers in the train split, "
            f"found {sorted(seen.values())}: set output.labels in the task spec"
        )
    if len(seen) > MAX_DERIVED_LABELS:
        raise ConfigError(
            f"{path}: the train split has {len(seen)} distinct answers (more than "
            f"{MAX_DERIVED_LABELS}): free text, not a closed set of labels; use output.type text, "
            "or list the labels in output.labels"
        )
    return sorted(seen.values(), key=normalise_label)


# --------------------------------------------------------------------------- records
def where(path: Path, record: dict) -> str:
    return f"{path}: line {record.get('_line')} (id {record.get('id')!r})"


def gold_answer(record: dict, path: Path, task: TaskSpec) -> Any:
    """The record's assistant turn as the gold answer: parsed JSON with every match field
    (json), or the text itself (label, text)."""
    answer = turn(record, "assistant", None)
    if answer is None:
        raise ConfigError(f"{where(path, record)}: no assistant turn to score against")
    if task.output.type != "json":
        if not answer.strip():
            raise ConfigError(f"{where(path, record)}: the assistant turn (the gold {task.output.type}) is empty")
        return answer.strip() if task.output.type == "label" else answer
    try:
        gold = json.loads(answer)
    except ValueError as exc:
        raise ConfigError(
            f"{where(path, record)}: assistant turn is not JSON: {exc}; a plain-text answer needs "
            "output.type label (a closed set of classes) or text in the task spec"
        ) from exc
    missing = [f for f in task.match_fields if not isinstance(gold, dict) or f not in gold]
    if missing:
        raise ConfigError(f"{where(path, record)}: gold answer lacks fields {missing}")
    return gold


def label_of(record: dict) -> str:
    if record.get("label") is not None:
        return str(record["label"])
    return turn(record, "assistant") or ""
