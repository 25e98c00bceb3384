"""Score a contender with promptfoo: build the run config, run the pinned CLI, read results.

Plain Python, no Dagster. One run = one contender on one suite (the task's held-out eval
split, or the general-skills set), in its own directory:

    <run_dir>/cases.jsonl            the exact chat messages per case (read by evals/provider.py)
    <run_dir>/promptfooconfig.yaml   written with yaml.safe_dump
    <run_dir>/results.json           promptfoo's output, parsed into a ScoreCard
    <run_dir>/promptfoo/             PROMPTFOO_CONFIG_DIR: promptfoo's DB and logs (`promptfoo view`)

Case data travels as ONE object-valued var per test (``vars.case = {id, user, gold}``).
Why: promptfoo treats string vars as templates: it expands ``{{ other_var }}`` inside them,
renders nunjucks, strips a trailing newline and loads (even executes) a value starting with
``file://``. Object vars are passed through untouched, so a ticket may contain anything.

Scoring uses promptfoo built-ins only (``is-json`` with the task's JSON Schema, one
``javascript`` check per matched field; ``contains``/``regex``/... for general items):
``file://`` Python assertions would start a process per check.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines import stats
from pipelines.config import REPO_ROOT, ConfigError, _explain, _read_yaml
from pipelines.generation import ModelSpec
from pipelines.records import read_jsonl as read_records

PROVIDER_FILE = REPO_ROOT / "evals" / "provider.py"
DEFAULT_NPM_DIR = REPO_ROOT / "evals"
GENERAL_CHECKS = ("contains", "icontains", "equals", "regex", "starts-with", "is-json")

OFFLINE_ENV = {
    "PROMPTFOO_DISABLE_TELEMETRY": "1",
    "PROMPTFOO_DISABLE_UPDATE": "1",
    "PROMPTFOO_DISABLE_SHARING": "1",
    "PROMPTFOO_DISABLE_REMOTE_GENERATION": "1",
    "PROMPTFOO_CACHE_ENABLED": "false",
    "PROMPTFOO_FAILED_TEST_EXIT_CODE": "0",  # failed cases are results, not a crash
    "NO_COLOR": "1",
    "NODE_NO_WARNINGS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class PromptfooError(RuntimeError):
    """promptfoo is missing, failed, timed out, or reported provider errors."""


# --------------------------------------------------------------------------- task spec
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
    return _sha256(json.dumps(task.model_dump(by_alias=True), sort_keys=True))


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- data
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file, each tagged with its line number (``_line``) for error messages."""
    return list(read_records(path, line_key="_line"))


def _turn(record: dict, role: str) -> str | None:
    for message in record.get("messages") or []:
        if message.get("role") == role:
            return message.get("content")
    return None


def _where(path: Path, record: dict) -> str:
    return f"{path}: line {record.get('_line')} (id {record.get('id')!r})"


def gold_answer(record: dict, path: Path, task: TaskSpec) -> dict[str, Any]:
    """The record's assistant turn, parsed: the gold answer the fields are compared with."""
    answer = _turn(record, "assistant")
    if answer is None:
        raise ConfigError(f"{_where(path, record)}: no assistant turn to score against")
    try:
        gold = json.loads(answer)
    except ValueError as exc:
        raise ConfigError(f"{_where(path, record)}: assistant turn is not JSON: {exc}") from exc
    missing = [f for f in task.match_fields if not isinstance(gold, dict) or f not in gold]
    if missing:
        raise ConfigError(f"{_where(path, record)}: gold answer lacks fields {missing}")
    return gold


def prompt_messages(record: dict) -> list[dict[str, str]]:
    """The record's conversation up to (not including) the assistant's answer: exactly
    what the tuned model saw in training before the tokens it learned to produce."""
    out = []
    for message in record["messages"]:
        if message["role"] == "assistant":
            break
        out.append({"role": message["role"], "content": message["content"]})
    return out


def label_of(record: dict) -> str:
    if record.get("label") is not None:
        return str(record["label"])
    return _turn(record, "assistant") or ""


def select_few_shot(train: list[dict], k: int) -> list[dict]:
    """k examples from the TRAIN split, deterministic and spread over labels: round-robin
    over labels (sorted), taking each label's records in file order. Covering several
    labels matters: with one label the small model copies it."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    for record in train:
        if _turn(record, "user") is not None and _turn(record, "assistant") is not None:
            by_label[label_of(record)].append(record)
    chosen: list[dict] = []
    queues = [list(by_label[label]) for label in sorted(by_label)]
    while len(chosen) < k and any(queues):
        for queue in queues:
            if queue and len(chosen) < k:
                chosen.append(queue.pop(0))
    return chosen


def baseline_messages(task: TaskSpec, shots: list[dict], record: dict) -> list[dict[str, str]]:
    """Strong prompt: the task's system prompt, few-shot pairs, then the case's user turn."""
    messages = [{"role": "system", "content": task.system_prompt}]
    for shot in shots:
        messages.append({"role": "user", "content": _turn(shot, "user")})
        messages.append({"role": "assistant", "content": _turn(shot, "assistant")})
    messages.append({"role": "user", "content": _turn(record, "user")})
    return messages


# --------------------------------------------------------------------------- suites
@dataclass
class Suite:
    """What one promptfoo run scores: cases (id, messages, display text, gold) and checks."""

    name: Literal["task", "general"]
    cases: list[dict[str, Any]]  # {"id", "messages", "user", "gold", "assert"?}
    default_assert: list[dict[str, Any]]
    max_new_tokens: int
    fingerprint: str
    target_pass_rate: float | None = None
    few_shot_ids: list[str] = field(default_factory=list)


def task_assertions(task: TaskSpec) -> list[dict[str, Any]]:
    """Built-in promptfoo checks from the task spec. Field names are embedded with
    json.dumps (config, not data); the gold answer is read from ``context.vars.case``."""
    checks: list[dict[str, Any]] = [
        {"type": "is-json", "value": task.output.schema_, "metric": "schema"}
    ]
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


def task_suite(
    task: TaskSpec,
    eval_path: Path,
    contender: Literal["baseline", "tuned"],
    train_path: Path | None = None,
    few_shot_k: int = 0,
) -> Suite:
    """The held-out eval split as a suite for one contender. The baseline's few-shot
    examples come from ``train_path`` only; the eval split is never a source of shots."""
    records = read_jsonl(eval_path)
    if not records:
        raise ConfigError(f"{eval_path}: the eval split is empty")
    shots: list[dict] = []
    if contender == "baseline" and few_shot_k:
        if train_path is None:
            raise ValueError("the baseline's few-shot examples need the train split")
        shots = select_few_shot(read_jsonl(train_path), few_shot_k)
    cases = []
    seen: set[str] = set()
    for record in records:
        case_id = str(record.get("id"))
        if record.get("id") is None or case_id in seen:
            raise ConfigError(f"{_where(eval_path, record)}: missing or duplicate id")
        seen.add(case_id)
        user = _turn(record, "user")
        if user is None:
            raise ConfigError(f"{_where(eval_path, record)}: no user turn")
        messages = (
            baseline_messages(task, shots, record)
            if contender == "baseline"
            else prompt_messages(record)
        )
        cases.append(
            {
                "id": case_id,
                "messages": messages,
                "user": user,
                "gold": gold_answer(record, eval_path, task),
            }
        )
    fingerprint = _sha256(eval_path.read_text(encoding="utf-8") + task_fingerprint(task))
    return Suite(
        name="task",
        cases=cases,
        default_assert=task_assertions(task),
        max_new_tokens=task.max_new_tokens,
        fingerprint=fingerprint,
        target_pass_rate=task.target_pass_rate,
        few_shot_ids=[str(s.get("id")) for s in shots],
    )


def general_suite(path: Path, max_new_tokens: int) -> Suite:
    """``evals/general.jsonl``: ordinary instructions with checkable answers, one built-in
    check each (``{"id","skill","prompt","check","expected"}``), asked as a plain user turn."""
    cases = []
    for item in read_jsonl(path):
        where = f"{path}: line {item['_line']}"
        missing = [k for k in ("id", "skill", "prompt", "check", "expected") if k not in item]
        if missing:
            raise ConfigError(f"{where}: missing keys {missing}")
        if item["check"] not in GENERAL_CHECKS:
            raise ConfigError(f"{where}: check {item['check']!r} not one of {GENERAL_CHECKS}")
        cases.append(
            {
                "id": str(item["id"]),
                "messages": [{"role": "user", "content": item["prompt"]}],
                "user": item["prompt"],
                "gold": item["expected"],
                "assert": [_general_check(item)],
            }
        )
    if not cases:
        raise ConfigError(f"{path}: no general-skills items")
    return Suite(
        name="general",
        cases=cases,
        default_assert=[],
        max_new_tokens=max_new_tokens,
        fingerprint=_sha256(path.read_text(encoding="utf-8") + str(max_new_tokens)),
    )


def _general_check(item: dict) -> dict[str, Any]:
    check = {"type": item["check"], "metric": item["skill"]}
    if item["expected"] is not None:  # is-json takes an optional schema
        check["value"] = item["expected"]
    return check


# --------------------------------------------------------------------------- config
def write_run(
    run_dir: Path,
    suite: Suite,
    contender: str,
    model: ModelSpec,
    batch_size: int,
    timeout_s: int,
    max_concurrency: int = 4,
) -> Path:
    """Write cases.jsonl and promptfooconfig.yaml (yaml.safe_dump, data only in vars)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cases_file = run_dir / "cases.jsonl"
    with open(cases_file, "w", encoding="utf-8") as handle:
        for case in suite.cases:
            handle.write(json.dumps({"id": case["id"], "messages": case["messages"]}) + "\n")
    tests = []
    for case in suite.cases:
        test: dict[str, Any] = {
            "description": case["id"],
            "vars": {"case": {"id": case["id"], "user": case["user"], "gold": case["gold"]}},
        }
        if case.get("assert"):
            test["assert"] = case["assert"]
        tests.append(test)
    config: dict[str, Any] = {
        "description": f"tunegate {suite.name} suite: {contender}",
        "prompts": [{"raw": "{{ case.user }}", "label": f"{suite.name}-{contender}"}],
        "providers": [
            {
                "id": f"file://{PROVIDER_FILE}",
                "label": contender,
                "config": {
                    "workers": 1,  # one model in memory; -j would start N copies
                    "timeout": int(timeout_s * 1000),  # the first call generates every case
                    "cases_file": str(cases_file.resolve()),
                    "model": _absolute_paths(model).to_dict(),  # the worker's cwd is run_dir
                    "max_new_tokens": suite.max_new_tokens,
                    "batch_size": batch_size,
                },
            }
        ],
        "tests": tests,
        "evaluateOptions": {"maxConcurrency": max_concurrency, "cache": False},
        "sharing": False,
    }
    if suite.default_assert:
        config["defaultTest"] = {"assert": suite.default_assert}
    path = run_dir / "promptfooconfig.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _absolute_paths(model: ModelSpec) -> ModelSpec:
    from dataclasses import replace

    adapter = str(Path(model.adapter_dir).resolve()) if model.adapter_dir else None
    return replace(model, base_dir=str(Path(model.base_dir).resolve()), adapter_dir=adapter)


# --------------------------------------------------------------------------- running
@dataclass(frozen=True)
class PromptfooRunner:
    """How to invoke promptfoo: the PyPI wrapper's entry point, with the pinned CLI and
    Node 22 from ``npm_dir/node_modules/.bin`` first on PATH (so the wrapper never falls
    back to ``npx -y promptfoo@latest``)."""

    cli: str = ""
    npm_dir: str = ""
    timeout_s: int = 1800
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def bin_dir(self) -> Path:
        return Path(self.npm_dir or DEFAULT_NPM_DIR) / "node_modules" / ".bin"

    def wrapper(self) -> str:
        if self.cli:
            return self.cli
        beside = Path(sys.executable).parent / "promptfoo"
        return str(beside) if beside.exists() else "promptfoo"

    def check(self) -> str:
        """Fail early, with the fix, when any piece is missing."""
        wrapper = shutil.which(self.wrapper())
        if not wrapper:
            raise PromptfooError(
                f"promptfoo wrapper {self.wrapper()!r} not found (the pinned PyPI `promptfoo` "
                "package): run `make setup`"
            )
        for name in ("promptfoo", "node"):
            if not (self.bin_dir / name).exists():
                raise PromptfooError(
                    f"{self.bin_dir / name} not found: the pinned promptfoo CLI and Node 22 are "
                    "installed by `make setup` (npm ci in evals/); refusing to let the wrapper "
                    "fetch promptfoo with npx at run time"
                )
        return wrapper

    def env(self, config_dir: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.update(OFFLINE_ENV)
        env["PATH"] = os.pathsep.join(
            [str(self.bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")]
        )
        env["PROMPTFOO_CONFIG_DIR"] = str(config_dir)
        env["PROMPTFOO_PYTHON"] = sys.executable
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in [str(REPO_ROOT), env.get("PYTHONPATH", "")] if p
        )
        env.update(self.extra_env)
        return env

    def run(self, config_path: Path, results_path: Path) -> float:
        """Run ``promptfoo eval``; return its wall time in seconds. Any failure raises
        PromptfooError with the tail of stderr."""
        wrapper = self.check()
        run_dir = config_path.parent
        results_path.unlink(missing_ok=True)
        command = [
            wrapper, "eval", "-c", str(config_path), "-o", str(results_path),
            "--no-cache", "--no-table", "--no-progress-bar", "--no-share",
        ]  # fmt: skip
        stdout_log, stderr_log = run_dir / "promptfoo.stdout.log", run_dir / "promptfoo.stderr.log"
        started = time.perf_counter()
        with open(stdout_log, "w") as out, open(stderr_log, "w") as err:
            proc = subprocess.Popen(
                command, cwd=run_dir, env=self.env(run_dir / "promptfoo"),
                stdout=out, stderr=err, start_new_session=True,
            )  # fmt: skip
            try:
                code = proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise PromptfooError(
                    f"promptfoo eval timed out after {self.timeout_s}s ({config_path}); "
                    f"stderr tail:\n{_tail(stderr_log)}"
                ) from None
        elapsed = time.perf_counter() - started
        if code != 0:
            raise PromptfooError(
                f"promptfoo eval exited with {code} ({config_path}); stderr tail:\n"
                f"{_tail(stderr_log) or _tail(stdout_log)}"
            )
        if not results_path.is_file():
            raise PromptfooError(
                f"promptfoo eval wrote no {results_path}; output tail:\n{_tail(stdout_log)}"
            )
        return elapsed


def _kill_group(proc: subprocess.Popen) -> None:
    """The CLI's Python workers are grandchildren: stop the whole session we started."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _tail(path: Path, lines: int = 40, chars: int = 4000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])[-chars:]


# --------------------------------------------------------------------------- results
def parse_results(results_path: Path, suite: Suite, contender: str) -> dict[str, Any]:
    """promptfoo's results.json -> a ScoreCard dict (see the stage contract).

    Cases come back in the suite's (eval file) order, matched by ``testIdx`` and checked
    by id. A provider error in any case fails the run: a score with errors is no score."""
    doc = json.loads(results_path.read_text(encoding="utf-8"))
    entries = doc["results"]["results"]
    by_index: dict[int, dict] = {}
    for entry in entries:
        by_index[int(entry["testIdx"])] = entry
    # failureReason 2 = ERROR (the provider failed); 1 = an assertion failed (a result)
    errors = [e for e in entries if e.get("failureReason") == 2 or not e.get("gradingResult")]
    if errors:
        raise PromptfooError(
            f"{results_path}: {len(errors)} of {len(entries)} cases errored; first error:\n"
            f"{str(errors[0]['error'])[-3000:]}"
        )
    if sorted(by_index) != list(range(len(suite.cases))):
        raise PromptfooError(
            f"{results_path}: expected results for {len(suite.cases)} cases, "
            f"got test indexes {sorted(by_index)[:10]}..."
        )
    cases = []
    metric_pass: dict[str, list[bool]] = defaultdict(list)
    for index, case in enumerate(suite.cases):
        entry = by_index[index]
        returned_id = ((entry.get("vars") or {}).get("case") or {}).get("id")
        if returned_id != case["id"]:
            raise PromptfooError(f"{results_path}: test {index} is {returned_id!r}, expected {case['id']!r}")
        response = entry.get("response") or {}
        meta = response.get("metadata") or {}
        failed = []
        for component in (entry.get("gradingResult") or {}).get("componentResults") or []:
            assertion = component.get("assertion") or {}
            name = assertion.get("metric") or assertion.get("type") or "assertion"
            metric_pass[name].append(bool(component.get("pass")))
            if not component.get("pass"):
                failed.append(name)
        cases.append(
            {
                "id": case["id"],
                "passed": bool(entry.get("success")),
                "output": response.get("output"),
                "gold": case["gold"],
                "latency_ms": float(meta.get("latency_ms", entry.get("latencyMs") or 0.0)),
                "output_tokens": int(
                    meta.get("output_tokens", (response.get("tokenUsage") or {}).get("completion") or 0)
                ),
                "failed_assertions": failed,
            }
        )
    n = len(cases)
    passed = sum(c["passed"] for c in cases)
    low, high = stats.wilson_interval(passed, n)
    return {
        "contender": contender,
        "suite": suite.name,
        "n": n,
        "passed": passed,
        "pass_rate": passed / n,
        "ci_low": low,
        "ci_high": high,
        "target_pass_rate": suite.target_pass_rate if suite.name == "task" else None,
        "assertion_pass_rates": {k: sum(v) / len(v) for k, v in metric_pass.items()},
        "mean_latency_ms": sum(c["latency_ms"] for c in cases) / n,
        "mean_output_tokens": sum(c["output_tokens"] for c in cases) / n,
        "results_path": str(results_path),
        "eval_fingerprint": suite.fingerprint,
        "cases": cases,
    }


def evaluate(
    run_dir: Path,
    suite: Suite,
    contender: str,
    model: ModelSpec,
    runner: PromptfooRunner,
    batch_size: int = 16,
    max_concurrency: int = 4,
) -> dict[str, Any]:
    """Write the run, run promptfoo, parse: the whole scoring of one contender."""
    config_path = write_run(
        run_dir, suite, contender, model, batch_size, runner.timeout_s, max_concurrency
    )
    results_path = run_dir / "results.json"
    seconds = runner.run(config_path, results_path)
    card = parse_results(results_path, suite, contender)
    card.update(
        {
            "duration_s": seconds,
            "config_path": str(config_path),
            "promptfoo_dir": str(run_dir / "promptfoo"),
            "few_shot_ids": suite.few_shot_ids,
            "model": model.to_dict(),
        }
    )
    return card


# --------------------------------------------------------------------------- reporting
def worst_failures_md(card: dict[str, Any], limit: int = 10) -> str:
    """Markdown table of failing cases, most failed checks first (invalid JSON fails all)."""
    failing = [c for c in card["cases"] if not c["passed"]]
    failing.sort(key=lambda c: (-len(c.get("failed_assertions") or []), c["id"]))
    if not failing:
        return "_no failing cases_"
    rows = ["| id | failed checks | output | gold |", "|---|---|---|---|"]
    for case in failing[:limit]:
        gold = case["gold"] if isinstance(case["gold"], str) else json.dumps(case["gold"])
        rows.append(
            f"| {_cell(case['id'])} | {_cell(', '.join(case.get('failed_assertions') or []))} "
            f"| {_cell(case['output'])} | {_cell(gold)} |"
        )
    if len(failing) > limit:
        rows.append(f"\n_{len(failing) - limit} more failing cases in the results file_")
    return "\n".join(rows)


def assertion_table_md(card: dict[str, Any]) -> str:
    rows = ["| check | pass rate |", "|---|---|"]
    rows += [f"| {_cell(k)} | {v:.1%} |" for k, v in sorted(card["assertion_pass_rates"].items())]
    return "\n".join(rows)


def _cell(value: Any, width: int = 80) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "⏎").replace("`", "'")
    return text if len(text) <= width else text[: width - 1] + "…"


def view_command(card: dict[str, Any]) -> str:
    """How to open a run in promptfoo's web viewer."""
    return (
        f"PATH={DEFAULT_NPM_DIR / 'node_modules' / '.bin'}:$PATH PROMPTFOO_DISABLE_TELEMETRY=1 "
        f"PROMPTFOO_DISABLE_UPDATE=1 PROMPTFOO_CONFIG_DIR={card['promptfoo_dir']} promptfoo view -n"
    )
