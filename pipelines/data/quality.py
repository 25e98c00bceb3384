"""The source-level quality rules: an empty source, and a reject rate above
``validation.max_reject_rate``, each with a message naming the file and the fix."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from pipelines.config.sources import SourceSpec
from pipelines.data.headers import header_columns
from pipelines.data.readers import mapped, source
from pipelines.data.rejects import (
    EMPTY,
    INVALID_JSON,
    INVALID_UTF8,
    MISSING_FIELD,
    NON_STRING,
    ROLE_ORDER,
    TOO_LONG,
    IngestResult,
    SourceError,
)


def describe_empty(spec: SourceSpec) -> str:
    """Why a source has no rows, in the words a data engineer would look for."""
    if spec.kind == "python":
        return f"`{spec.function}` returned no rows"
    files = spec.resolved_files()
    if len(files) > 1:
        return f"none of the {len(files)} files matching {spec.resolved_path()} has a row"
    path = files[0]
    if path.is_file() and path.stat().st_size == 0:
        return f"{path} is empty (0 bytes)"
    if spec.kind == "csv":
        columns = header_columns(spec)
        return f"{path} has a header {columns} but no data rows" if columns else f"{path} has no rows"
    if spec.kind == "jsonl":
        return f"{path} has only blank lines"
    return f"{path} has 0 rows"


def check_not_empty(result: IngestResult, spec: SourceSpec) -> str | None:
    """A source with no rows fails: an emptied export would otherwise silently shrink the
    training data. With ``allow_empty: true`` it is a warning (returned) instead."""
    if result.rows_in:
        return None
    message = f"source {spec.name!r}: no rows: {describe_empty(spec)}"
    if spec.allow_empty:
        return f"{message} (allowed: `allow_empty: true`)"
    raise SourceError(
        f"{message}. Fix the file or `path:`, or set `allow_empty: true` on the source in sources.yaml "
        "if an empty export is expected"
    )


def _fix(reason: str, detail: str, spec: SourceSpec) -> str:
    """What to change for the dominant quarantine detail; `fields:` only when it is the cause."""
    if reason == MISSING_FIELD:
        if detail.startswith("label "):
            return "fix `label:` in sources.yaml (a row field, or a key of the JSON answer), or the answers"
        missing = re.match(r"field '(.+)' missing", detail)
        if missing and missing.group(1) in mapped(spec):
            return "fix `fields:` in sources.yaml (the rows have no such field), or the file"
        return "fix the file: its messages are not [{role, content}, ...] turns"
    return {
        INVALID_JSON: "fix the file: those lines are not JSON objects",
        INVALID_UTF8: "fix the file's encoding, or set `read: {encoding: ...}` on the source",
        NON_STRING: "fix the file: those turns are not text",
        EMPTY: "fix the file: those turns are empty",
        ROLE_ORDER: "fix the file: turns must be [system?, user, assistant]",
        TOO_LONG: "raise `validation.max_chars` in tunegate.yaml, or shorten those rows",
    }.get(reason, "fix the file")


def check_reject_rate(
    result: IngestResult, spec: SourceSpec, max_reject_rate: float, quarantine_path: Path | None = None
) -> None:
    """Fail a mostly-garbage source instead of training on what is left of it, naming the
    dominant *detail* (the real cause, e.g. the label key not found), its fix and where the
    rejected rows are."""
    if not result.rows_in:
        return
    rate = result.reject_rate
    if rate > max_reject_rate:
        top = ", ".join(f"{reason} x{n}" for reason, n in result.reasons.most_common(3))
        shapes = Counter((q["reason"], re.sub(r"\d+", "N", q["detail"])) for q in result.quarantined)
        (reason, shape), count = shapes.most_common(1)[0]
        example = next(
            q for q in result.quarantined if q["reason"] == reason and re.sub(r"\d+", "N", q["detail"]) == shape
        )
        where = f"the quarantine file {quarantine_path}" if quarantine_path else "the quarantine file"
        raise SourceError(
            f"{source(spec)}: {len(result.quarantined)} of {result.rows_in} rows "
            f"({rate:.0%}) quarantined, above max_reject_rate {max_reject_rate:.0%} (top reasons: {top}).\n"
            f"Most common: {reason} x{count}: {example['detail']} (e.g. row {example['row']}): "
            f"{_fix(reason, example['detail'], spec)}.\nThe rejected rows are in {where}."
        )
