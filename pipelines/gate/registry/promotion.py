"""Promotion and rollback. Promotion registers the version, then moves the alias: if the
move fails, the champion is unchanged, and the version (removed when the store is still
reachable) is reused by the retry, never duplicated. A lock file serialises promotions into
the local SQLite store (one writer at a time); a server serialises them itself."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from filelock import FileLock

from pipelines.common import tracking
from pipelines.gate.registry.entries import (
    CHAMPION,
    ENTRY_FILE,
    FILES,
    RegistryEntry,
    RegistryError,
    version_tags,
)
from pipelines.gate.registry.reading import alias_target, code, read_entry, registered
from pipelines.models.materialize import BaseModelInfo


@contextlib.contextmanager
def _serialised(store: tracking.Store) -> Iterator[None]:
    """One promotion at a time into a local store (SQLite has one writer)."""
    if not store.is_local:
        yield
        return
    lock_path = store.artifact_root.parent / "registry.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path):  # flock where there is one, a Windows lock on Windows
        yield


def _ensure_model(client, task: str) -> None:
    from mlflow.exceptions import MlflowException

    if registered(client, task) is not None:
        return
    try:
        client.create_registered_model(
            task, tags=tracking.tags(task=task), description=f"tunegate champions of the task {task!r}"
        )
    except MlflowException as exc:
        if code(exc) != "RESOURCE_ALREADY_EXISTS":  # a concurrent promotion created it
            raise


def _version_of(client, task: str, artefact_id: str):
    """The version already registered for this artefact (a retry, or a re-promotion)."""
    found = client.search_model_versions(f"name='{task}' and tag.`{tracking.TAG}artefact_id`='{artefact_id}'")
    return min(found, key=lambda v: int(v.version)) if found else None


def _log_files(client, new: RegistryEntry, base_model: BaseModelInfo) -> str:
    """Upload the judged artefact to the decision run; the version's source URI."""
    run_id = new.decision_run_id
    if not run_id:
        raise RegistryError("the gate decision carries no MLflow run id: re-run gate_decision")
    client.log_artifacts(run_id, new.model_dir, f"{FILES}/model")
    adapter_dir = new.adapter_dir
    if adapter_dir and Path(adapter_dir).is_dir():
        client.log_artifacts(run_id, adapter_dir, f"{FILES}/adapter")
    client.log_dict(run_id, base_model.to_dict(), f"{FILES}/base_model.json")
    client.log_dict(run_id, new.to_dict(), f"{FILES}/{ENTRY_FILE}")
    return f"{client.get_run(run_id).info.artifact_uri}/{FILES}/model"


def promote(store: tracking.Store, new: RegistryEntry, base_model: BaseModelInfo) -> RegistryEntry:
    """Register ``new`` (an ``entry``) as a version of its task's model and move the
    ``champion`` alias to it: both, or the champion as it was. Returns the entry with its
    version number."""
    task = new.task
    with _serialised(store):
        client = store.client()
        _ensure_model(client, task)
        version, created = _version_of(client, task, new.artefact["id"]), False
        if version is None:
            source = _log_files(client, new, base_model)
            version = client.create_model_version(
                task, source, run_id=new.decision_run_id, tags=version_tags(new), description=new.reason
            )
            created = True
        number = str(version.version)
        try:
            client.set_registered_model_alias(task, CHAMPION, number)
        except Exception as exc:  # the server went away, a permission, anything: undo what we can
            raise RegistryError(_undo(client, task, number, created, exc)) from exc
    return replace(new, version=int(number), source=version.source)


def _undo(client, task: str, number: str, created: bool, cause: Exception) -> str:
    """After a failed alias move: drop the version this attempt created if the store still
    answers and the alias is not on it; the message says what the registry now holds."""
    head = f"{task} version {number} was registered but `{CHAMPION}` could not be moved to it ({cause})"
    try:
        current = alias_target(client, task)
        if created and current != number:
            client.delete_model_version(task, number)
            return f"{head}; version {number} was removed, the champion is unchanged (version {current})"
    except Exception as exc:  # the store is unreachable: leave the version, the retry reuses it
        return (
            f"{head}; the store did not answer the clean-up ({exc}): the champion is unchanged, version "
            f"{number} stays unaliased and a retry promotes it"
        )
    return f"{head}; the champion is unchanged (version {current})"


def set_champion(store: tracking.Store, task: str, version: int) -> RegistryEntry:
    """Point ``champion`` at an existing version (the rollback); its entry."""
    client = store.client()
    target = client.get_model_version(task, str(version))  # fails, naming the version, if absent
    client.set_registered_model_alias(task, CHAMPION, str(target.version))
    return read_entry(client, target)
