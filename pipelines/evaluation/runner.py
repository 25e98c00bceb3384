"""Run promptfoo for one model: write the run's config, run the pinned CLI offline.

One run = one model answering one suite for one or more contenders (prompt recipes): the
prompt ladder is a single run on the base model, so the model loads once and promptfoo
starts once. Files, in the run's own directory:

    <run_dir>/cases.jsonl            the exact chat messages per (contender, case), read by
                                     evals/provider.py
    <run_dir>/promptfooconfig.yaml   written with yaml.safe_dump
    <run_dir>/results.json           promptfoo's output (parsed by scorecard.py)
    <run_dir>/promptfoo/             PROMPTFOO_CONFIG_DIR: promptfoo's DB and logs (`promptfoo view`)

Case data travels as ONE object-valued var per test (``vars.case = {id, contender, user,
gold}``). Why: promptfoo treats string vars as templates (it expands ``{{ x }}``, renders
nunjucks, loads and even executes a value starting with ``file://``); object vars pass
through untouched, so a ticket may contain anything."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from pipelines.common.files import atomic_write_text, tail
from pipelines.config.paths import REPO_ROOT
from pipelines.evaluation.suite import Suite
from pipelines.models.loading import ModelSpec

PROVIDER_FILE = REPO_ROOT / "evals" / "provider.py"
DEFAULT_NPM_DIR = REPO_ROOT / "evals"

OFFLINE_ENV = {
    "PROMPTFOO_DISABLE_TELEMETRY": "1",
    "PROMPTFOO_DISABLE_UPDATE": "1",
    "PROMPTFOO_DISABLE_SHARING": "1",
    "PROMPTFOO_DISABLE_REMOTE_GENERATION": "1",
    "PROMPTFOO_CACHE_ENABLED": "false",
    "PROMPTFOO_FAILED_TEST_EXIT_CODE": "0",  # failed cases are results, not a crash
    # promptfoo's per-run debug log file can fail at exit ("write after end") after the
    # results are written, turning a good run into a non-zero exit; our logs capture stderr
    "PROMPTFOO_DISABLE_DEBUG_LOG": "1",
    "NO_COLOR": "1",
    "NODE_NO_WARNINGS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class PromptfooError(RuntimeError):
    """promptfoo is missing, failed, timed out, or reported provider errors."""


def case_key(contender: str, case_id: str) -> str:
    return f"{contender}/{case_id}"


def write_run(
    run_dir: Path,
    suite: Suite,
    conversations: dict[str, list[list[dict[str, str]]]],
    model: ModelSpec,
    batch_size: int,
    timeout_s: int,
    max_concurrency: int = 4,
) -> Path:
    """Write cases.jsonl and promptfooconfig.yaml for ``conversations`` (per contender, one
    conversation per suite case, in suite order). Tests go contender by contender, so test
    index ``i`` is contender ``i // n``, case ``i % n``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cases_file = run_dir / "cases.jsonl"
    lines, tests = [], []
    for contender, convs in conversations.items():
        if len(convs) != len(suite.cases):
            raise ValueError(f"{contender}: {len(convs)} conversations for {len(suite.cases)} cases")
        for case, messages in zip(suite.cases, convs):
            lines.append(json.dumps({"key": case_key(contender, case["id"]), "group": contender, "messages": messages}))
            test: dict[str, Any] = {
                "description": f"{contender}: {case['id']}",
                "vars": {
                    "case": {"id": case["id"], "contender": contender, "user": case["user"], "gold": case["gold"]}
                },
            }
            if case.get("assert"):
                test["assert"] = case["assert"]
            tests.append(test)
    atomic_write_text(cases_file, "\n".join(lines) + "\n")
    config: dict[str, Any] = {
        "description": f"tunegate {suite.name} suite: {', '.join(conversations)}",
        "prompts": [{"raw": "{{ case.user }}", "label": suite.name}],
        "providers": [
            {
                "id": f"file://{PROVIDER_FILE}",
                "label": "tunegate",
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
    return atomic_write_text(
        run_dir / "promptfooconfig.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    )


def _absolute_paths(model: ModelSpec) -> ModelSpec:
    adapter = str(Path(model.adapter_dir).resolve()) if model.adapter_dir else None
    return replace(model, base_dir=str(Path(model.base_dir).resolve()), adapter_dir=adapter)


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
        env["PATH"] = os.pathsep.join([str(self.bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")])
        env["PROMPTFOO_CONFIG_DIR"] = str(config_dir)
        env["PROMPTFOO_PYTHON"] = sys.executable
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO_ROOT), env.get("PYTHONPATH", "")] if p)
        env.update(self.extra_env)
        return env

    def run(self, config_path: Path, results_path: Path) -> float:
        """Run ``promptfoo eval``; return its wall time in seconds. Any failure raises
        PromptfooError with the tail of its output."""
        wrapper = self.check()
        run_dir = config_path.parent
        results_path.unlink(missing_ok=True)
        command = [
            wrapper,
            "eval",
            "-c",
            str(config_path),
            "-o",
            str(results_path),
            "--no-cache",
            "--no-table",
            "--no-progress-bar",
            "--no-share",
        ]
        stdout_log, stderr_log = run_dir / "promptfoo.stdout.log", run_dir / "promptfoo.stderr.log"
        started = time.perf_counter()
        with open(stdout_log, "w") as out, open(stderr_log, "w") as err:
            proc = subprocess.Popen(
                command,
                cwd=run_dir,
                env=self.env(run_dir / "promptfoo"),
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
            try:
                code = proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise PromptfooError(
                    f"promptfoo eval timed out after {self.timeout_s}s ({config_path}); "
                    f"stderr tail:\n{tail(stderr_log)}"
                ) from None
        elapsed = time.perf_counter() - started
        if code != 0:
            raise PromptfooError(
                f"promptfoo eval exited with {code} ({config_path}); stderr tail:\n"
                f"{tail(stderr_log) if stderr_log.stat().st_size else tail(stdout_log)}"
            )
        if not results_path.is_file():
            raise PromptfooError(f"promptfoo eval wrote no {results_path}; output tail:\n{tail(stdout_log)}")
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


def view_command(promptfoo_dir: str) -> str:
    """How to open a run in promptfoo's web viewer."""
    return (
        f"PATH={DEFAULT_NPM_DIR / 'node_modules' / '.bin'}:$PATH PROMPTFOO_DISABLE_TELEMETRY=1 "
        f"PROMPTFOO_DISABLE_UPDATE=1 PROMPTFOO_CONFIG_DIR={promptfoo_dir} promptfoo view -n"
    )
