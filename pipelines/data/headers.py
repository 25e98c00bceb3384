"""The header check at code-location load: a ``fields:`` mapping that names a column the
file lacks fails when the definitions load, not 200 quarantined rows later."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.config.base import ConfigError
from pipelines.config.sources import SourceSpec
from pipelines.data.readers import check_columns, jsonl_rows, read_frame
from pipelines.data.rejects import SourceError


def header_columns(spec: SourceSpec) -> list[str] | None:
    """The columns of the source's first file when that is cheap to know (csv header, parquet
    schema, first jsonl object, a saved dataset's features); None when unknown or unreadable
    (the run then reports the file itself)."""
    try:
        files = spec.resolved_files() if spec.kind != "python" else []
        if not files or not files[0].exists():
            return None
        path = files[0]
        if spec.kind == "csv":
            frame = read_frame(spec, path, nrows=0)
            return None if frame is None else [str(c) for c in frame.columns]
        if spec.kind == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        if spec.kind == "hf_disk":
            info = json.loads((path / "dataset_info.json").read_text(encoding="utf-8"))
            return list(info.get("features") or {}) or None
        for _, row, _ in jsonl_rows(spec, path):
            return list(row) if isinstance(row, dict) else None
    except (SourceError, OSError, ValueError, ImportError):
        return None
    return None


def check_headers(specs: list[SourceSpec], sources_file: Path) -> None:
    """At code-location load, a ``fields:`` mapping naming a column the file lacks fails there,
    as the README promises, not 200 quarantined rows later (only where the header is cheap)."""
    for spec in specs:
        columns = header_columns(spec)
        if columns is None:
            continue
        try:
            check_columns(spec, columns, spec.resolved_files()[0])
        except SourceError as exc:
            raise ConfigError(f"{sources_file}: {exc}") from None
