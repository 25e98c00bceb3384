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

import csv
import importlib
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pipelines.config import ConfigError, SourceSpec, load_sources
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
_BOM = b"\xef\xbb\xbf"
_UTF8 = ("utf-8", "utf8", "utf-8-sig", "utf_8", "utf_8_sig")
_QUOTING = {"minimal": csv.QUOTE_MINIMAL, "all": csv.QUOTE_ALL, "nonnumeric": csv.QUOTE_NONNUMERIC,
            "none": csv.QUOTE_NONE}


def _source(spec: SourceSpec, path: Path | None = None) -> str:
    """How messages name a source: ``source 'x' (file)``."""
    return f"source {spec.name!r} ({path or spec.where()})"


def _jsonl_rows(spec: SourceSpec, path: Path) -> Iterator[tuple[int, Any, Any]]:
    """(line number, parsed object | Rejected, raw text); blank lines are not rows.
    A UTF-8 byte-order mark on the first line is dropped (Excel and PowerShell write one);
    ``read: {encoding: ...}`` decodes other encodings line by line."""
    encoding = spec.read_options().encoding
    utf8 = encoding.lower() in _UTF8
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            if not raw.strip():
                continue
            if not utf8:
                try:
                    raw = raw.decode(encoding).encode("utf-8")
                except UnicodeDecodeError as exc:
                    yield number, Rejected(INVALID_UTF8, f"byte {exc.start}: not {encoding}: {exc.reason}"), \
                        raw.decode(encoding, "replace")
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


def _csv_kwargs(spec: SourceSpec) -> dict[str, Any]:
    """``read:`` options of a csv source as ``pandas.read_csv`` arguments."""
    opts = spec.read_options()
    return {"sep": opts.delimiter or opts.sep or ",", "encoding": opts.encoding,
            "quoting": _QUOTING[opts.quoting], "quotechar": opts.quotechar,
            "escapechar": opts.escapechar, "skiprows": opts.skiprows or None,
            "dtype": str, "keep_default_na": False}


def _read_frame(spec: SourceSpec, path: Path, nrows: int | None = None):
    """The csv / parquet file as a DataFrame; ``None`` for a 0-byte csv (no header, no rows:
    the empty-source check names it). Every read error names the file, the source and a fix."""
    import pandas as pd

    if spec.kind == "parquet":
        try:
            return pd.read_parquet(path, columns=spec.read_options().columns)
        except Exception as exc:  # pyarrow raises several types; all mean "cannot read this file"
            raise SourceError(
                f"{_source(spec, path)}: cannot read it as parquet ({type(exc).__name__}: {exc}); "
                "check that `path:` points at a parquet file and `read: {columns: ...}` names its columns"
            ) from exc
    kwargs = _csv_kwargs(spec)
    try:
        return pd.read_csv(path, nrows=nrows, **kwargs)
    except pd.errors.EmptyDataError:
        return None
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{_source(spec, path)}: not {kwargs['encoding']} (byte {exc.object[exc.start:exc.start + 1]!r} at "
            f"position {exc.start}); set the file's encoding on the source, e.g. `read: {{encoding: cp1252}}`, "
            "or re-encode the file as UTF-8"
        ) from exc
    except (pd.errors.ParserError, csv.Error, ValueError) as exc:
        raise SourceError(
            f"{_source(spec, path)}: cannot parse it as CSV ({' '.join(str(exc).split())}); check the file, "
            f"or its `read:` options (delimiter {kwargs['sep']!r}, quoting, quotechar, escapechar)"
        ) from exc


def _table_rows(spec: SourceSpec, path: Path) -> Iterator[tuple[int, Any, Any]]:
    """Rows of csv / parquet (pandas) and hf_disk (``datasets``), numbered from 1."""
    if spec.kind == "hf_disk":
        import datasets

        try:
            data = datasets.load_from_disk(str(path))
        except Exception as exc:
            raise SourceError(
                f"{_source(spec, path)}: not a folder written by `datasets.save_to_disk` ({exc}); fix `path:`"
            ) from exc
        if isinstance(data, datasets.DatasetDict):
            raise SourceError(
                f"source {spec.name!r}: {path} holds splits {list(data)}; point `path` at one split folder"
            )
        _check_columns(spec, list(data.column_names), path)
        rows = iter(data)
    else:
        frame = _read_frame(spec, path)
        if frame is None:
            return
        _check_columns(spec, [str(c) for c in frame.columns], path)
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


def import_function(spec: SourceSpec):
    """The ``kind: python`` function. Its module may sit next to the sources file: that folder
    is put on ``sys.path`` for this import only (a yaml kept outside the repo brings its code)."""
    module_name, _, func_name = (spec.function or "").partition(":")
    folder = str(spec.base_dir)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        return getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise SourceError(
            f"source {spec.name!r}: cannot import `{spec.function}` ({exc}); the module must be next to the "
            f"sources file ({folder}) or an installed package: fix `function: package.module:function_name`"
        ) from exc
    finally:
        if added:
            sys.path.remove(folder)


def _python_rows(spec: SourceSpec) -> Iterator[tuple[int, Any, Any]]:
    func = import_function(spec)
    try:
        for number, row in enumerate(func(), start=1):
            yield number, row, row
    except Exception as exc:
        raise SourceError(
            f"source {spec.name!r}: `{spec.function}` raised {type(exc).__name__}: {exc}; fix the function"
        ) from exc


def _mapped(spec: SourceSpec) -> list[str]:
    f = spec.fields
    return [c for c in (f.messages, f.system, f.user, f.assistant) if c]


def _check_columns(spec: SourceSpec, columns: list[str], path: Path | None = None) -> None:
    """A mapped column absent from a whole table is a config error, not 600 bad rows. One
    column whose name holds a ';', tab or '|' is a delimiter problem, not a mapping one."""
    missing = [c for c in _mapped(spec) if c not in columns]
    if not missing:
        return
    where = path or spec.resolved_path()
    if spec.kind == "csv" and len(columns) == 1:
        found = next((d for d in (";", "\t", "|") if d in columns[0]), None)
        if found:
            sep = _csv_kwargs(spec)["sep"]
            raise SourceError(
                f"source {spec.name!r}: {where} was read as one column {columns[0]!r} with delimiter {sep!r}; "
                f"it looks {found!r}-separated: set `read: {{delimiter: {found!r}}}` on the source in sources.yaml"
            )
    raise SourceError(
        f"source {spec.name!r}: {where} has no column(s) {missing}; "
        f"columns are {columns}: fix `fields:` in sources.yaml"
    )


def _files(spec: SourceSpec) -> list[Path]:
    files = spec.resolved_files()
    if spec.is_glob and not files:
        raise SourceError(
            f"source {spec.name!r}: no file matches `path: {spec.path}` ({spec.resolved_path()}); "
            "fix `path:` in sources.yaml (relative paths are relative to the sources file's folder)"
        )
    if not spec.is_glob and not files[0].exists():
        raise SourceError(
            f"source {spec.name!r}: data file {files[0]} not found; create it or fix `path:` in sources.yaml "
            f"(relative paths are relative to the sources file's folder, {spec.base_dir})"
        )
    return files


def load_rows(spec: SourceSpec) -> Iterator[tuple[str, Any, Any, int, str]]:
    """(record id, parsed row or ``Rejected``, raw, row number in its file, file) for every row.
    Ids are ``<source>-<row>``; a glob source's are ``<source>-<file #>-<row>`` (files sorted)."""
    if spec.kind == "python":
        for number, row, raw in _python_rows(spec):
            yield f"{spec.name}-{number}", row, raw, number, str(spec.function)
        return
    files = _files(spec)
    loader = _jsonl_rows if spec.kind == "jsonl" else _table_rows
    for index, path in enumerate(files, start=1):
        prefix = f"{spec.name}-{index}" if spec.is_glob else spec.name
        for number, row, raw in loader(spec, path):
            yield f"{prefix}-{number}", row, raw, number, str(path)


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
            frame = _read_frame(spec, path, nrows=0)
            return None if frame is None else [str(c) for c in frame.columns]
        if spec.kind == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        if spec.kind == "hf_disk":
            info = json.loads((path / "dataset_info.json").read_text(encoding="utf-8"))
            return list(info.get("features") or {}) or None
        for _, row, _ in _jsonl_rows(spec, path):
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
            _check_columns(spec, columns, spec.resolved_files()[0])
        except SourceError as exc:
            raise ConfigError(f"{sources_file}: {exc}") from None


def load_checked_sources(sources_file: Path) -> list[SourceSpec]:
    """``config.load_sources`` plus the header check: what the code location loads."""
    specs = load_sources(sources_file)
    check_headers(specs, sources_file)
    return specs


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


def normalise_row(row: Any, spec: SourceSpec, number: int | str, max_chars: int) -> dict[str, Any]:
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
            result.quarantined.append({
                "source": spec.name, "file": file, "row": number, "reason": rejected.reason,
                "detail": rejected.detail, "raw": _jsonable(raw),
            })
    return result


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
        if missing and missing.group(1) in _mapped(spec):
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
    rate = len(result.quarantined) / result.rows_in
    if rate > max_reject_rate:
        top = ", ".join(f"{reason} x{n}" for reason, n in result.reasons.most_common(3))
        shapes = Counter((q["reason"], re.sub(r"\d+", "N", q["detail"])) for q in result.quarantined)
        (reason, shape), count = shapes.most_common(1)[0]
        example = next(q for q in result.quarantined
                       if q["reason"] == reason and re.sub(r"\d+", "N", q["detail"]) == shape)
        where = f"the quarantine file {quarantine_path}" if quarantine_path else "the quarantine file"
        raise SourceError(
            f"{_source(spec)}: {len(result.quarantined)} of {result.rows_in} rows "
            f"({rate:.0%}) quarantined, above max_reject_rate {max_reject_rate:.0%} (top reasons: {top}).\n"
            f"Most common: {reason} x{count}: {example['detail']} (e.g. row {example['row']}): "
            f"{_fix(reason, example['detail'], spec)}.\nThe rejected rows are in {where}."
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
