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
