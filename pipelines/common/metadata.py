"""How a record is shown in the UI, without Dagster: a tiny neutral vocabulary.

Each record passed between stages (a score card, the ladder, the decision, the registry
entry) has a ``metadata()`` method returning ``dict[str, Value]``; the assets layer turns
that into Dagster metadata with ONE converter (``assets/metadata.py``). Engines never import
Dagster (tests/test_layers.py), so they say what a value is, not how Dagster spells it:

- ``Markdown(text)``: a markdown table or report;
- ``PathValue(path)``: a file or folder on disk;
- ``JsonValue(value)``: a JSON document;
- a plain ``bool``, ``int``, ``float``, ``str`` or ``None``: shown as itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Markdown:
    text: str


@dataclass(frozen=True)
class PathValue:
    path: str


@dataclass(frozen=True)
class JsonValue:
    value: Any


Value = Markdown | PathValue | JsonValue | bool | int | float | str | None
Metadata = dict[str, Value]
