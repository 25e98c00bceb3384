"""Reading the champion: the version the ``champion`` alias names, and its model folder
(downloaded from the artifact store when the build folder is gone)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from pipelines.common import tracking
from pipelines.common.typed_records import RecordError
from pipelines.gate.registry.entries import (
    CHAMPION,
    ENTRY_FILE,
    FILES,
    RegistryEntry,
    RegistryError,
)
from pipelines.models import artefacts


def code(exc: Exception) -> str:
    return getattr(exc, "error_code", "")


def registered(client, name: str):
    """The registered model, or None when it does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if code(exc) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def alias_target(client, task: str) -> str | None:
    """The version number the ``champion`` alias points at, or None."""
    model = registered(client, task)
    number = (model.aliases or {}).get(CHAMPION) if model else None
    return None if number is None else str(number)


def read_entry(client, version) -> RegistryEntry:
    """A version's entry.json; RecordError when it does not parse."""
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(version.run_id, f"{FILES}/{ENTRY_FILE}", tmp)
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    return replace(RegistryEntry.from_dict(doc), version=int(version.version), source=version.source)


def champion(store: tracking.Store, task: str) -> RegistryEntry | None:
    """The entry of the version the ``champion`` alias points at, or None. Raises
    RegistryError, naming the store, when it cannot be read (or its entry.json does not parse)."""
    from mlflow.exceptions import MlflowException

    client = store.client()
    try:
        number = alias_target(client, task)
        if number is None:
            return None
        return read_entry(client, client.get_model_version(task, number))
    except (MlflowException, OSError, RecordError) as exc:
        raise RegistryError(f"cannot read the {task!r} champion from the MLflow store {store.uri}: {exc}") from exc


def champion_model_dir(store: tracking.Store, entry: RegistryEntry, cache_dir: Path) -> Path:
    """A local folder holding exactly the champion's artefact: the folder it was built in if
    that still verifies, else its registered files, downloaded once into ``cache_dir``.
    Raises FileNotFoundError or ValueError, naming both places, when neither holds it."""
    expected = entry.artefact
    try:
        artefacts.verify(expected, Path(entry.model_dir))
        return Path(entry.model_dir)
    except (FileNotFoundError, ValueError) as exc:
        local_problem = str(exc)
    target = Path(cache_dir) / expected["id"][:16]
    if not target.is_dir():
        import mlflow.artifacts

        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
        try:
            got = mlflow.artifacts.download_artifacts(
                artifact_uri=entry.source, dst_path=str(staging), tracking_uri=store.uri
            )
            os.replace(got, target)
        except Exception as exc:  # any MLflow/IO failure: the champion is not available
            raise FileNotFoundError(
                f"{local_problem}; its registered files {entry.source} could not be downloaded ({exc})"
            ) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    artefacts.verify(expected, target)
    return target
