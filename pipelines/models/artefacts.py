"""What an artefact *is*: a content hash over everything that decides its answers.

An artefact is a model that could serve: the base model (with a prompt recipe on top) or a
tuned model. Its identity hashes the weights, the tokenizer files, the chat template and
the load settings, so "the model that was scored" and "the model that is promoted" can be
compared byte for byte: promotion recomputes the hash and refuses on a mismatch, and score
cards are cached under it (nothing unchanged is scored twice)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.common.hashing import sha256_folder, sha256_json

# files a model folder may hold that do not change its answers
_IGNORED = {"README.md", ".gitattributes"}


def folder_digest(model_dir: Path) -> str:
    """sha256 over every file of a model folder (names and contents, sorted), except
    tunegate's own markers: weights, config, generation config and tokenizer alike."""
    model_dir = Path(model_dir)
    if not any(p.suffix in (".safetensors", ".bin") and _counts(p) for p in model_dir.rglob("*") if p.is_file()):
        raise FileNotFoundError(f"{model_dir}: no *.safetensors or *.bin weights: not a model folder")
    return sha256_folder(model_dir, _counts)


def _counts(path: Path) -> bool:
    return path.name not in _IGNORED and not path.name.startswith("tunegate-")


def identity(model_dir: Path, chat_template: str, load: dict[str, Any] | None = None) -> dict[str, Any]:
    """The artefact's identity record: ``id`` hashes the folder digest, chat template and
    load settings; the parts are kept so a mismatch can say which one differs."""
    digest = folder_digest(model_dir)
    parts = {"folder_sha256": digest, "chat_template": chat_template, "load": load or {}}
    return {"id": sha256_json(parts), "path": str(model_dir), **parts}


def verify(expected: dict[str, Any], model_dir: Path) -> None:
    """Raise unless ``model_dir`` still holds exactly the artefact ``expected`` names."""
    now = identity(model_dir, expected["chat_template"], expected.get("load"))
    if now["id"] != expected["id"]:
        raise ValueError(
            f"{model_dir}: the artefact changed since it was scored: identity {expected['id'][:16]} "
            f"(folder {expected['folder_sha256'][:16]}) was scored, the folder now hashes to "
            f"{now['id'][:16]} (folder {now['folder_sha256'][:16]}); re-score it before promoting"
        )
