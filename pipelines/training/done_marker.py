"""The run cache: a finished run (done marker, written only after success and the learning
guard) is reused instead of retrained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.common.files import atomic_write_json
from pipelines.training.run_plan import METRICS_FILE, OUTPUT_SUBDIR

DONE_MARKER = "tunegate-done.json"


def adapter_complete(adapter_dir: Path) -> bool:
    return (adapter_dir / "adapter_config.json").is_file() and any(adapter_dir.glob("adapter_model.*"))


def completed_run(run_dir: Path) -> dict[str, Any] | None:
    """The done record of a finished, guard-passed run, or None (then it must (re)train)."""
    marker = run_dir / DONE_MARKER
    if not marker.is_file() or not (run_dir / METRICS_FILE).is_file():
        return None
    record = json.loads(marker.read_text(encoding="utf-8"))
    if not adapter_complete(Path(record.get("adapter_dir", run_dir / OUTPUT_SUBDIR))):
        return None
    return record


def mark_done(run_dir: Path, record: dict[str, Any]) -> Path:
    """Written last, only after success and the learning guard: its presence = cache hit."""
    return atomic_write_json(run_dir / DONE_MARKER, record)
