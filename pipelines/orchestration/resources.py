"""Resources: the one place that knows where config files and outputs live.

Assets never build paths themselves; they ask ``TunegateResource`` for the ``Layout`` and
the parsed configuration, so a test (or another deployment) repoints everything at once.
Empty fields fall back to the ``TUNEGATE_*`` environment variables, then to the repo."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from pipelines.common import tracking
from pipelines.common.files import atomic_write_text
from pipelines.config.base import ConfigError
from pipelines.config.base_models import BaseModelSpec, load_base_models
from pipelines.config.paths import (
    REPO_ROOT,
    Layout,
    default_base_models_file,
    default_home,
    default_settings_file,
    default_sources_file,
)
from pipelines.config.project import Project
from pipelines.config.settings import Settings, load_settings
from pipelines.config.sources import SourceSpec, load_sources
from pipelines.config.training import TrainingSettings


class TunegateResource(dg.ConfigurableResource):
    """Paths and parsed configuration for every stage, and where MLflow tracking goes.

    The configuration files are read once per resource instance (``project()``): the code
    location reads them when it builds its definitions, and each run reads them once when
    Dagster initialises the run's resources; every asset of the run then shares that one
    reading. The base-model registry is read when an entry is asked for: the sensor adds
    partitions as entries land. ``mlflow_tracking_uri`` empty: ``MLFLOW_TRACKING_URI``, then
    tunegate.yaml ``mlflow.tracking_uri``, then the local SQLite store under ``home``."""

    home: str = ""
    sources_file: str = ""
    base_models_file: str = ""
    settings_file: str = ""
    mlflow_tracking_uri: str = ""
    _settings: Settings | None = PrivateAttr(default=None)
    _sources: tuple[SourceSpec, ...] | None = PrivateAttr(default=None)

    def _path(self, value: str, default: Path) -> Path:
        return Path(value).resolve() if value else default

    def project(self) -> Project:
        """What the configuration files say: ``sources()`` and ``settings()``, each read once."""
        return Project(
            layout=self.layout,
            sources_file=self.sources_path(),
            base_models_file=self.base_models_path(),
            settings_file=self.settings_path(),
            sources=tuple(self.sources()),
            settings=self.settings(),
        )

    @property
    def layout(self) -> Layout:
        return Layout(self._path(self.home, default_home()))

    def sources_path(self) -> Path:
        return self._path(self.sources_file, default_sources_file())

    def sources(self) -> list[SourceSpec]:
        """``sources.yaml``, validated, read on first use."""
        if self._sources is None:
            self._sources = tuple(load_sources(self.sources_path()))
        return list(self._sources)

    def base_models_path(self) -> Path:
        return self._path(self.base_models_file, default_base_models_file())

    def base_models(self) -> list[BaseModelSpec]:
        return load_base_models(self.base_models_path())

    def base_model(self, name: str) -> BaseModelSpec:
        for spec in self.base_models():
            if spec.name == name:
                return spec
        raise ConfigError(
            f"{self.base_models_path()}: no base model named {name!r}; "
            "add it to the registry or pick an existing partition"
        )

    def settings_path(self) -> Path:
        return self._path(self.settings_file, default_settings_file())

    def settings(self) -> Settings:
        """``tunegate.yaml``, validated, read on first use."""
        if self._settings is None:
            self._settings = load_settings(self.settings_path())
        return self._settings

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
    # How the Kubernetes backend (tunegate.yaml training.backend: kubernetes) reaches the
    # cluster, as dagster-k8s' PipesK8sClient takes it: empty = in-cluster config when
    # KUBERNETES_SERVICE_HOST is set, else the default kubeconfig.
    kubeconfig_file: str = ""
    kube_context: str = ""

    def k8s_client(self):
        """dagster-k8s' Pipes client for a training pod (it reads pod logs for Pipes messages)."""
        from dagster_k8s import PipesK8sClient

        return PipesK8sClient(kubeconfig_file=self.kubeconfig_file or None, kube_context=self.kube_context or None)


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


PG_URL_ENV = "DAGSTER_PG_URL"
_GENERATED_MARK = "# written by tunegate ("  # also matches files written before the module moved
_GENERATED = (
    _GENERATED_MARK
    + "pipelines/orchestration/resources.py), which rewrites it while this line is here: delete the line to keep your edits\n"
)


def instance_yaml() -> str:
    """The ``dagster.yaml`` tunegate writes: telemetry off, and when ``DAGSTER_PG_URL`` is set,
    dagster-postgres' run, event-log and schedule storage (its documented ``storage:
    postgres: postgres_url: {env: ...}`` form: the URL, password included, stays in the
    environment, never in the file). Without it, Dagster's embedded SQLite."""
    text = _GENERATED + "telemetry:\n  enabled: false\n"
    if os.environ.get(PG_URL_ENV):
        text += f"storage:\n  postgres:\n    postgres_url:\n      env: {PG_URL_ENV}\n"
    return text


def _check_pg_url() -> None:
    """SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; dagster-postgres brings
    psycopg2. Say so at start-up instead of a ModuleNotFoundError on the first run."""
    url = os.environ.get(PG_URL_ENV, "")
    if url and not url.startswith("postgresql+psycopg2://"):
        scheme = url.split("://", 1)[0] if "://" in url else "(none)"
        raise ConfigError(
            f"{PG_URL_ENV}: scheme {scheme!r}: use postgresql+psycopg2://user:password@host:5432/db "
            "(a bare postgresql:// makes SQLAlchemy 2.1 load psycopg 3, which is not installed; "
            "dagster-postgres ships psycopg2)"
        )


def ensure_dagster_home() -> Path:
    """``$DAGSTER_HOME`` (default: the repo's ``.dagster/``) with a ``dagster.yaml``. A file
    tunegate wrote is rewritten to follow ``DAGSTER_PG_URL``; one a user wrote is kept, but
    refused when ``DAGSTER_PG_URL`` is set and it does not configure PostgreSQL (runs would
    silently land in SQLite)."""
    _check_pg_url()
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / ".dagster")))
    home.mkdir(parents=True, exist_ok=True)
    dagster_yaml = home / "dagster.yaml"
    current = dagster_yaml.read_text() if dagster_yaml.exists() else None
    if current is None or current.startswith(_GENERATED_MARK) or current.strip() == "telemetry:\n  enabled: false":
        if current != instance_yaml():
            atomic_write_text(dagster_yaml, instance_yaml())
    elif os.environ.get(PG_URL_ENV) and "postgres" not in current:
        raise ConfigError(
            f"{dagster_yaml}: {PG_URL_ENV} is set but this dagster.yaml (not written by tunegate) configures no "
            f"PostgreSQL storage; add `storage: {{postgres: {{postgres_url: {{env: {PG_URL_ENV}}}}}}}` or unset {PG_URL_ENV}"
        )
    return home


def apply_pool_limit(instance: dg.DagsterInstance, settings: TrainingSettings) -> bool:
    """Set the training pool's limit on ``instance`` to ``training.pool_limit`` (what
    ``dagster instance concurrency set <pool> <limit>`` does), unless it already is. Called
    by the sensor and the schedule before they request runs and by ``make demo``/``make data``,
    so tunegate.yaml stays the one place the limit lives. True when it changed."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return False
    current = storage.get_concurrency_info(settings.pool).slot_count
    if current == settings.pool_limit:
        return False
    storage.set_concurrency_slots(settings.pool, settings.pool_limit)
    return True


def persistent_instance(training: TrainingSettings) -> dg.DagsterInstance:
    """The instance under ``$DAGSTER_HOME`` (see ``ensure_dagster_home``; without
    DAGSTER_HOME, runs would go to a throwaway instance), on PostgreSQL when
    ``DAGSTER_PG_URL`` is set, with the training pool's limit from tunegate.yaml ``training``."""
    ensure_dagster_home()
    instance = dg.DagsterInstance.get()
    apply_pool_limit(instance, training)
    return instance


if __name__ == "__main__":  # `make` writes $DAGSTER_HOME/dagster.yaml with this
    print(ensure_dagster_home() / "dagster.yaml")
