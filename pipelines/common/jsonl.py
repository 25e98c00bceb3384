"""JSONL files: read with the file and line named on a bad line, written atomically."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pipelines.common.files import atomic_writer
from pipelines.config.base import ConfigError


def read_jsonl(path: Path, *, line_key: str | None = None) -> Iterator[dict[str, Any]]:
    """The objects of a JSONL file; a bad line fails naming the file and line number.
    ``line_key``: also store each object's line number under that key (for later errors)."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"{path}: line {number}: not valid JSON: {exc}") from exc
            if not isinstance(row, dict):
                raise ConfigError(f"{path}: line {number}: expected a JSON object")
            if line_key:
                row[line_key] = number
            yield row


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write atomically (``atomic_writer``) so a crashed run never leaves half a file
    that a later stage would fingerprint and train on. Returns the row count."""
    count = 0
    with atomic_writer(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
