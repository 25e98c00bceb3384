"""Load one declared source and turn every row into a record or a quarantined row.

Nothing is lost: each input row ends up exactly once in ``records`` or ``quarantined``
(``{source, row, reason, detail, raw}``), so ``rows_in == rows_kept + rows_quarantined``.
Tabular formats go through pandas / ``datasets``; JSONL is read line by line as bytes so one
bad line (invalid UTF-8, invalid JSON) is quarantined instead of failing the whole file.
A line is parsed with orjson (3-4x faster than ``json``); a line orjson refuses goes through
``json``, which accepts what it accepts (NaN, lone surrogates) and names the reason for the rest.
(One difference remains: orjson reads integers beyond 64 bits as floats.)
No Dagster here."""

from __future__ import annotations

import importlib
import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipelines.config import SourceSpec
from pipelines.records import paused_gc

# Quarantine reasons (stable codes: they are counted and shown in the UI).
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
MISSING_FIELD = "missing_field"
NON_STRING = "non_string_content"
EMPTY = "empty_content"
ROLE_ORDER = "wrong_role_order"
TOO_LONG = "too_long"
REASONS = (INVALID_UTF8, INVALID_JSON, MISSING_FIELD, NON_STRING, EMPTY, ROLE_ORDER, TOO_LONG)


class SourceError(ValueError):
    """A source cannot be loaded or is mostly garbage; the message names the source and the fix."""


class Rejected(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass
class IngestResult:
    source: str
    records: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows_in(self) -> int:
        return len(self.records) + len(self.quarantined)

    @property
    def reasons(self) -> Counter:
        return Counter(q["reason"] for q in self.quarantined)


# --------------------------------------------------------------------------- loading
def _jsonl_rows(spec: SourceSpec) -> Iterator[tuple[int, Any, Any]]:
    """(line number, parsed object | Rejected, raw text); blank lines are not rows."""
    with open(spec.resolved_path(), "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                yield number, orjson.loads(raw), raw
                continue
            except orjson.JSONDecodeError:
                pass  # json decides below: it accepts NaN and lone surrogates, names the reason otherwise
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, Rejected(INVALID_UTF8, f"byte {exc.start}: {exc.reason}"), raw.decode("utf-8", "replace")
                continue
            try:
                yield number, json.loads(text), text
            except json.JSONDecodeError as exc:
                yield number, Rejected(INVALID_JSON, str(exc)), text


def _table_rows(spec: SourceSpec) -> Iterator[tuple[int, Any, Any]]:
    """Rows of csv / parquet (pandas) and hf_disk (``datasets``), numbered from 1."""
    path = spec.resolved_path()
    if spec.kind == "hf_disk":
        import datasets

        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict):
            raise SourceError(
                f"source {spec.name!r}: {path} holds splits {list(data)}; point `path` at one split folder"
            )
        rows = iter(data)
    else:
        import pandas as pd

        try:
            frame = (
                pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
                if spec.kind == "csv"
                else pd.read_parquet(path)
            )
        except UnicodeDecodeError as exc:
            raise SourceError(f"source {spec.name!r}: {path} is not UTF-8 ({exc}); re-encode the file") from exc
        _check_columns(spec, list(frame.columns))
        rows = ({k: _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records"))
    for number, row in enumerate(rows, start=1):
        yield number, row, row


def _plain(value: Any) -> Any:
    """pandas cells as plain Python: NaN -> None, numpy arrays (parquet list columns) -> lists."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "tolist") and not isinstance(value, str):
        return _plain(value.tolist())
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _python_rows(spec: SourceSpec) -> Iterator[tuple[int, Any, Any]]:
    module_name, _, func_name = (spec.function or "").partition(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise SourceError(
            f"source {spec.name!r}: cannot import `{spec.function}` ({exc}); "
            "fix `function: package.module:function_name` in sources.yaml"
        ) from exc
    for number, row in enumerate(func(), start=1):
        yield number, row, row


def _check_columns(spec: SourceSpec, columns: list[str]) -> None:
    """A mapped column absent from a whole table is a config error, not 600 bad rows."""
    mapped = [c for c in (spec.fields.messages, spec.fields.system, spec.fields.user, spec.fields.assistant) if c]
    missing = [c for c in mapped if c not in columns]
    if missing:
        raise SourceError(
            f"source {spec.name!r}: {spec.resolved_path()} has no column(s) {missing}; "
            f"columns are {columns}: fix `fields:` in sources.yaml"
        )


def load_rows(spec: SourceSpec) -> Iterator[tuple[int, Any, Any]]:
    """(row number, parsed row or ``Rejected``, raw) for every row of the source."""
    if spec.kind != "python" and not spec.resolved_path().exists():
        raise SourceError(
            f"source {spec.name!r}: data file {spec.resolved_path()} not found; "
            "create it or fix `path:` in sources.yaml"
        )
    loader = {"jsonl": _jsonl_rows, "python": _python_rows}.get(spec.kind, _table_rows)
    return loader(spec)


# --------------------------------------------------------------------------- validation
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


def normalise_row(row: Any, spec: SourceSpec, number: int, max_chars: int) -> dict[str, Any]:
    """One validated record, or ``Rejected`` with the reason. Turns must be
    [system?, user, assistant]; the source's ``system_prompt`` fills a missing system turn."""
    if not isinstance(row, dict):
        raise Rejected(INVALID_JSON, f"row is a {type(row).__name__}, not an object")
    turns = _messages(row, spec)
    roles = [m["role"] for m in turns]
    if roles not in (["user", "assistant"], ["system", "user", "assistant"]):
        raise Rejected(ROLE_ORDER, f"roles {roles}; expected [system?, user, assistant]")
    messages = [
        {"role": m["role"], "content": _content(m["content"], m["role"], max_chars)} for m in turns
    ]
    if roles[0] != "system" and spec.system_prompt:
        messages.insert(0, {"role": "system", "content": spec.system_prompt.strip()})
    return {
        "id": f"{spec.name}-{number}",
        "source": spec.name,
        "messages": messages,
        "label": _label(row, messages[-1]["content"], spec),
    }


@paused_gc()
def ingest(spec: SourceSpec, max_chars: int) -> IngestResult:
    """Every row of the source, validated: a record or a quarantined row, never dropped."""
    result = IngestResult(spec.name)
    for number, row, raw in load_rows(spec):
        try:
            if isinstance(row, Rejected):
                raise row
            result.records.append(normalise_row(row, spec, number, max_chars))
        except Rejected as rejected:
            result.quarantined.append({
                "source": spec.name, "row": number, "reason": rejected.reason,
                "detail": rejected.detail, "raw": _jsonable(raw),
            })
    return result


def check_reject_rate(result: IngestResult, spec: SourceSpec, max_reject_rate: float) -> None:
    """Fail a mostly-garbage source instead of training on what is left of it."""
    if not result.rows_in:
        return
    rate = len(result.quarantined) / result.rows_in
    if rate > max_reject_rate:
        top = ", ".join(f"{reason} x{n}" for reason, n in result.reasons.most_common(3))
        where = spec.function if spec.kind == "python" else spec.resolved_path()
        raise SourceError(
            f"source {spec.name!r} ({where}): {len(result.quarantined)} of {result.rows_in} rows "
            f"({rate:.0%}) quarantined, above max_reject_rate {max_reject_rate:.0%} (top reasons: {top}). "
            "Fix the file or its `fields:` mapping; the rejected rows are in the quarantine file."
        )


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
