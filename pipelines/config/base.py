"""What every config schema shares: strict pydantic models, YAML reading, and one way to
turn a pydantic error into a message that names the file, the entry and the key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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


def allowed(model: type[BaseModel]) -> str:
    return ", ".join(model.model_fields) or "(none)"


def read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def explain(path: Path, where: str, exc: ValidationError) -> ConfigError:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(entry)'}: {err['msg']}" for err in exc.errors()
    )
    return ConfigError(f"{path}: {where}: {problems}")


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
