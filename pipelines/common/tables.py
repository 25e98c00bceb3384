"""Markdown tables for asset metadata and reports."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def markdown_table(headers: list[str], rows: Iterable[Iterable[Any]], max_cell: int = 80) -> str:
    """A markdown table for asset metadata; cells are escaped and cut so a 4000-character
    ticket or a broken byte string cannot wreck the UI."""

    def cell(value: Any) -> str:
        text = " ".join(str(value).split()).replace("|", "\\|")
        return text if len(text) <= max_cell else text[: max_cell - 1] + "…"

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
