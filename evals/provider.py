"""promptfoo Python provider: one contender model, answering every case of a run.

promptfoo calls ``call_api(prompt, options, context)`` once per test, in a persistent
worker that must report ready within 30 s, so nothing heavy happens at import: the model
loads on the first call.

Batching: one call per case would make a 200-case eval pay per-call generation on 2
cores. Instead, on the first call this worker reads the run's cases file (written by
``pipelines/evaluation/runner.py``; path in the provider config), generates answers for ALL
cases in batches of ``batch_size`` with left padding, one contender (prompt recipe) at a
time so the cases of a batch share their prompt's prefix, and caches them by
``<contender>/<case id>``; every call then returns the cached real output for
``context['vars']['case']``. A case that is not in the cache is generated on its own.
Reported latency per case is the batch's wall time divided by the batch size (a throughput
figure, not a single-request latency).

The conversations in the cases file are already each contender's exact messages (a rung of
the prompt ladder: strong system prompt, examples, ticket; the tuned model: the training
system prompt + ticket); ``prompt`` (the ticket text, for promptfoo's viewer) is not used.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:  # the wrapper sets PYTHONPATH; this keeps manual reruns working
    sys.path.insert(0, str(_REPO))

from pipelines.models import decoding, loading  # noqa: E402  (light: imports torch only when loading)

_RUNS: dict[str, _Run] = {}


class _Run:
    """Model, cases and cached answers of one cases file (one promptfoo run)."""

    def __init__(self, config: dict):
        self.config = config
        self.cases_file = Path(config["cases_file"])
        self.max_new_tokens = int(config["max_new_tokens"])
        self.batch_size = int(config.get("batch_size", 16))
        self.cases: dict[str, list[dict]] = {}
        self.groups: dict[str, list[str]] = {}
        with open(self.cases_file, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    self.cases[row["key"]] = row["messages"]
                    self.groups.setdefault(row["group"], []).append(row["key"])
        self.loaded: loading.LoadedModel | None = None
        self.answers: dict[str, decoding.Generation] = {}
        self.error: str | None = None

    def model(self) -> loading.LoadedModel:
        if self.loaded is None:
            self.loaded = loading.load(loading.ModelSpec.from_dict(self.config["model"]))
        return self.loaded

    def generate_all(self) -> None:
        for keys in self.groups.values():
            outputs = decoding.generate(
                self.model(), [self.cases[k] for k in keys], self.max_new_tokens, self.batch_size
            )
            self.answers.update(zip(keys, outputs))

    def answer(self, case_id: str) -> decoding.Generation:
        if case_id not in self.answers:
            [self.answers[case_id]] = decoding.generate(self.model(), [self.cases[case_id]], self.max_new_tokens, 1)
        return self.answers[case_id]


def call_api(prompt: str, options: dict, context: dict) -> dict:
    config = options.get("config") or {}
    case = ((context or {}).get("vars") or {}).get("case") or {}
    case_id = f"{case.get('contender')}/{case.get('id')}"
    key = str(config.get("cases_file"))
    try:
        run = _RUNS.get(key)
        if run is None:
            run = _RUNS[key] = _Run(config)
        if run.error:  # a failed model load is not retried 200 times
            return {"error": run.error}
        if case_id not in run.cases:
            return {"error": f"case id {case_id!r} is not in the cases file {run.cases_file}"}
        if not run.answers:
            started = time.perf_counter()
            run.generate_all()
            print(
                f"tunegate provider: {len(run.answers)} cases generated in "
                f"{time.perf_counter() - started:.1f}s (batch {run.batch_size})",
                file=sys.stderr,
            )
        out = run.answer(case_id)
    except Exception:  # reported by promptfoo as this case's error; the wrapper fails the run
        message = f"tunegate provider failed: {traceback.format_exc()}"
        if key in _RUNS:
            _RUNS[key].error = message
        return {"error": message}
    return {
        "output": out.text,
        "tokenUsage": {
            "prompt": out.prompt_tokens,
            "completion": out.output_tokens,
            "total": out.prompt_tokens + out.output_tokens,
            "numRequests": 1,
        },
        "metadata": {
            "latency_ms": out.latency_ms,
            "output_tokens": out.output_tokens,
            "batch_size": run.batch_size,
        },
    }
