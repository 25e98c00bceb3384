"""The champion registry in MLflow: one registered model per task, one version per promoted
artefact, and the alias ``champion`` on the version that serves.

A version is the artefact the gate judged. Its files go to the gate decision's MLflow run
under ``promoted/``: ``model/`` (the merged model, the version's source), ``adapter/`` and
``base_model.json`` (the base it was trained against), ``entry.json`` (everything needed to
serve, reproduce or re-score it, and why it won). Its tags carry the base model, data and
eval fingerprints, scores and the decision run, so the registry UI answers "why this one".

The gate reads the champion from the alias. Rolling back is moving the alias::

    .venv/bin/python -m pipelines.gate.registry set-champion <version>

Promotion registers the version, then moves the alias: if the move fails, the champion is
unchanged, and the version (removed when the store is still reachable) is reused by the
retry, never duplicated. A lock file serialises promotions into the local SQLite store (one
writer at a time); a server serialises them itself. ``promoted.json`` is a derived,
read-only export of the registry for readers without MLflow; the registry is the truth.

One module per job: ``entries`` (the entry and tags), ``reading`` (the champion),
``promotion`` (promote, roll back), ``export`` (``promoted.json``), ``__main__`` (the CLI).
Callers use this package's names: ``registry.promote(...)``, ``registry.champion(...)``."""

from pipelines.gate.registry.entries import (
    CHAMPION,
    ENTRY_FILE,
    FILES,
    ROLLBACK_COMMAND,
    RegistryEntry,
    RegistryError,
    entry,
    version_tags,
)
from pipelines.gate.registry.export import export
from pipelines.gate.registry.promotion import promote, set_champion
from pipelines.gate.registry.reading import champion, champion_model_dir

__all__ = [
    "CHAMPION",
    "ENTRY_FILE",
    "FILES",
    "ROLLBACK_COMMAND",
    "RegistryEntry",
    "RegistryError",
    "champion",
    "champion_model_dir",
    "entry",
    "export",
    "promote",
    "set_champion",
    "version_tags",
]
