"""The project's configuration as the code location read it: the files, what they say, and
the ``Layout``.

The Dagster code location builds its definitions from one ``Project`` (the asset factories
take the sources, the prompt ladder, the training pool and the cron from it), read through
the same resource every run gets, so the definitions and the runs name the same files. The
base-model registry is not in it by design: the sensor watches ``base_models.yaml`` for new
entries, so an entry is read when a run or a sensor tick needs it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipelines.config.paths import Layout
from pipelines.config.settings import Settings
from pipelines.config.sources import SourceSpec


@dataclass(frozen=True)
class Project:
    """Where the configuration lives and what it says (``sources.yaml``, ``tunegate.yaml``)."""

    layout: Layout
    sources_file: Path
    base_models_file: Path
    settings_file: Path
    sources: tuple[SourceSpec, ...]
    settings: Settings
