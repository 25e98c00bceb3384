"""What every config schema shares: strict pydantic models, YAML reading, and the one way to
turn a pydantic error into a message that names the file, the entry and the key
(``validation_problems``, ``explain``)."""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
)

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class ConfigError(ValueError):
    """A configuration file is wrong; the message names the file, the entry and the fix."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def snake_case_name(name: str, what: str) -> str:
    """``name`` if it is snake_case (it becomes an asset key), else a ValueError naming ``what``."""
    if not NAME_RE.match(name):
        raise ValueError(f"{what} name {name!r} must be snake_case (it becomes an asset key)")
    return name


def allowed(model: type[BaseModel]) -> str:
    """The keys ``model`` takes, as written in a file (a field's alias where it has one)."""
    return ", ".join(field.alias or name for name, field in model.model_fields.items()) or "(none)"


def read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def explain(path: Path, where: str, exc: ValidationError, model: type[BaseModel] | None = None) -> ConfigError:
    """``<file>: <where>: <problem>; <problem>...`` (``validation_problems``)."""
    return ConfigError(f"{path}: {where}: {'; '.join(validation_problems(exc, model))}")


# --------------------------------------------------------------------------- pydantic errors
_NAMED = re.compile(r"^([a-z_]+(?:\.[a-z_]+)*)[: ]")  # our validators' messages start with their key


def validation_problems(
    exc: ValidationError, model: type[BaseModel] | None = None, *, prefix: tuple = (), quote: str = ""
) -> list[str]:
    """Each error of a pydantic ``ValidationError`` in a data engineer's words, the one
    formatter of every config (sources, base models, settings, task spec, Axolotl's schema):

    - ``key: problem (got X)`` (the value shown when it is a plain scalar);
    - ``key: unknown key; allowed keys: ...`` (the keys listed when ``model`` says them);
    - ``key: required key missing``;
    - a message of ours that already starts with its key (or has no key) stands alone.

    ``model``: the model validated, to name the allowed keys and to write the key as in the
    file (the tag pydantic puts into a tagged union's location is left out: ``output.labels``,
    not ``output.label.labels``). ``prefix``: where the validated data sits in the file.
    ``quote``: around the key (Axolotl's messages say `key`)."""
    return [_problem(err, model, prefix, quote) for err in exc.errors()]


def _problem(err: Any, model: type[BaseModel] | None, prefix: tuple, quote: str) -> str:
    shown, holder = _as_written(model, tuple(err["loc"]))
    loc = ".".join(str(part) for part in (*prefix, *shown))
    key = f"{quote}{loc}{quote}"
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key" + (f"; allowed keys: {allowed(holder)}" if holder is not None else "")
    if err["type"] == "missing":
        return f"{key}: required key missing"
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    if err["type"] != "value_error" and isinstance(got, (str, int, float, bool)):
        msg += f" (got {got!r})"
    named = _NAMED.match(msg)
    if not loc or (named and named.group(1).startswith(loc)):
        return msg
    return f"{key}: {msg}"


def _as_written(model: type[BaseModel] | None, loc: tuple) -> tuple[list[Any], type[BaseModel] | None]:
    """``loc`` as written in the file (tagged-union tags dropped), and the model its last key
    was looked up in (None when that is not a model, or no ``model`` was given)."""
    shown: list[Any] = []
    annotation: Any = model
    holder = None
    for part in loc:
        models = _models(annotation)
        holder = models[0] if models else None
        owner = next((m for m in models if part in _keys(m)), None)
        if owner is not None:
            holder, annotation = owner, _keys(owner)[part].annotation
        elif len(models) > 1 and any(_has_tag(m, part) for m in models):
            annotation = next(m for m in models if _has_tag(m, part))
            continue  # the union's tag: not a key of the file
        else:
            annotation = _item(annotation)
        shown.append(part)
    return shown, holder


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) is Annotated:
        return _models(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _models(arg)]
    return []


def _keys(model: type[BaseModel]) -> dict[str, Any]:
    return {key: field for name, field in model.model_fields.items() for key in {name, field.alias or name}}


def _has_tag(model: type[BaseModel], tag: Any) -> bool:
    fields = model.model_fields.values()
    return any(get_origin(f.annotation) is Literal and tag in get_args(f.annotation) for f in fields)


def _item(annotation: Any) -> Any:
    """The type of an element of a list/tuple/set, or of a value of a dict; None otherwise."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated or origin in (Union, types.UnionType):
        return next((item for arg in args if (item := _item(arg)) is not None), None)
    if origin in (list, tuple, set, frozenset) and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return None


def entries(path: Path, key: str) -> list[Any]:
    doc = read_yaml(path)
    if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
        raise ConfigError(f"{path}: expected a top-level `{key}:` list")
    return doc[key]


def require_unique(path: Path, what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"{path}: duplicate {what} name {name!r}: names must be unique")
        seen.add(name)
