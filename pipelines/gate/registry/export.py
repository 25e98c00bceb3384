"""``promoted.json``: a derived, read-only export of the registry for readers without MLflow;
the registry is the truth."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.common import tracking
from pipelines.common.files import atomic_write_json
from pipelines.gate.registry.reading import champion

EXPORT_VERSION = 3


def export(store: tracking.Store, path: Path) -> Path:
    """Write the derived, read-only ``promoted.json``: every tunegate task's champion entry
    and its versions. The registry stays the truth; this file is rewritten, never read."""
    client = store.client()
    models = [m for m in client.search_registered_models() if f"{tracking.TAG}task" in (m.tags or {})]
    doc: dict[str, Any] = {
        "version": EXPORT_VERSION,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "note": "derived from the MLflow registry: move the `champion` alias to change it",
        "champions": {},
        "versions": {},
    }
    for model in sorted(models, key=lambda m: m.name):
        found = champion(store, model.name)
        if found:
            doc["champions"][model.name] = found.to_dict()
        aliases: dict[int, list[str]] = {}  # a search does not fill in aliases; the model has them
        for alias, number in (model.aliases or {}).items():
            aliases.setdefault(int(number), []).append(alias)
        versions = client.search_model_versions(f"name='{model.name}'")
        doc["versions"][model.name] = [
            {
                "version": int(v.version),
                "aliases": sorted(aliases.get(int(v.version), [])),
                "source": v.source,
                "run_id": v.run_id,
                "tags": dict(v.tags or {}),
            }
            for v in sorted(versions, key=lambda v: int(v.version))
        ]
    path = Path(path)
    atomic_write_json(path, doc)
    path.chmod(0o444)
    return path
