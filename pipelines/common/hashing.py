"""Stable hashes, one helper per job: of text, of JSON-able data (canonical JSON), of a file,
of a list of files and of a folder. Every cache key and content identity is one of these."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

_BLOCK = 1 << 20


def canonical_json(data: Any) -> str:
    """The one JSON spelling hashes are taken over: keys sorted, non-ASCII escaped, ``str``
    for what JSON cannot hold. The separators are json's defaults: the artefact identities
    recorded in the registry were hashed over exactly this text, and promotion re-checks them."""
    return json.dumps(data, sort_keys=True, default=str)


def sha256_text(text: str) -> str:
    """sha256 of a string (UTF-8), hex."""
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_json(data: Any) -> str:
    """A stable hash of JSON-able data: sha256 of its ``canonical_json``."""
    return sha256_text(canonical_json(data))


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, streamed."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def sha256_files(files: Iterable[Path], root: Path | None = None) -> str:
    """sha256 over each file's name and bytes, in the order given: the name (relative to
    ``root``, else the file's own name), a NUL, then the contents streamed, file after file."""
    digest = hashlib.sha256()
    for path in map(Path, files):
        digest.update(str(path.relative_to(root) if root is not None else path.name).encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(_BLOCK), b""):
                digest.update(block)
    return digest.hexdigest()


def sha256_folder(
    folder: Path,
    include: Callable[[Path], bool] = lambda path: True,
    *,
    recursive: bool = True,
    what: str = "files to hash",
) -> str:
    """``sha256_files`` over the files of ``folder`` that ``include`` keeps, sorted by path,
    named relative to the folder (``recursive`` False: its top level only). Raises
    FileNotFoundError ``<folder>: no <what>`` when ``include`` keeps none."""
    folder = Path(folder)
    files = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if p.is_file() and include(p))
    if not files:
        raise FileNotFoundError(f"{folder}: no {what}")
    return sha256_files(files, root=folder)
