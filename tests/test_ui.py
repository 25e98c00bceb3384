"""End to end through the real UI: the webserver loads workspace.yaml, GraphQL shows every
asset, the `base_model` partitions, the job, the sensor and the schedule, and a headless
chromium screenshot of the lineage page lands in test-artifacts/lineage.png (and the
promotion group, asset by asset, in test-artifacts/promotion.png). The MLflow UI shows the
registered model with its `champion` alias (test-artifacts/mlflow-registered-model.png)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipelines.config.paths import REPO_ROOT
from tests.mlflow_store import free_port


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


pytestmark = [
    pytest.mark.ui,
    pytest.mark.skipif(
        _chromium() is None,
        reason="chromium is not installed (`make system-deps` installs Debian's chromium as root)",
    ),
]

ARTIFACTS = REPO_ROOT / "test-artifacts"
WEBSERVER = Path(sys.executable).parent / "dagster-webserver"
STARTUP_TIMEOUT_S = 240  # 12-19 s measured when idle; the CPU is shared with training runs
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]

WORKSPACE_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename
      ... on PythonError { message }
      ... on RepositoryLocation { repositories { name jobs { name } sensors { name }
          schedules { name cronSchedule } } } } } } } }
"""
ASSETS_QUERY = """
{ assetNodes { assetKey { path } groupName kinds description
    partitionDefinition { name type } } }
"""
CHECKS_QUERY = """
{ assetNodes { assetKey { path }
    assetChecksOrError { ... on AssetChecks { checks { name blocking description } } } } }
"""
# the blocking data-quality and tokenizer checks, by asset: what the UI's Checks tab must list
BLOCKING_CHECKS = {
    ("raw_pairs", "tickets_jsonl"): {"not_empty", "reject_rate"},
    ("eval_set",): {"no_contamination", "disjoint_sides"},
    ("train_set",): {"fingerprint"},
    ("base_model",): {"tokenizer_check"},
}
PARTITIONS_QUERY = """
query ($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) {
  ... on AssetNode { partitionKeysByDimension { name partitionKeys } } } }
"""


def _graphql(base: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{base}/graphql", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        doc = json.load(response)
    assert "errors" not in doc, doc["errors"]
    return doc["data"]


def _wait_until_loaded(base: str, proc: subprocess.Popen, log: Path) -> dict:
    """Wait for /server_info, then for the code location to finish loading."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"webserver exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/server_info", timeout=5):
                pass
            workspace = _graphql(base, WORKSPACE_QUERY)["workspaceOrError"]
            entries = workspace.get("locationEntries") or []
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                return workspace
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"webserver not ready after {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def webserver(tmp_path, tiny_registry):
    """dagster-webserver on a free 127.0.0.1 port, a temp instance and temp outputs."""
    import dagster as dg

    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_dynamic_partitions("base_model", ["tiny-llama"])
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "TUNEGATE_HOME": str(tmp_path / "out"),
        "TUNEGATE_BASE_MODELS": str(tiny_registry),
    }
    port = free_port()
    log = tmp_path / "webserver.log"
    with log.open("w") as log_handle:
        proc = subprocess.Popen(
            [str(WEBSERVER), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its code-server child shares this group: stopped with it
        )
    base = f"http://127.0.0.1:{port}"
    try:
        yield base, _wait_until_loaded(base, proc, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this test created, nothing else
            proc.wait(timeout=10)
        else:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # a lingering code server, if any
            except ProcessLookupError:
                pass


def test_ui_shows_the_whole_chain(webserver, tmp_path):
    from pipelines.orchestration.definitions import defs

    base, workspace = webserver
    (entry,) = workspace["locationEntries"]
    location = entry["locationOrLoadError"]
    assert location["__typename"] == "RepositoryLocation", location
    (repo,) = location["repositories"]
    assert "tune_job" in {j["name"] for j in repo["jobs"]}
    assert {s["name"] for s in repo["sensors"]} == {"base_model_registry_sensor"}
    assert {s["name"] for s in repo["schedules"]} == {"weekly_retune_schedule"}

    nodes = {tuple(n["assetKey"]["path"]): n for n in _graphql(base, ASSETS_QUERY)["assetNodes"]}
    expected = {tuple(k.path) for k in defs().resolve_asset_graph().get_all_asset_keys()}
    assert expected <= set(nodes), f"missing in the UI: {sorted(expected - set(nodes))}"
    for key in (
        "train_set",
        "eval_set",
        "base_model",
        "axolotl_config",
        "qlora_adapter",
        "baseline_scores",
        "tuned_scores",
        "gate_decision",
        "promoted_model",
        "tuned_model",
        "base_as_trained",
        "champion_scores",
    ):
        assert (key,) in nodes, key
    for key in expected:
        assert nodes[key]["groupName"] and nodes[key]["groupName"] != "default", key
        assert nodes[key]["kinds"], f"{key} has no kinds"
        assert nodes[key]["description"], f"{key} has no description"
    gate_node = nodes[("gate_decision",)]
    assert gate_node["partitionDefinition"]["name"] == "base_model"
    assert gate_node["partitionDefinition"]["type"] == "DYNAMIC"
    dims = _graphql(base, PARTITIONS_QUERY, {"path": ["gate_decision"]})["assetNodeOrError"]
    assert dims["partitionKeysByDimension"][0]["partitionKeys"] == ["tiny-llama"]

    checks = {
        tuple(n["assetKey"]["path"]): {c["name"]: c for c in n["assetChecksOrError"].get("checks", [])}
        for n in _graphql(base, CHECKS_QUERY)["assetNodes"]
    }
    for key, names in BLOCKING_CHECKS.items():
        assert names <= set(checks[key]), f"{key}: checks {sorted(checks[key])}"
        assert all(checks[key][n]["blocking"] and checks[key][n]["description"] for n in names), key

    _graphql(base, "mutation { setNuxSeen }")  # the first-run popup would cover the graph
    for key, names in BLOCKING_CHECKS.items():  # the Checks tab of each asset lists its checks
        url = f"{base}/assets/{'/'.join(key)}?view=checks"
        dom = subprocess.run(
            [
                _chromium(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={tmp_path / 'chromium'}",
                "--window-size=1800,1100",
                "--virtual-time-budget=20000",
                "--dump-dom",
                url,
            ],
            check=True,
            timeout=180,
            capture_output=True,
            text=True,
        ).stdout
        assert all(n in dom for n in names), f"{url} does not list {sorted(names)}"
    ARTIFACTS.mkdir(exist_ok=True)
    location_name = entry["name"]
    shots = {
        "lineage.png": f"{base}/asset-groups",  # the global lineage, group by group
        "promotion.png": f"{base}/locations/{location_name}/asset-groups/promotion",  # the gate, asset by asset
        "checks.png": f"{base}/assets/eval_set?view=checks",  # the split's blocking checks
    }
    for name, url in shots.items():
        shot = ARTIFACTS / name
        shot.unlink(missing_ok=True)
        subprocess.run(
            [
                _chromium(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={tmp_path / 'chromium'}",
                "--window-size=1800,1100",
                "--virtual-time-budget=20000",
                f"--screenshot={shot}",
                url,
            ],
            check=True,
            timeout=180,
            capture_output=True,
        )
        assert shot.is_file() and shot.stat().st_size > 20_000, f"{name}: screenshot missing or blank"


def test_mlflow_ui_shows_the_registered_model_and_its_champion_alias(mlflow_server, tmp_path):
    """The MLflow UI (`make mlflow-ui` runs the same `mlflow server`): after two promotions
    and a rollback, the registered model page names the version holding `champion`."""
    import uuid

    from pipelines.common import tracking
    from pipelines.gate import registry
    from tests.cards import promote_candidate

    task = f"triage-ui-{uuid.uuid4().hex[:6]}"
    store = tracking.Store(mlflow_server.uri)
    promote_candidate(store, task, tmp_path, "model-a")
    promote_candidate(store, task, tmp_path, "model-b")
    registry.set_champion(store, task, 1)  # a rollback: the alias, not the newest version, is the champion

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "mlflow-registered-model.png"
    shot.unlink(missing_ok=True)
    url = f"{mlflow_server.uri}/#/models/{task}"
    common = [
        _chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1600,2000",
        "--virtual-time-budget=30000",
    ]
    dom = subprocess.run([*common, "--dump-dom", url], check=True, timeout=180, capture_output=True, text=True).stdout
    assert task in dom, dom[-2000:]
    rows = {n: [r for r in dom.split('role="row"') if f">Version {n}<" in r] for n in (1, 2)}
    assert len(rows[1]) == 1 and len(rows[2]) == 1, f"no versions table on {url}:\n{dom[-3000:]}"
    alias_tag = 'title="champion"'  # MLflow's alias tag (ModelVersionAliasTag) in the Aliases column
    assert alias_tag in rows[1][0], f"version 1 shows no `champion` alias on {url}"
    assert alias_tag not in rows[2][0]
    subprocess.run([*common, f"--screenshot={shot}", url], check=True, timeout=180, capture_output=True)
    assert shot.is_file() and shot.stat().st_size > 20_000, "screenshot missing or blank"
