"""The run cache: a finished run (done marker, written only after success and the learning
guard) is reused instead of retrained."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pipelines.common.files import atomic_write_json
from pipelines.common.typed_records import RecordError
from pipelines.training.adapter import AdapterRecord
from pipelines.training.run_plan import METRICS_FILE

log = logging.getLogger(__name__)

DONE_MARKER = "tunegate-done.json"


def adapter_complete(adapter_dir: Path) -> bool:
    return (adapter_dir / "adapter_config.json").is_file() and any(adapter_dir.glob("adapter_model.*"))


def completed_run(run_dir: Path) -> AdapterRecord | None:
    """The record of a finished, guard-passed run, or None (then it must (re)train): no marker,
    no metrics, an incomplete adapter, or a marker that does not parse (a cache miss, logged)."""
    marker = run_dir / DONE_MARKER
    if not marker.is_file() or not (run_dir / METRICS_FILE).is_file():
        return None
    try:
        record = AdapterRecord.from_dict(json.loads(marker.read_text(encoding="utf-8")))
    except (ValueError, RecordError) as exc:  # JSONDecodeError is a ValueError
        log.warning("%s does not parse (%s): retraining", marker, exc)
        return None
    if not adapter_complete(Path(record.adapter_dir)):
        return None
    return record


def mark_done(run_dir: Path, record: AdapterRecord) -> Path:
    """Written last, only after success and the learning guard: its presence = cache hit."""
    return atomic_write_json(run_dir / DONE_MARKER, record.to_dict())
