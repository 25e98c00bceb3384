"""Turn every row of a source into a record or a quarantined row.

Nothing is lost: each input row ends up exactly once in ``records`` or ``quarantined``
(``{source, row, reason, detail, raw}``), so ``rows_in == rows_kept + rows_quarantined``."""

from __future__ import annotations

import json
from typing import Any

import orjson

from pipelines.config.sources import SourceSpec
from pipelines.data.readers import load_rows
from pipelines.data.records import paused_gc
from pipelines.data.rejects import (
    EMPTY,
    INVALID_JSON,
    MISSING_FIELD,
    NON_STRING,
    ROLE_ORDER,
    TOO_LONG,
    IngestResult,
    Rejected,
)


def _content(value: Any, role: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise Rejected(NON_STRING, f"{role} turn: expected a string, got {type(value).__name__}")
    text = value.replace("\r\n", "\n").strip()
    if not text:
        raise Rejected(EMPTY, f"{role} turn: empty")
    if len(text) > max_chars:
        raise Rejected(TOO_LONG, f"{role} turn: {len(text)} characters > max_chars {max_chars}")
    return text


def _field(row: dict[str, Any], name: str) -> Any:
    if name not in row or row[name] is None:
        raise Rejected(MISSING_FIELD, f"field {name!r} missing")
    return row[name]


def _messages(row: dict[str, Any], spec: SourceSpec) -> list[dict[str, Any]]:
    fields = spec.fields
    if fields.messages:
        messages = _field(row, fields.messages)
        if not isinstance(messages, list):
            raise Rejected(MISSING_FIELD, f"field {fields.messages!r} is not a list of turns")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise Rejected(MISSING_FIELD, f"turn {i} has no role/content")
        return messages
    turns = []
    system = row.get(fields.system) if fields.system else None
    if system not in (None, ""):
        turns.append({"role": "system", "content": system})
    turns.append({"role": "user", "content": _field(row, fields.user)})
    turns.append({"role": "assistant", "content": _field(row, fields.assistant)})
    return turns


def _label(row: dict[str, Any], answer: str, spec: SourceSpec) -> str | None:
    """The label is a row field, else a key of the JSON answer; a configured label that
    cannot be found is a missing field (the row could not be stratified or checked)."""
    if not spec.label:
        return None
    if row.get(spec.label) not in (None, ""):
        return str(row[spec.label])
    try:
        parsed = orjson.loads(answer)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get(spec.label) not in (None, ""):
        return str(parsed[spec.label])
    raise Rejected(MISSING_FIELD, f"label {spec.label!r} is neither a row field nor a key of the JSON answer")


def normalise_row(row: Any, spec: SourceSpec, number: int | str, max_chars: int) -> dict[str, Any]:
    """One validated record, or ``Rejected`` with the reason. Turns must be
    [system?, user, assistant]; the source's ``system_prompt`` fills a missing system turn."""
    if not isinstance(row, dict):
        raise Rejected(INVALID_JSON, f"row is a {type(row).__name__}, not an object")
    turns = _messages(row, spec)
    roles = [m["role"] for m in turns]
    if roles not in (["user", "assistant"], ["system", "user", "assistant"]):
        raise Rejected(ROLE_ORDER, f"roles {roles}; expected [system?, user, assistant]")
    messages = [{"role": m["role"], "content": _content(m["content"], m["role"], max_chars)} for m in turns]
    if roles[0] != "system" and spec.system_prompt:
        messages.insert(0, {"role": "system", "content": spec.system_prompt.strip()})
    return {
        "id": number if isinstance(number, str) else f"{spec.name}-{number}",
        "source": spec.name,
        "messages": messages,
        "label": _label(row, messages[-1]["content"], spec),
    }


@paused_gc()
def ingest(spec: SourceSpec, max_chars: int) -> IngestResult:
    """Every row of the source, validated: a record or a quarantined row, never dropped.
    A quarantined row is ``{source, file, row, reason, detail, raw}`` (``row``: its number in
    ``file``, a line for JSONL, a data row for tables; ``file``: the function for kind python)."""
    result = IngestResult(spec.name)
    for rid, row, raw, number, file in load_rows(spec):
        try:
            if isinstance(row, Rejected):
                raise row
            result.records.append(normalise_row(row, spec, rid, max_chars))
        except Rejected as rejected:
            result.quarantined.append(
                {
                    "source": spec.name,
                    "file": file,
                    "row": number,
                    "reason": rejected.reason,
                    "detail": rejected.detail,
                    "raw": _jsonable(raw),
                }
            )
    return result


def _jsonable(raw: Any) -> Any:
    """Quarantine keeps the raw row; values JSON cannot hold become their repr. A JSONL line
    arrives as the bytes orjson parsed, so it is valid UTF-8."""
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    try:
        json.dumps(raw, ensure_ascii=False)
        return raw
    except (TypeError, ValueError):
        if isinstance(raw, dict):
            return {str(k): _jsonable(v) for k, v in raw.items()}
        if isinstance(raw, (list, tuple)):
            return [_jsonable(v) for v in raw]
        return repr(raw)
