"""Reading a typed record back from JSON: the one ``from_dict`` helper every record uses.

The values passed between stages (score cards, the ladder, the decision, the registry
entry) are frozen dataclasses, the engines' value style (like ``RunPlan``, ``Recipe``,
``CostReport``): a misspelt field is an error where it is written, not a KeyError three
stages later, and they pickle as they are (Dagster's IO manager). Pydantic stays for what
people write (``pipelines/config``: validation with file and key in the message); these
records are built by our own code from values already checked, so they pay no validation
per construction (a card holds hundreds of cases) and are checked only where they come
back from disk. Those persisted as JSON (the card cache, ``entry.json``) have ``to_dict()``
and ``from_dict()``; ``from_dict`` goes through ``from_fields`` here, so a file that does
not parse raises ``RecordError`` naming the record and the field, never a TypeError or a
KeyError later."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class RecordError(ValueError):
    """A persisted record (a cached score card, a registry entry) that does not parse."""


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a field's annotation (containers: the container type only)."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is not None:
        return isinstance(value, origin)
    return isinstance(value, hint) if isinstance(hint, type) else True


def from_fields(cls: type[T], data: Any, **convert: Callable[[Any], Any]) -> T:
    """``cls(**data)`` for a dict read back from JSON. Keys ``cls`` does not know are
    ignored (a file written by another version); a missing field without a default, or a
    value of the wrong type, is a RecordError. ``convert`` turns the named fields into
    their records first (``cases=lambda rows: [CaseResult.from_dict(r) for r in rows]``)."""
    name = cls.__name__
    if not isinstance(data, Mapping):
        raise RecordError(f"{name}: expected a JSON object, got {type(data).__name__}")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in data]
    if missing:
        raise RecordError(f"{name}: missing {missing}")
    values = {f.name: data[f.name] for f in fields if f.name in data}
    hints = _hints(cls)
    for key, value in values.items():
        if key in convert:
            if not isinstance(value, (Mapping, list)) and value is not None:
                raise RecordError(f"{name}.{key}: expected a JSON object or list, got {type(value).__name__}")
            try:
                values[key] = convert[key](value)
            except RecordError as exc:
                raise RecordError(f"{name}.{key}: {exc}") from exc
        elif not _fits(value, hints[key]):
            raise RecordError(f"{name}.{key}: {value!r} is not a {hints[key]}")
    return cls(**values)
