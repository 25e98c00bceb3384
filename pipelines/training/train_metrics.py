"""Training metrics: ``MetricsLogPlugin`` (``pipelines/training/plugins/metrics_log.py``) appends
every Trainer log event, with its step, to ``metrics.jsonl`` in the run directory, across
resumes; ``read_metrics`` keeps the latest record per (kind, step), so the "did it learn"
guard judges the run's real last eval. Stdout is only scanned for the bitsandbytes warning."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.common.jsonl import read_jsonl
from pipelines.training.run_plan import LOG_FILE, METRICS_FILE, METRICS_PLUGIN

AVX512_WARNING = "gemv_4bit: an autograd kernel was not registered"


def record_kind(logs: dict[str, Any]) -> str:
    """What a Trainer log event is. Axolotl's per-step records also carry a running
    ``train_runtime``; only the final summary has ``train_loss`` and no ``loss``."""
    if "eval_loss" in logs:
        return "eval"
    if "loss" in logs:
        return "train"
    if "train_loss" in logs or "train_runtime" in logs:
        return "summary"
    return "other"


def metrics_record(logs: dict[str, Any], *, step: int, epoch: float | None, kind: str | None = None) -> dict[str, Any]:
    """One line of ``metrics.jsonl``: the event's kind, the optimizer step it happened at,
    the epoch and its numeric values (what ``MetricsLogPlugin`` writes)."""
    numbers = {k: v for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {**numbers, "kind": kind or record_kind(logs), "step": int(step), "epoch": epoch}


@dataclass
class TrainMetrics:
    """What a run recorded, one record per (kind, step): train steps, evals, the final
    summary, and one ``begin`` record per launch (a resume is a second launch)."""

    train: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    begins: list[dict[str, Any]] = field(default_factory=list)
    avx512_warning: bool = False

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]], *, avx512_warning: bool = False) -> TrainMetrics:
        """A resumed run logs again the steps after its checkpoint: the latest occurrence of
        each (kind, step) wins, so the final eval is the resumed run's, not an older one."""
        latest = {(record["kind"], record["step"]): record for record in records}
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for kind, step in sorted(latest):
            by_kind.setdefault(kind, []).append(latest[kind, step])
        summaries = by_kind.get("summary", [])
        return cls(
            train=by_kind.get("train", []),
            evals=by_kind.get("eval", []),
            summary=dict(summaries[-1]) if summaries else {},
            begins=by_kind.get("begin", []),
            avx512_warning=avx512_warning,
        )

    @property
    def final_step(self) -> int | None:
        steps = [r["step"] for r in self.train] + ([self.summary["step"]] if self.summary else [])
        return max(steps) if steps else None

    @property
    def eval_loss_first(self) -> float | None:
        return float(self.evals[0]["eval_loss"]) if self.evals else None

    @property
    def eval_loss_last(self) -> float | None:
        return float(self.evals[-1]["eval_loss"]) if self.evals else None

    @property
    def train_loss_last(self) -> float | None:
        return float(self.train[-1]["loss"]) if self.train else None

    @property
    def trainable_params(self) -> int | None:
        value = self.begins[-1].get("trainable_params") if self.begins else None
        return int(value) if value is not None else None

    @property
    def all_params(self) -> int | None:
        value = self.begins[-1].get("all_params") if self.begins else None
        return int(value) if value is not None else None

    @property
    def train_runtime_s(self) -> float | None:
        """Of the last launch only: a resumed Trainer restarts its clock."""
        value = self.summary.get("train_runtime")
        return float(value) if value is not None else None

    @property
    def tokens_per_second(self) -> float | None:
        """Input tokens processed per second of the last launch (evals and checkpoint saves
        included, as the user waits for them)."""
        seen, runtime = self.summary.get("num_input_tokens_seen"), self.train_runtime_s
        if seen is None or not runtime:
            return None
        before = self.begins[-1].get("num_input_tokens_seen", 0) if self.begins else 0
        return (seen - before) / runtime if seen > before else None


def read_metrics(run_dir: Path) -> TrainMetrics:
    """The run's metrics from ``metrics.jsonl`` (all launches), plus whether its log shows
    the bitsandbytes warning (a process-level warning no Trainer callback sees)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no metrics recorded: {METRICS_PLUGIN} did not run (is it in the config's "
            "`plugins`, and did it import? see train.log)"
        )
    log = Path(run_dir) / LOG_FILE
    warned = log.is_file() and AVX512_WARNING in log.read_text(encoding="utf-8", errors="replace")
    return TrainMetrics.from_records(_checked_records(path), avx512_warning=warned)


def _checked_records(path: Path) -> Iterator[dict[str, Any]]:
    for record in read_jsonl(path, line_key="_line"):
        line = record.pop("_line")
        if not isinstance(record.get("kind"), str) or not isinstance(record.get("step"), int):
            raise ValueError(f"{path}: line {line}: a metrics record needs a `kind` and an integer `step`")
        yield record


def loss_table_md(metrics: TrainMetrics, max_rows: int = 40) -> str:
    """The loss curve as a markdown table (train loss per logged step, eval loss where run)."""
    by_step: dict[int, list[str]] = {}
    for record in metrics.train:
        lr = record.get("learning_rate")
        by_step[record["step"]] = [f"{float(record['loss']):.4f}", "", f"{float(lr):.2e}" if lr is not None else ""]
    for record in metrics.evals:
        by_step.setdefault(record["step"], ["", "", ""])[1] = f"{float(record['eval_loss']):.4f}"
    ordered = sorted(by_step.items())
    if len(ordered) > max_rows:
        stride = -(-len(ordered) // max_rows)
        keep = {s for i, (s, v) in enumerate(ordered) if i % stride == 0 or v[1]} | {ordered[-1][0]}
        ordered = [(s, v) for s, v in ordered if s in keep]
    lines = ["| step | train loss | eval loss | learning rate |", "|---:|---:|---:|---:|"]
    lines += [f"| {s} | {v[0]} | {v[1]} | {v[2]} |" for s, v in ordered]
    return "\n".join(lines)
