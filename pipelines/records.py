"""The record format shared by the data stage, and the one text normalisation everyone uses.

A record is exactly what Axolotl's ``chat_template`` dataset type reads, plus provenance:
``{"id", "source", "messages": [system?, user, assistant], "label"}``. Dedup and split both
compare prompts through :func:`normalize`, so "the same prompt" means one thing everywhere.
No Dagster here."""

from __future__ import annotations

import gc
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipelines.config import ConfigError

_WORD = re.compile(r"\w+")


def normalize(text: str) -> str:
    """NFKC + casefold + whitespace collapsed: full-width digits, ligatures, case and
    spacing differences must not make two prompts look different."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@lru_cache(maxsize=1024)
def normalize_system(text: str) -> str:
    """``normalize`` for system prompts: a handful of distinct strings repeated on every row."""
    return normalize(text)


def words(text: str) -> list[str]:
    """Word tokens of the normalised text; punctuation is dropped so "refund!!" ~ "refund"."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def turn(record: dict[str, Any], role: str) -> str:
    """Content of the first turn with ``role`` (empty string when absent, e.g. no system)."""
    for message in record["messages"]:
        if message["role"] == role:
            return message["content"]
    return ""


def prompt_parts(record: dict[str, Any]) -> tuple[str, str]:
    """(normalised system turn, normalised user turn)."""
    return normalize_system(turn(record, "system")), normalize(turn(record, "user"))


def prompt_key(record: dict[str, Any]) -> str:
    """Normalised system + user turn: the identity of an example for dedup and split."""
    return "\n".join(prompt_parts(record))


def canonical_answer(answer: str) -> str:
    """JSON answers compare parsed (key order and spacing ignored), others normalised."""
    try:
        return json.dumps(json.loads(answer), sort_keys=True, ensure_ascii=False)
    except ValueError:
        return normalize(answer)


def same_answer(a: str, b: str) -> bool:
    """Equal as canonical answers; identical strings (most duplicates) skip the parsing."""
    return a == b or canonical_answer(a) == canonical_answer(b)


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a stage builds millions of small acyclic
    dicts and tuples: every few thousand allocations it re-scans the whole growing heap
    (measured on 1M rows: reading went from 16 s to 11 s). Reference counting still frees
    everything as usual; the previous state is restored. Also a decorator: ``@paused_gc()``."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


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
    """Write atomically (temp file + rename) so a crashed run never leaves half a file
    that a later stage would fingerprint and train on. Returns the row count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    os.replace(tmp, path)
    return count


def markdown_table(headers: list[str], rows: Iterable[Iterable[Any]], max_cell: int = 80) -> str:
    """A markdown table for asset metadata; cells are escaped and cut so a 4000-character
    ticket or a broken byte string cannot wreck the UI."""

    def cell(value: Any) -> str:
        text = " ".join(str(value).split()).replace("|", "\\|")
        return text if len(text) <= max_cell else text[: max_cell - 1] + "…"

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
