"""Writing files and folders so that a crash never leaves half of one behind, splitting
process output into lines, and reading the end of a log for an error message. One helper
per job, used by every stage.

Why atomic: later stages fingerprint, train on, score or serve what earlier ones wrote; a
torn file would be read as if it were whole. Everything goes to a temp name in the same
directory and is renamed over the target at the end (atomic on POSIX)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_writer(path: Path, *, binary: bool = False) -> Iterator[IO[Any]]:
    """Yield a handle on a new temp file beside ``path`` (UTF-8 text, or bytes with
    ``binary``); when the block ends it is flushed, fsynced and renamed over ``path``. On
    any error the temp file is removed and ``path`` is left as it was. The handle's
    ``name`` is the temp file's path (to check what was written before it counts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # "x": created exclusively, with the permissions a plain open gives (umask), not mkstemp's 0600
    handle = open(tmp, "xb") if binary else open(tmp, "x", encoding="utf-8")
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (``atomic_writer``)."""
    with atomic_writer(path) as handle:
        handle.write(text)
    return Path(path)


def atomic_write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(out_dir: Path) -> Iterator[Path]:
    """Yield a temp folder beside ``out_dir``; on success it replaces ``out_dir``, on any
    error it is removed and ``out_dir`` is left as it was."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def split_output(text: str, *, redraws: bool = True) -> list[str]:
    """The non-blank segments of terminal output: lines end with ``\\n``, and a progress bar
    (tqdm) redraws its line after each ``\\r``. ``redraws`` False keeps only each line's
    last drawing, what the terminal ends up showing."""
    segments = []
    for line in text.split("\n"):
        drawings = line.split("\r")
        segments.extend(s for s in (drawings if redraws else drawings[-1:]) if s.strip())
    return segments


def tail(path: Path, lines: int = 40, chars: int | None = 4000) -> str:
    """The last lines of a log (progress-bar redraws collapsed), for error messages;
    ``chars`` None keeps every character of those lines."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no output captured)"
    out = "\n".join(split_output(text, redraws=False)[-lines:])
    return out if chars is None else out[-chars:]
