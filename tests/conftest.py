"""Shared fixtures. Heavy artefacts (the tiny model) are built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny_model import build_tiny_gemma, build_tiny_llama, tiny_registry_yaml

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama with the SmolLM2 tokenizer (test double, built in seconds)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture(scope="session")
def tiny_gemma_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny random Gemma3 with Gemma's tokenizer defects (tests/tiny_model.py ``build_tiny_gemma``)."""
    return build_tiny_gemma(tiny_model_dir, tmp_path_factory.mktemp("tiny-gemma") / "model")


@pytest.fixture(scope="session")
def tiny_registry(tiny_model_dir, tmp_path_factory) -> Path:
    """A base-model registry with one partition, ``tiny-llama``."""
    path = tmp_path_factory.mktemp("registry") / "base_models.yaml"
    path.write_text(tiny_registry_yaml(tiny_model_dir))
    return path


@pytest.fixture(autouse=True)
def _isolated_dagster_defs_state():
    """Resolving the global ``Definitions`` without an instance (dagster 1.13) leaves a
    process-wide defs-state storage behind that holds a weak reference to a temporary
    instance; later ``dg.materialize`` calls then fail with "Attempted to resolve undefined
    DagsterInstance weakref". Restore the unset state after every test."""
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    with set_defs_state_storage(None):
        yield


@pytest.fixture(scope="session")
def learner_registry(tmp_path_factory) -> Path:
    """A registry whose ``tiny-llama`` partition is the tiny learner (see tests/tiny_model.py):
    a model a LoRA on every linear layer can really teach, for the gate's real "yes"."""
    from tests.tiny_model import ALL_LINEAR, build_tiny_learner

    model_dir = build_tiny_learner(tmp_path_factory.mktemp("tiny-learner") / "model")
    path = tmp_path_factory.mktemp("learner-registry") / "base_models.yaml"
    path.write_text(tiny_registry_yaml(model_dir, lora_target_modules=ALL_LINEAR))
    return path


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty, migrated MLflow SQLite database, built once and copied by each store."""
    from tests.mlflow_store import migrated_db

    return migrated_db(tmp_path_factory.mktemp("mlflow-template") / "mlflow.db")


@pytest.fixture(scope="session", autouse=True)
def _session_tracking_store(mlflow_template, tmp_path_factory):
    """Tracking for tests that do not choose a store goes to one session-wide SQLite store
    (``MLFLOW_TRACKING_URI``), not a fresh, migrated one per test. Tests about the store pass
    their own (``TunegateResource.mlflow_tracking_uri`` wins over the variable)."""
    from tests.mlflow_store import seed

    uri = seed(mlflow_template, tmp_path_factory.mktemp("mlflow-session") / "mlflow.db")
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture
def local_store(tmp_path, mlflow_template, monkeypatch):
    """The embedded default store (SQLite under the output root), seeded from the template."""
    from pipelines.common import tracking
    from tests.mlflow_store import seed

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home = tmp_path / "out"
    seed(mlflow_template, home / tracking.STORE_DIR / "mlflow.db")
    return tracking.resolve("", "", home)


@pytest.fixture(scope="session")
def mlflow_server(mlflow_template, tmp_path_factory):
    """A real ``mlflow server`` on a free loopback port, shared by the tests (each uses its own task)."""
    from tests.mlflow_store import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), mlflow_template).start()
    yield server
    server.stop()
