"""The champion registry: which artefact serves each task, and every promotion ever made.

``.tunegate/registry/promoted.json``: ``{"version", "champions": {task: entry},
"history": [entry, ...]}``. An entry names the promoted artefact by its content identity
(pipelines/artefacts.py) and says where it lives, which base model and data it came from,
and why it won. The gate reads the champion from here; promotion writes it atomically under
a lock, so two partitions promoting at once lose no entry (the later one holds the pointer,
both are in the history)."""

from __future__ import annotations

import fcntl
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipelines.files import atomic_write_json

REGISTRY_VERSION = 2


def read_registry(path: Path) -> dict:
    if not path.is_file():
        return {"version": REGISTRY_VERSION, "champions": {}, "history": []}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: promotion registry is not valid JSON ({exc}); restore it from history") from exc
    if not isinstance(doc, dict) or doc.get("version") != REGISTRY_VERSION or not isinstance(doc.get("champions"), dict):
        raise ValueError(
            f"{path}: not a version-{REGISTRY_VERSION} promotion registry (a `champions` object); "
            "move it aside to start a new one"
        )
    doc.setdefault("history", [])
    return doc


def champion(path: Path, task: str) -> dict | None:
    """The entry serving ``task`` now, or None."""
    return read_registry(path)["champions"].get(task)


def entry(task: str, partition: str, artefact: dict, base_model: dict, adapter: dict, record: dict) -> dict[str, Any]:
    """Everything needed to serve, reproduce or re-score the promoted model, and why it won."""
    return {
        "task": task,
        "partition": partition,
        "promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "artefact": artefact,
        "model_dir": artefact["path"],
        "base_model": {k: base_model.get(k) for k in ("name", "path", "source", "weights_sha256", "released")},
        "adapter_dir": adapter.get("adapter_dir"),
        "run_key": adapter.get("run_key"),
        "data_fingerprint": adapter.get("data_fingerprint"),
        "config_hash": adapter.get("config_hash"),
        "suite_fingerprint": record["suite_fingerprint"],
        "scores": record["scores"],
        "p_value": record["p_value"],
        "margin": record["margin"],
        "reason": record["reason"],
    }


def promote(path: Path, new: dict) -> dict:
    """Make ``new`` its task's champion. The read-modify-write is serialised with a lock
    file; the document is replaced atomically, so a crash leaves the previous one intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc = read_registry(path)
        doc["champions"][new["task"]] = new
        doc["history"].append(new)
        atomic_write_json(path, doc)
    return doc
