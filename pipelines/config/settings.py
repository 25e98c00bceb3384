"""``tunegate.yaml`` as a whole: every stage's section, MLflow and the re-tune schedule, read
and validated in one call."""

from __future__ import annotations

from pathlib import Path

from pydantic import (
    ValidationError,
    field_validator,
)

from pipelines.config.base import Strict, explain, read_yaml
from pipelines.config.data import DedupSettings, SplitSettings, ValidationSettings
from pipelines.config.evaluation import EvalSettings
from pipelines.config.gate import CostSettings, GateSettings
from pipelines.config.training import TrainingSettings


class MlflowSettings(Strict):
    """Where runs, scores, decisions and the model registry go. Empty: the local SQLite
    store under the output root (``MLFLOW_TRACKING_URI`` overrides this key)."""

    tracking_uri: str = ""

    @field_validator("tracking_uri")
    @classmethod
    def _looks_like_a_uri(cls, uri: str) -> str:
        if uri and "://" not in uri and uri != "databricks":
            raise ValueError(
                f"{uri!r} is not a tracking URI: use http(s)://host:port, sqlite:///path, "
                "postgresql://..., or leave it empty for the local store"
            )
        return uri


class ScheduleSettings(Strict):
    cron: str = "0 3 * * 1"


class Settings(Strict):
    validation: ValidationSettings = ValidationSettings()
    dedup: DedupSettings = DedupSettings()
    split: SplitSettings = SplitSettings()
    training: TrainingSettings = TrainingSettings()
    eval: EvalSettings = EvalSettings()
    gate: GateSettings = GateSettings()
    cost: CostSettings = CostSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    mlflow: MlflowSettings = MlflowSettings()


def load_settings(path: Path) -> Settings:
    doc = read_yaml(path) if path.exists() else {}
    try:
        return Settings.model_validate(doc or {})
    except ValidationError as exc:
        raise explain(path, "settings", exc, Settings) from exc
