"""The code map's promise, checked: engines import no Dagster, and imports only point down
(engines -> nothing above them; assets -> engines and the code location's resources and
partitions; only the code location imports the asset modules)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCATION = REPO_ROOT / "pipelines" / "orchestration"


def _imports(path: Path) -> set[str]:
    """Top-level module names (``dagster``, ``assets``, ``pipelines.orchestration.x``) imported by ``path``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _engine_modules() -> list[Path]:
    return sorted(p for p in (REPO_ROOT / "pipelines").rglob("*.py") if LOCATION not in p.parents)


def _layer_violations(path: Path) -> list[str]:
    bad = []
    for name in _imports(path):
        root = name.split(".")[0]
        if root in {"dagster", "dagster_pipes", "dagster_k8s", "dagster_postgres", "assets"}:
            bad.append(name)
        elif name.startswith("pipelines.orchestration"):
            bad.append(name)
    return bad


@pytest.mark.parametrize("path", _engine_modules(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_engines_import_neither_dagster_nor_the_layers_above(path):
    assert _layer_violations(path) == [], f"{path.relative_to(REPO_ROOT)} imports {_layer_violations(path)}"


def test_the_layer_check_catches_a_dagster_import(tmp_path):
    """The check above cannot pass vacuously: a module that imports Dagster or an asset is caught."""
    module = tmp_path / "engine.py"
    module.write_text(
        "import dagster as dg\nfrom assets import training\nfrom pipelines.orchestration.resources import X\n"
    )
    assert sorted(_layer_violations(module)) == [
        "assets",
        "assets.training",
        "dagster",
        "pipelines.orchestration.resources",
        "pipelines.orchestration.resources.X",
    ]


def test_assets_do_not_import_the_definitions_or_the_entry_points():
    """Assets sit below the definitions and the ``make`` entry points, which load them."""
    above = {f"pipelines.orchestration.{m}" for m in ("definitions", "demo", "demo_retune", "data")}
    for path in sorted((REPO_ROOT / "assets").glob("*.py")):
        assert not (_imports(path) & above), f"{path.name} imports {_imports(path) & above}"


def test_there_are_engines_and_a_code_location_to_check():
    assert len(_engine_modules()) > 20
    assert (LOCATION / "definitions.py").exists()
