"""Read one declared source row by row: JSONL line by line as bytes (one bad line is
quarantined, not the whole file), csv/parquet through pandas, a saved ``datasets`` folder,
or a Python function. A line is parsed with orjson (3-4x faster than ``json``); a line orjson
refuses goes through ``json``, which accepts what it accepts (NaN, lone surrogates) and names
the reason for the rest. (One difference remains: orjson reads integers beyond 64 bits as floats.)"""

from __future__ import annotations

import csv
import importlib
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from pipelines.config.sources import SourceSpec
from pipelines.data.rejects import INVALID_JSON, INVALID_UTF8, Rejected, SourceError

_BOM = b"\xef\xbb\xbf"


_UTF8 = ("utf-8", "utf8", "utf-8-sig", "utf_8", "utf_8_sig")


_QUOTING = {
    "minimal": csv.QUOTE_MINIMAL,
    "all": csv.QUOTE_ALL,
    "nonnumeric": csv.QUOTE_NONNUMERIC,
    "none": csv.QUOTE_NONE,
}


def source(spec: SourceSpec, path: Path | None = None) -> str:
    """How messages name a source: ``source 'x' (file)``."""
    return f"source {spec.name!r} ({path or spec.where()})"


def jsonl_rows(spec: SourceSpec, path: Path) -> Iterator[tuple[int, Any, Any]]:
    """(line number, parsed object | Rejected, raw text); blank lines are not rows.
    A UTF-8 byte-order mark on the first line is dropped (Excel and PowerShell write one);
    ``read: {encoding: ...}`` decodes other encodings line by line."""
    encoding = spec.read_options().encoding
    utf8 = encoding.lower() in _UTF8
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            if not raw.strip():
                continue
            if not utf8:
                try:
                    raw = raw.decode(encoding).encode("utf-8")
                except UnicodeDecodeError as exc:
                    yield (
                        number,
                        Rejected(INVALID_UTF8, f"byte {exc.start}: not {encoding}: {exc.reason}"),
                        raw.decode(encoding, "replace"),
                    )
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
    return {
        "sep": opts.delimiter or opts.sep or ",",
        "encoding": opts.encoding,
        "quoting": _QUOTING[opts.quoting],
        "quotechar": opts.quotechar,
        "escapechar": opts.escapechar,
        "skiprows": opts.skiprows or None,
        "dtype": str,
        "keep_default_na": False,
    }


def read_frame(spec: SourceSpec, path: Path, nrows: int | None = None):
    """The csv / parquet file as a DataFrame; ``None`` for a 0-byte csv (no header, no rows:
    the empty-source check names it). Every read error names the file, the source and a fix."""
    import pandas as pd

    if spec.kind == "parquet":
        try:
            return pd.read_parquet(path, columns=spec.read_options().columns)
        except Exception as exc:  # pyarrow raises several types; all mean "cannot read this file"
            raise SourceError(
                f"{source(spec, path)}: cannot read it as parquet ({type(exc).__name__}: {exc}); "
                "check that `path:` points at a parquet file and `read: {columns: ...}` names its columns"
            ) from exc
    kwargs = _csv_kwargs(spec)
    try:
        return pd.read_csv(path, nrows=nrows, **kwargs)
    except pd.errors.EmptyDataError:
        return None
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{source(spec, path)}: not {kwargs['encoding']} (byte {exc.object[exc.start : exc.start + 1]!r} at "
            f"position {exc.start}); set the file's encoding on the source, e.g. `read: {{encoding: cp1252}}`, "
            "or re-encode the file as UTF-8"
        ) from exc
    except (pd.errors.ParserError, csv.Error, ValueError) as exc:
        raise SourceError(
            f"{source(spec, path)}: cannot parse it as CSV ({' '.join(str(exc).split())}); check the file, "
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
                f"{source(spec, path)}: not a folder written by `datasets.save_to_disk` ({exc}); fix `path:`"
            ) from exc
        if isinstance(data, datasets.DatasetDict):
            raise SourceError(
                f"source {spec.name!r}: {path} holds splits {list(data)}; point `path` at one split folder"
            )
        check_columns(spec, list(data.column_names), path)
        rows = iter(data)
    else:
        frame = read_frame(spec, path)
        if frame is None:
            return
        check_columns(spec, [str(c) for c in frame.columns], path)
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


def mapped(spec: SourceSpec) -> list[str]:
    f = spec.fields
    return [c for c in (f.messages, f.system, f.user, f.assistant) if c]


def check_columns(spec: SourceSpec, columns: list[str], path: Path | None = None) -> None:
    """A mapped column absent from a whole table is a config error, not 600 bad rows. One
    column whose name holds a ';', tab or '|' is a delimiter problem, not a mapping one."""
    missing = [c for c in mapped(spec) if c not in columns]
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
    loader = jsonl_rows if spec.kind == "jsonl" else _table_rows
    for index, path in enumerate(files, start=1):
        prefix = f"{spec.name}-{index}" if spec.is_glob else spec.name
        for number, row, raw in loader(spec, path):
            yield f"{prefix}-{number}", row, raw, number, str(path)
