"""When to re-tune: new base models, and partitions whose inputs changed.

Plain Python, no Dagster: the sensor and the schedule in ``pipelines.orchestration.automation`` are
thin shells that feed these functions what the instance recorded and what the files say
now. A re-tune is expensive (minutes of CPU), so "nothing changed" must really mean it:
the config hash and the data fingerprint are the same ones the training stage keys its
cache on, and a source file edited after the data was last built counts as a change
because its effect on the fingerprint is unknown until the data is rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipelines.common.hashing import sha256_text
from pipelines.config.base_models import BaseModelSpec
from pipelines.config.paths import Layout
from pipelines.config.settings import Settings
from pipelines.config.sources import SourceSpec


@dataclass(frozen=True)
class Inputs:
    """What a partition's fine-tune depends on, as the files say now."""

    config_hash: str
    data_fingerprint: str | None  # None: train/eval not built yet


@dataclass(frozen=True)
class Recorded:
    """What the partition's latest materialisations recorded."""

    config_hash: str | None  # latest axolotl_config; None = never tuned
    data_fingerprint: str | None  # latest qlora_adapter (else axolotl_config), if any
    data_built_at: float | None  # timestamp of the latest train_set materialisation


def new_partitions(registry: list[str], known: set[str] | list[str]) -> list[str]:
    """Registry entries with no partition yet, in registry order."""
    known = set(known)
    return [name for name in registry if name not in known]


def removed_partitions(registry: list[str], known: set[str] | list[str]) -> list[str]:
    """Partitions whose registry entry is gone. Never deleted: their history stays."""
    present = set(registry)
    return sorted(name for name in known if name not in present)


def inputs_key(inputs: Inputs) -> str:
    return sha256_text(f"{inputs.config_hash}\n{inputs.data_fingerprint or 'no-data'}")[:16]


def run_key(partition: str, inputs: Inputs) -> str:
    """Same partition + same inputs -> same key, so Dagster never launches it twice."""
    return f"{partition}:{inputs_key(inputs)}"


def latest_mtime(paths: list[Path]) -> tuple[float | None, Path | None]:
    """The newest modification time among the existing files (cheap: no hashing)."""
    best: tuple[float | None, Path | None] = (None, None)
    for path in paths:
        if path.is_file():
            mtime = path.stat().st_mtime
            if best[0] is None or mtime > best[0]:
                best = (mtime, path)
    return best


def what_changed(
    current: Inputs,
    recorded: Recorded,
    sources_modified_at: float | None = None,
    newest_source: Path | None = None,
) -> list[str]:
    """Every reason to re-tune, in words; an empty list means nothing changed."""
    if recorded.config_hash is None:
        return ["never tuned: no axolotl_config materialisation for this partition"]
    reasons = []
    if current.config_hash != recorded.config_hash:
        reasons.append(f"config hash changed: {recorded.config_hash[:12]} -> {current.config_hash[:12]}")
    if current.data_fingerprint is None:
        reasons.append("train/eval files are missing: the data must be rebuilt")
    elif recorded.data_fingerprint and current.data_fingerprint != recorded.data_fingerprint:
        reasons.append(f"data fingerprint changed: {recorded.data_fingerprint[:12]} -> {current.data_fingerprint[:12]}")
    if sources_modified_at is not None and (
        recorded.data_built_at is None or sources_modified_at > recorded.data_built_at
    ):
        when = datetime.fromtimestamp(sources_modified_at, UTC).isoformat(timespec="seconds")
        reasons.append(f"{newest_source or 'a source file'} was modified ({when}) after the data was last built")
    return reasons


def latest_source_mtime(sources: list[SourceSpec], sources_file: Path) -> tuple[float | None, Path | None]:
    """Newest edit among ``sources.yaml`` and the files it points at (folders: their files)."""
    paths = [sources_file]
    for spec in sources:
        if spec.kind == "python":
            continue
        for path in spec.resolved_files():  # a glob source: every file it matches
            if path.is_dir():
                paths.extend(p for p in path.rglob("*") if p.is_file())
            else:
                paths.append(path)
    return latest_mtime(paths)


def current_config_hash(spec: BaseModelSpec, settings: Settings) -> str:
    """The training stage's own config hash, from the templates and YAML files (no run)."""
    from pipelines.training import run_plan

    cfg = run_plan.training_config(spec, settings.training, cuda=run_plan.cuda_available())
    return run_plan.config_hash(cfg)


def current_inputs(layout: Layout, spec: BaseModelSpec, settings: Settings) -> Inputs:
    return Inputs(config_hash=current_config_hash(spec, settings), data_fingerprint=current_data_fingerprint(layout))


def current_data_fingerprint(layout: Layout) -> str | None:
    """The data stage's own fingerprint of the split files on disk; None if not built."""
    from pipelines.data.split import data_fingerprint

    if not all(path.is_file() for path in layout.split_files):
        return None
    return data_fingerprint(*layout.split_files)
