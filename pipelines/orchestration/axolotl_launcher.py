"""Dagster Pipes child that runs ``axolotl train`` and reports what it sees.

Axolotl cannot import ``dagster_pipes``, so this thin wrapper sits between Dagster's
``PipesSubprocessClient`` and the Axolotl CLI: it starts Axolotl with a clean environment,
streams its output (to stdout, so it lands in the run's logs, and to ``train.log`` in the
run directory), logs each record ``MetricsLogPlugin`` appends to ``metrics.jsonl`` through
Pipes as it appears, and at the end reports the run's metrics (``axolotl.read_metrics``:
every launch of the run, the latest record per step) as materialization metadata. On a
non-zero exit it prints the last 50 lines and exits with Axolotl's code, which fails the asset.

Run as ``python -m pipelines.orchestration.axolotl_launcher`` with Pipes extras:
``command`` (argv list), ``run_dir``, ``cpu_qlora_patch`` (bool), ``extra_env`` (dict),
``timeout_s`` (int).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from dagster_pipes import open_dagster_pipes

from pipelines.common.files import split_output, tail
from pipelines.training import launch, run_plan, train_metrics

TAIL_LINES = 50


class _NewRecords:
    """The records appended to a JSONL file since the last call (complete lines only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.is_file() else 0  # earlier launches: not news

    def __call__(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


class _Lines:
    """The complete lines of streamed output as they arrive (``files.split_output``), each
    as its last progress-bar drawing: tqdm's ``\\r`` redraws stay in train.log, not the run log."""

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, text: str) -> list[str]:
        complete, _, rest = (self._buffer + text).rpartition("\n")
        self._buffer = rest.rpartition("\r")[2]  # only the last drawing can still be shown
        return split_output(complete, redraws=False)

    def flush(self) -> list[str]:
        rest, self._buffer = self._buffer, ""
        return split_output(rest, redraws=False)


def _describe(record: dict) -> str:
    keys = ("step", "loss", "eval_loss", "learning_rate", "grad_norm", "epoch", "train_runtime")
    return ", ".join(
        f"{k}={record[k]:.4g}" if isinstance(record[k], float) else f"{k}={record[k]}" for k in keys if k in record
    )


def _report(pipes, records: list[dict]) -> None:
    for record in records:
        if record.get("kind") in ("train", "eval", "summary"):
            pipes.log.info(f"axolotl {record['kind']}: {_describe(record)}")


def run(pipes) -> int:
    extras = pipes.extras
    run_dir = Path(extras["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    command = list(extras["command"])
    env = launch.launch_env(
        os.environ, cpu_qlora_patch=bool(extras.get("cpu_qlora_patch")), extra=extras.get("extra_env") or {}
    )
    timeout_s = float(extras.get("timeout_s") or 0)
    pipes.log.info(f"launching: {' '.join(command)} (cpu_qlora_patch={extras.get('cpu_qlora_patch')})")

    new_records = _NewRecords(run_dir / run_plan.METRICS_FILE)
    started = time.monotonic()
    log_path = run_dir / run_plan.LOG_FILE
    with log_path.open("a", encoding="utf-8") as log_file:
        log_file.write(f"\n=== tunegate launch {time.strftime('%Y-%m-%dT%H:%M:%S')}: {' '.join(command)}\n")
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

        def forward(signum, _frame):
            """Dagster interrupts the wrapper; Axolotl must stop too (it saves nothing on
            SIGINT, but the last checkpoint is there to resume from)."""
            if process.poll() is None:
                os.killpg(process.pid, signum)

        signal.signal(signal.SIGINT, forward)
        signal.signal(signal.SIGTERM, forward)
        timer = None
        if timeout_s > 0:
            timer = threading.Timer(timeout_s, lambda: forward(signal.SIGTERM, None))
            timer.start()

        lines = _Lines()
        assert process.stdout is not None
        fd = process.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            text = chunk.decode("utf-8", errors="replace")
            log_file.write(text)
            log_file.flush()
            for line in lines.feed(text):
                sys.stdout.write(line + "\n")
            _report(pipes, new_records())
        for line in lines.flush():
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
        returncode = process.wait()
        if timer is not None:
            timer.cancel()
    elapsed = time.monotonic() - started

    if returncode != 0:
        reason = "timed out" if timeout_s and elapsed >= timeout_s else f"exited with code {returncode}"
        last = tail(log_path, TAIL_LINES, chars=None)
        print(f"axolotl {reason}; last {TAIL_LINES} lines:\n{last}", file=sys.stderr)
        pipes.log.error(f"axolotl {reason}; see {log_path}")
        return returncode or 1

    _report(pipes, new_records())
    metadata = {
        "launch_wall_s": {"raw_value": round(elapsed, 1), "type": "float"},
        "train_log": {"raw_value": str(log_path), "type": "path"},
        "metrics_file": {"raw_value": str(run_dir / run_plan.METRICS_FILE), "type": "path"},
    }
    try:
        metrics = train_metrics.read_metrics(run_dir)
    except (OSError, ValueError) as exc:  # the asset reads the file again and fails naming it
        pipes.log.error(f"axolotl exited 0 but its metrics are unusable: {exc}")
    else:
        metadata.update(
            {
                "launches": {"raw_value": len(metrics.begins), "type": "int"},
                "eval_count": {"raw_value": len(metrics.evals), "type": "int"},
                "logged_steps": {"raw_value": len(metrics.train), "type": "int"},
                "eval_loss_first": {"raw_value": metrics.eval_loss_first, "type": "float"},
                "eval_loss_last": {"raw_value": metrics.eval_loss_last, "type": "float"},
            }
        )
    pipes.report_asset_materialization(metadata=metadata)
    return 0


def main() -> None:
    with open_dagster_pipes() as pipes:
        code = run(pipes)
    sys.exit(code)


if __name__ == "__main__":
    main()
