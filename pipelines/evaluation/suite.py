"""Suites: what a score card is scored on. A suite is the held-out cases plus the pass rule,
and its fingerprint hashes both: two cards are comparable only with equal fingerprints.

- the task suite: the held-out eval split (never trained on) with the task spec's checks;
- the general-skills suite (``evals/general.jsonl``, built by scripts/make_general_suite.py):
  ordinary instructions with built-in promptfoo checks, for forgetting.

Checks are promptfoo built-ins only: for a json task ``is-json`` with the task's JSON Schema
and one ``javascript`` check per matched field; for a label task one ``javascript`` check
(normalised equality with the gold); for a text task one offline similarity metric
(``rouge-n``, ``bleu``, ``gleu``, ``levenshtein``) against the gold with its threshold;
``regex``/``contains``/... for general items. ``file://`` Python assertions would start a
process per check."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipelines.common.hashing import sha256_json
from pipelines.common.jsonl import read_jsonl
from pipelines.config.base import ConfigError
from pipelines.data.records import turn
from pipelines.evaluation.task import (
    NORMALISE_LABEL_JS,
    TaskSpec,
    derive_labels,
    gold_answer,
    normalise_label,
    task_fingerprint,
    where,
)

GENERAL_ASSERTIONS = (
    "contains",
    "icontains",
    "not-contains",
    "not-icontains",
    "equals",
    "regex",
    "not-regex",
    "starts-with",
    "is-json",
    "contains-any",
    "icontains-any",
    "javascript",
)


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
    scoring: dict[str, Any] | None = None  # the task suite's output type and pass rule (scoring_of)

    @property
    def records(self) -> list[dict]:
        return [c["record"] for c in self.cases]


def task_assertions(task: TaskSpec) -> list[dict[str, Any]]:
    """Built-in promptfoo checks from the task spec; a case passes when all of them do.
    Config (field names) is embedded with json.dumps; the gold answer is read from
    ``context.vars.case`` (an object var, never templated). promptfoo renders assertion
    values with nunjucks, so no check's text holds "{{" except the gold reference below."""
    out = task.output
    if out.type == "label":
        return [
            {
                "type": "javascript",
                "metric": "label",
                "value": f"{NORMALISE_LABEL_JS}\nreturn norm(output) === norm(context.vars.case.gold);",
            }
        ]
    if out.type == "text":
        # the gold text is rendered into the value by promptfoo: "{{ case.gold }}" is a fixed
        # template and the rendered gold is not rendered again
        return [{"type": out.metric, "value": "{{ case.gold }}", "threshold": out.threshold, "metric": out.metric}]
    checks: list[dict[str, Any]] = [{"type": "is-json", "value": out.schema_, "metric": "schema"}]
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


def scoring_of(task: TaskSpec, labels: list[str] | None, unseen: list[str]) -> dict[str, Any]:
    """What the score card's task metrics need to know about the pass rule."""
    out = task.output
    scoring: dict[str, Any] = {"type": out.type, "pass_rule": task.pass_rule}
    if out.type == "json":
        scoring["fields"] = list(task.match_fields)
    elif out.type == "label":
        scoring.update(labels=labels, labels_unseen_in_train=unseen)
    else:
        scoring.update(metric=out.metric, threshold=out.threshold)
    return scoring


def sample_cases(records: list[dict], max_cases: int | None) -> list[dict]:
    """At most ``max_cases`` held-out records, the same ones on every run and for every
    contender (lowest hash of the id), kept in file order. None: all of them."""
    if max_cases is None or len(records) <= max_cases:
        return records
    keep = set(sorted(range(len(records)), key=lambda i: sha256_json(str(records[i].get("id"))))[:max_cases])
    return [r for i, r in enumerate(records) if i in keep]


def task_suite(task: TaskSpec, eval_path: Path, train_path: Path | None = None, max_cases: int | None = None) -> Suite:
    """The held-out eval split as a suite. Every contender answers the same cases.

    A label task without ``output.labels`` takes its closed set from the train split's
    answers (``train_path``); a held-out gold outside it is kept in the set and reported
    as unseen in train. ``max_cases`` scores a fixed sample of a large eval split."""
    records = list(read_jsonl(eval_path, line_key="_line"))
    if not records:
        raise ConfigError(f"{eval_path}: the eval split is empty")
    sampled = sample_cases(records, max_cases)
    cases, seen = [], set()
    for record in sampled:
        case_id = str(record.get("id"))
        if record.get("id") is None or case_id in seen:
            raise ConfigError(f"{where(eval_path, record)}: missing or duplicate id")
        seen.add(case_id)
        user = turn(record, "user", None)
        if user is None:
            raise ConfigError(f"{where(eval_path, record)}: no user turn")
        cases.append({"id": case_id, "user": user, "gold": gold_answer(record, eval_path, task), "record": record})
    labels, unseen = _label_set(task, cases, eval_path, train_path)
    scoring = scoring_of(task, labels, unseen)
    fingerprint = sha256_json(
        {
            "cases": eval_path.read_text(encoding="utf-8"),
            "task": task_fingerprint(task),
            "max_new_tokens": task.max_new_tokens,
        }
        | ({"sample": sorted(seen)} if len(sampled) < len(records) else {})
        | ({"labels": labels} if labels else {})
    )
    return Suite("task", cases, task_assertions(task), task.max_new_tokens, fingerprint, task.target_pass_rate, scoring)


def _label_set(
    task: TaskSpec, cases: list[dict], eval_path: Path, train_path: Path | None
) -> tuple[list[str] | None, list[str]]:
    """(the closed label set, held-out golds not in the train split) for a label task."""
    if task.output.type != "label":
        return None, []
    if task.output.labels is not None:
        known = {normalise_label(label) for label in task.output.labels}
        for case in cases:
            if normalise_label(case["gold"]) not in known:
                raise ConfigError(
                    f"{where(eval_path, case['record'])}: gold label {case['gold']!r} is not in the task spec's "
                    f"output.labels ({len(known)} labels): add it there, or fix the row"
                )
        return list(task.output.labels), []
    if train_path is None:
        raise ConfigError("output.labels is not set and no train split was given to derive the label set from")
    labels = derive_labels(list(read_jsonl(train_path, line_key="_line")), train_path)
    known = {normalise_label(label) for label in labels}
    unseen = sorted({c["gold"] for c in cases if normalise_label(c["gold"]) not in known}, key=normalise_label)
    if unseen:
        labels = sorted(labels + unseen, key=normalise_label)
    return labels, unseen


def answer_budget_problem(suite: Suite, count_tokens) -> str | None:
    """Why ``max_new_tokens`` is too small for the gold answers, or None. A json or label
    gold that does not fit can never pass (the answer is cut), whatever the model; a text
    gold that does not fit caps its similarity. ``count_tokens``: text -> token count
    (the model's tokenizer)."""
    lengths = [(count_tokens(turn(c["record"], "assistant") or ""), c) for c in suite.cases]
    longest, case = max(lengths, key=lambda lc: lc[0])
    if longest < suite.max_new_tokens:  # room for the end-of-turn token
        return None
    over = sum(n >= suite.max_new_tokens for n, _ in lengths)
    return (
        f"max_new_tokens is {suite.max_new_tokens} but {over} of {len(lengths)} gold answers need at least that "
        f"many tokens (longest {longest}, case {case['id']}): raise max_new_tokens in the task spec to at least "
        f"{longest + 1}"
    )


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
        bad = [
            c.get("type") if isinstance(c, dict) else c
            for c in checks
            if not isinstance(c, dict) or c.get("type") not in GENERAL_ASSERTIONS
        ]
        if bad:
            raise ConfigError(f"{at}: assertion types {bad} are not built-ins this suite allows {GENERAL_ASSERTIONS}")
        record = {"id": str(item["id"]), "messages": [{"role": "user", "content": item["prompt"]}]}
        cases.append(
            {
                "id": str(item["id"]),
                "user": item["prompt"],
                "gold": item.get("kind", item["skill"]),
                "record": record,
                "assert": [{**c, "metric": item["skill"]} for c in checks],
            }
        )
    if not cases:
        raise ConfigError(f"{path}: no general-skills items")
    if len({c["id"] for c in cases}) != len(cases):
        raise ConfigError(f"{path}: duplicate item ids")
    fingerprint = sha256_json({"items": path.read_text(encoding="utf-8"), "max_new_tokens": max_new_tokens})
    return Suite("general", cases, [], max_new_tokens, fingerprint)
