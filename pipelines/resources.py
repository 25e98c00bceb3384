"""Resources: the one place that knows where config files and outputs live.

Assets never build paths themselves; they ask ``TunegateResource`` for the ``Layout`` and
the parsed configuration, so a test (or another deployment) repoints everything at once.
Empty fields fall back to the ``TUNEGATE_*`` environment variables, then to the repo."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from pipelines import config, tracking
from pipelines.config import REPO_ROOT


class TunegateResource(dg.ConfigurableResource):
    """Paths and parsed configuration for every stage, and where MLflow tracking goes.

    ``mlflow_tracking_uri`` empty: ``MLFLOW_TRACKING_URI``, then tunegate.yaml
    ``mlflow.tracking_uri``, then the local SQLite store under ``home``."""

    home: str = ""
    sources_file: str = ""
    base_models_file: str = ""
    settings_file: str = ""
    mlflow_tracking_uri: str = ""

    def _path(self, value: str, default: Path) -> Path:
        return Path(value).resolve() if value else default

    @property
    def layout(self) -> config.Layout:
        return config.Layout(self._path(self.home, config.default_home()))

    def sources_path(self) -> Path:
        return self._path(self.sources_file, config.default_sources_file())

    def sources(self) -> list[config.SourceSpec]:
        return config.load_sources(self.sources_path())

    def base_models_path(self) -> Path:
        return self._path(self.base_models_file, config.default_base_models_file())

    def base_models(self) -> list[config.BaseModelSpec]:
        return config.load_base_models(self.base_models_path())

    def base_model(self, name: str) -> config.BaseModelSpec:
        for spec in self.base_models():
            if spec.name == name:
                return spec
        raise config.ConfigError(
            f"{self.base_models_path()}: no base model named {name!r}; "
            "add it to the registry or pick an existing partition"
        )

    def settings_path(self) -> Path:
        return self._path(self.settings_file, config.default_settings_file())

    def settings(self) -> config.Settings:
        return config.load_settings(self.settings_path())

    def tracking_store(self) -> tracking.Store:
        return tracking.resolve(self.mlflow_tracking_uri, self.settings().mlflow.tracking_uri, self.layout.home)


class AxolotlResource(dg.ConfigurableResource):
    """How the training stage launches Axolotl: which CLI, extra environment, time limit.

    Empty ``executable`` means the ``axolotl`` next to the running interpreter (the venv's).
    ``extra_env`` is added to the training subprocess (``ACCELERATE_USE_*`` is refused:
    Axolotl drops its device map when one is set). ``timeout_s`` 0 falls back to
    ``tunegate.yaml`` ``training.timeout_s``."""

    executable: str = ""
    extra_env: dict[str, str] = {}
    timeout_s: int = 0


class PromptfooResource(dg.ConfigurableResource):
    """How the evaluation stage runs promptfoo (an external CLI, hence a resource).

    ``cli``: the PyPI ``promptfoo`` wrapper's entry point (empty = the one in the venv).
    ``npm_dir``: the folder whose ``node_modules/.bin`` holds the pinned promptfoo CLI and
    Node 22 (empty = ``evals/``); it goes first on PATH so the wrapper never uses npx.
    ``timeout_s`` 0 falls back to ``tunegate.yaml`` ``eval.timeout_s``. ``extra_env`` is
    added to the promptfoo subprocess."""

    cli: str = ""
    npm_dir: str = ""
    timeout_s: int = 0
    extra_env: dict[str, str] = {}

    def runner(self, default_timeout_s: int):
        from pipelines.evaluation.runner import PromptfooRunner

        return PromptfooRunner(
            cli=self.cli,
            npm_dir=self.npm_dir,
            timeout_s=self.timeout_s or default_timeout_s,
            extra_env=dict(self.extra_env),
        )


def persistent_instance() -> dg.DagsterInstance:
    """The instance under ``$DAGSTER_HOME`` (default: the repo's ``.dagster/``, created with
    telemetry off): without DAGSTER_HOME, runs would go to a throwaway instance."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / ".dagster")))
    home.mkdir(parents=True, exist_ok=True)
    dagster_yaml = home / "dagster.yaml"
    if not dagster_yaml.exists():
        dagster_yaml.write_text("telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.get()
