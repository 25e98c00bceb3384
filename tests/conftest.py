"""Shared fixtures. Heavy artefacts (the tiny model) are built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny_model import build_tiny_llama, tiny_registry_yaml

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama with the SmolLM2 tokenizer (test double, built in seconds)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model")


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
