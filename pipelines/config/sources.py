"""``sources.yaml``: one entry per dataset source (one ``raw_pairs/<name>`` asset each)."""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from pipelines.config.base import (
    ConfigError,
    Strict,
    allowed,
    entries,
    require_unique,
    snake_case_name,
    validation_problems,
)
from pipelines.config.paths import REPO_ROOT

SOURCE_KINDS = ("jsonl", "csv", "parquet", "hf_disk", "python")


class FieldMap(Strict):
    """Which row fields hold the conversation: either a ready ``messages`` list or
    separate system/user/assistant columns."""

    messages: str | None = None
    system: str | None = None
    user: str | None = None
    assistant: str | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> FieldMap:
        columns = (self.system, self.user, self.assistant)
        if self.messages and any(columns):
            raise ValueError("use either `messages` or `system`/`user`/`assistant`, not both")
        if not self.messages and not (self.user and self.assistant):
            raise ValueError("map `messages`, or at least both `user` and `assistant`")
        return self


def _known_encoding(name: str) -> str:
    try:
        codecs.lookup(name)
    except LookupError:
        raise ValueError(f"unknown encoding {name!r} (e.g. utf-8, utf-8-sig, cp1252, latin-1)") from None
    return name


class CsvRead(Strict):
    """``read:`` options of a csv source, passed to ``pandas.read_csv``."""

    delimiter: str | None = Field(None, min_length=1)
    sep: str | None = Field(None, min_length=1)  # pandas' name for the same thing
    encoding: str = "utf-8"
    quoting: Literal["minimal", "all", "nonnumeric", "none"] = "minimal"
    quotechar: str = Field('"', min_length=1, max_length=1)
    escapechar: str | None = Field(None, min_length=1, max_length=1)
    skiprows: int = Field(0, ge=0)

    _encoding = field_validator("encoding")(_known_encoding)

    @model_validator(mode="after")
    def _one_separator(self) -> CsvRead:
        if self.delimiter and self.sep and self.delimiter != self.sep:
            raise ValueError("set `delimiter` or `sep` (the same option), not both")
        return self


class JsonlRead(Strict):
    """``read:`` options of a jsonl source (read line by line, not through pandas)."""

    encoding: str = "utf-8"

    _encoding = field_validator("encoding")(_known_encoding)


class ParquetRead(Strict):
    """``read:`` options of a parquet source, passed to ``pandas.read_parquet``."""

    columns: list[str] | None = None


class NoRead(Strict):
    """``hf_disk`` and ``python`` sources take no ``read:`` options."""


READ_OPTIONS: dict[str, type[Strict]] = {
    "csv": CsvRead,
    "jsonl": JsonlRead,
    "parquet": ParquetRead,
    "hf_disk": NoRead,
    "python": NoRead,
}


GLOB_KINDS = ("jsonl", "csv", "parquet")  # `path:` may be a glob pattern for these


class SourceSpec(Strict):
    """One entry of ``sources.yaml``. A relative ``path`` (and the module of ``kind: python``)
    is looked up next to the sources file that declared it: a yaml kept elsewhere (via
    ``TUNEGATE_SOURCES``) carries its data along, and the repo's file behaves as before."""

    name: str
    kind: Literal["jsonl", "csv", "parquet", "hf_disk", "python"]
    path: str | None = None
    function: str | None = Field(default=None, description="dotted.path:function for kind python")
    fields: FieldMap
    label: str | None = None
    system_prompt: str | None = None
    description: str | None = None
    # A source that may legitimately yield no rows (an export that is empty some weeks):
    # warn instead of failing. Off by default: an empty source usually means a broken export.
    allow_empty: bool = False
    read: dict[str, Any] = Field(default_factory=dict, description="reader options, see READ_OPTIONS")
    _base_dir: Path | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _snake_name(cls, name: str) -> str:
        return snake_case_name(name, "source")

    @model_validator(mode="after")
    def _location(self) -> SourceSpec:
        if self.kind == "python":
            if not self.function or ":" not in self.function:
                raise ValueError("kind `python` needs `function: package.module:function_name`")
        elif not self.path:
            raise ValueError(f"kind `{self.kind}` needs `path`")
        elif self.is_glob and self.kind not in GLOB_KINDS:
            raise ValueError(f"`path` {self.path!r} is a glob pattern; kind `{self.kind}` takes one folder")
        model = READ_OPTIONS[self.kind]
        try:
            model.model_validate(self.read)
        except ValidationError as exc:
            problems = "; ".join(validation_problems(exc, prefix=("read",)))
            raise ValueError(f"{problems} (kind `{self.kind}` allows read: {allowed(model)})") from None
        return self

    def read_options(self) -> Any:
        """The validated ``read:`` block (a ``CsvRead``, ``JsonlRead``, ...)."""
        return READ_OPTIONS[self.kind].model_validate(self.read)

    @property
    def base_dir(self) -> Path:
        """The folder of the sources file (the repo when built in code, e.g. by tests)."""
        return self._base_dir or REPO_ROOT

    @property
    def is_glob(self) -> bool:
        return any(ch in (self.path or "") for ch in "*?[")

    def resolved_path(self) -> Path:
        """The data file, folder or glob pattern; relative paths are relative to ``base_dir``."""
        path = Path(self.path or "").expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def resolved_files(self) -> list[Path]:
        """The files a glob ``path`` matches, sorted (so row ids are stable); else the path."""
        path = self.resolved_path()
        if not self.is_glob:
            return [path]
        anchor = Path(path.anchor)
        return sorted(p for p in anchor.glob(str(path.relative_to(anchor))) if p.is_file())

    def where(self) -> str:
        """What to name in messages: the function, or the path as resolved."""
        return str(self.function) if self.kind == "python" else str(self.resolved_path())


def load_sources(path: Path) -> list[SourceSpec]:
    """Parse and validate ``sources.yaml``; names must be unique. An error is a short message
    (file, source, key, what is allowed) with no chained pydantic traceback: it is read at
    the top of a code-location load error, not dug out of the bottom of 70 lines."""
    specs: list[SourceSpec] = []
    for index, entry in enumerate(entries(path, "sources")):
        label = entry.get("name", f"#{index + 1}") if isinstance(entry, dict) else f"#{index + 1}"
        try:
            spec = SourceSpec.model_validate(entry)
        except ValidationError as exc:
            problems = validation_problems(exc, SourceSpec)
            also = "".join(f"\n  also: {p}" for p in problems[1:])
            raise ConfigError(
                f"{path}: source {label!r}: {problems[0]}{also}\n"
                f"  (entry {index + 1} of `sources:`; kinds: {', '.join(SOURCE_KINDS)}; "
                "see docs/sources.md)"
            ) from None
        spec._base_dir = path.resolve().parent
        specs.append(spec)
    require_unique(path, "source", [s.name for s in specs])
    return specs
