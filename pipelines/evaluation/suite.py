"""Suites: what a score card is scored on. A suite is the held-out cases plus the pass rule,
and its fingerprint hashes both: two cards are comparable only with equal fingerprints.

- the task suite: the held-out eval split (never trained on) with the task spec's checks;
- the general-skills suite (``evals/general.jsonl``, built by scripts/make_general_suite.py):
  ordinary instructions with built-in promptfoo checks, for forgetting.

Checks are promptfoo built-ins only (``is-json`` with the task's JSON Schema, one
``javascript`` check per matched field, ``regex``/``contains``/... for general items):
``file://`` Python assertions would start a process per check."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipelines.artefacts import sha256_json
from pipelines.config import ConfigError
from pipelines.evaluation.task import TaskSpec, gold_answer, task_fingerprint, turn, where
from pipelines.records import read_jsonl

GENERAL_ASSERTIONS = (
    "contains", "icontains", "not-contains", "not-icontains", "equals", "regex", "not-regex",
    "starts-with", "is-json", "contains-any", "icontains-any", "javascript",
)  # fmt: skip


@dataclass
class Suite:
    """Cases (``id``, ``user`` display text, ``gold``, the source ``record``, optional
    per-case ``assert``) and the checks every case gets."""

    name: Literal["task", "general"]
    cases: list[dict[str, Any]]
    default_assert: list[dict[str, Any]]
    max_new_tokens: int
    fingerprint: str
    target_pass_rate: float | None = None

    @property
    def records(self) -> list[dict]:
        return [c["record"] for c in self.cases]


def task_assertions(task: TaskSpec) -> list[dict[str, Any]]:
    """Built-in promptfoo checks from the task spec. Field names are embedded with
    json.dumps (config, not data); the gold answer is read from ``context.vars.case``."""
    checks: list[dict[str, Any]] = [{"type": "is-json", "value": task.output.schema_, "metric": "schema"}]
    for name in task.match_fields:
        key = json.dumps(name)
        checks.append(
            {
                "type": "javascript",
                "metric": name,
                "value": (
                    "let answer;\n"
                    "try { answer = JSON.parse(output); } catch (e) { return false; }\n"
                    "const gold = context.vars.case.gold;\n"
                    f"return answer !== null && typeof answer === 'object' && "
                    f"JSON.stringify(answer[{key}]) === JSON.stringify(gold[{key}]);"
                ),
            }
        )
    return checks


def task_suite(task: TaskSpec, eval_path: Path) -> Suite:
    """The held-out eval split as a suite. Every contender answers the same cases."""
    records = list(read_jsonl(eval_path, line_key="_line"))
    if not records:
        raise ConfigError(f"{eval_path}: the eval split is empty")
    cases, seen = [], set()
    for record in records:
        case_id = str(record.get("id"))
        if record.get("id") is None or case_id in seen:
            raise ConfigError(f"{where(eval_path, record)}: missing or duplicate id")
        seen.add(case_id)
        user = turn(record, "user")
        if user is None:
            raise ConfigError(f"{where(eval_path, record)}: no user turn")
        cases.append({"id": case_id, "user": user, "gold": gold_answer(record, eval_path, task), "record": record})
    fingerprint = sha256_json(
        {"cases": eval_path.read_text(encoding="utf-8"), "task": task_fingerprint(task), "max_new_tokens": task.max_new_tokens}
    )
    return Suite("task", cases, task_assertions(task), task.max_new_tokens, fingerprint, task.target_pass_rate)


def general_suite(path: Path, max_new_tokens: int) -> Suite:
    """``evals/general.jsonl``: ``{"id","skill","kind","prompt","assert":[...]}`` per line,
    asked as a plain user turn; every assertion is a promptfoo built-in, tagged with the
    item's skill so the card shows per-skill pass rates."""
    cases = []
    for item in read_jsonl(path, line_key="_line"):
        at = f"{path}: line {item['_line']}"
        missing = [k for k in ("id", "skill", "prompt", "assert") if k not in item]
        if missing:
            raise ConfigError(f"{at}: missing keys {missing}")
        checks = item["assert"]
        if not isinstance(checks, list) or not checks:
            raise ConfigError(f"{at}: `assert` must be a non-empty list of promptfoo assertions")
        bad = [c.get("type") if isinstance(c, dict) else c for c in checks
               if not isinstance(c, dict) or c.get("type") not in GENERAL_ASSERTIONS]  # fmt: skip
        if bad:
            raise ConfigError(f"{at}: assertion types {bad} are not built-ins this suite allows {GENERAL_ASSERTIONS}")
        record = {"id": str(item["id"]), "messages": [{"role": "user", "content": item["prompt"]}]}
        cases.append(
            {"id": str(item["id"]), "user": item["prompt"], "gold": item.get("kind", item["skill"]), "record": record,
             "assert": [{**c, "metric": item["skill"]} for c in checks]}
        )  # fmt: skip
    if not cases:
        raise ConfigError(f"{path}: no general-skills items")
    if len({c["id"] for c in cases}) != len(cases):
        raise ConfigError(f"{path}: duplicate item ids")
    fingerprint = sha256_json({"items": path.read_text(encoding="utf-8"), "max_new_tokens": max_new_tokens})
    return Suite("general", cases, [], max_new_tokens, fingerprint)
