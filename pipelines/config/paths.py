"""Where everything lives: the repository, the ``TUNEGATE_*`` overrides, and the ``Layout`` of
every file the pipeline writes under one output root."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def slugify(name: str) -> str:
    """A file-system-safe form of a partition key (``org/model`` -> ``org--model``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace("/", "--")).strip("-").lower()


def _env_path(var: str, default: str) -> Path:
    value = os.environ.get(var)
    path = Path(value) if value else REPO_ROOT / default
    return path if path.is_absolute() else REPO_ROOT / path


def default_home() -> Path:
    return _env_path("TUNEGATE_HOME", ".tunegate")


def default_sources_file() -> Path:
    return _env_path("TUNEGATE_SOURCES", "sources.yaml")


def default_base_models_file() -> Path:
    return _env_path("TUNEGATE_BASE_MODELS", "base_models.yaml")


def default_settings_file() -> Path:
    return _env_path("TUNEGATE_SETTINGS", "tunegate.yaml")


@dataclass(frozen=True)
class Layout:
    """Every file the pipeline writes, under one output root, so nothing is scattered.

    Model-dependent paths are keyed by the base model's slug, so two partitions never
    touch each other's files."""

    home: Path

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def raw_file(self, source: str) -> Path:
        return self.data_dir / "raw" / f"{source}.jsonl"

    def source_quarantine_file(self, source: str) -> Path:
        return self.data_dir / "quarantine" / f"{source}.jsonl"

    @property
    def quarantine_file(self) -> Path:
        return self.data_dir / "quarantine.jsonl"

    @property
    def labeled_file(self) -> Path:
        return self.data_dir / "labeled.jsonl"

    @property
    def deduped_file(self) -> Path:
        return self.data_dir / "deduped.jsonl"

    @property
    def dedup_audit_file(self) -> Path:
        return self.data_dir / "dedup_audit.jsonl"

    @property
    def conflicts_file(self) -> Path:
        return self.data_dir / "conflicts.jsonl"

    @property
    def train_file(self) -> Path:
        return self.data_dir / "train.jsonl"

    @property
    def validation_file(self) -> Path:
        """The slice of the train split Axolotl evaluates on (never trained on)."""
        return self.data_dir / "validation.jsonl"

    @property
    def eval_file(self) -> Path:
        return self.data_dir / "eval.jsonl"

    @property
    def split_files(self) -> tuple[Path, Path, Path]:
        """Train, validation and eval: every file the data fingerprint covers."""
        return (self.train_file, self.validation_file, self.eval_file)

    def model_cache_dir(self, slug: str) -> Path:
        return self.home / "cache" / "models" / slug

    def run_dir(self, slug: str, run_key: str) -> Path:
        return self.home / "runs" / slug / run_key

    def eval_dir(self, slug: str, contender: str) -> Path:
        return self.home / "evals" / slug / contender

    @property
    def registry_file(self) -> Path:
        """A derived, read-only export of the MLflow registry (pipelines/gate/registry.py)."""
        return self.home / "registry" / "promoted.json"

    @property
    def champion_cache_dir(self) -> Path:
        """Champions downloaded from the registry when their build folder is gone."""
        return self.home / "cache" / "champions"
