"""The champion registry in MLflow: one registered model per task, one version per promoted
artefact, and the alias ``champion`` on the version that serves.

A version is the artefact the gate judged. Its files go to the gate decision's MLflow run
under ``promoted/``: ``model/`` (the merged model, the version's source), ``adapter/`` and
``base_model.json`` (the base it was trained against), ``entry.json`` (everything needed to
serve, reproduce or re-score it, and why it won). Its tags carry the base model, data and
eval fingerprints, scores and the decision run, so the registry UI answers "why this one".

The gate reads the champion from the alias. Rolling back is moving the alias::

    .venv/bin/python -m pipelines.gate.registry set-champion <version>

Promotion registers the version, then moves the alias: if the move fails, the champion is
unchanged, and the version (removed when the store is still reachable) is reused by the
retry, never duplicated. A lock file serialises promotions into the local SQLite store (one
writer at a time); a server serialises them itself. ``promoted.json`` is a derived,
read-only export of the registry for readers without MLflow; the registry is the truth."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipelines import artefacts, tracking
from pipelines.files import atomic_write_json

CHAMPION = "champion"
FILES = "promoted"  # the artifact folder of a promotion in the decision run
ENTRY_FILE = "entry.json"
EXPORT_VERSION = 3
ROLLBACK_COMMAND = ".venv/bin/python -m pipelines.gate.registry set-champion <version>"


class RegistryError(RuntimeError):
    """A promotion could not complete; the message says what state the registry is in."""


def entry(task: str, partition: str, artefact: dict, base_model: dict, adapter: dict, record: dict) -> dict[str, Any]:
    """Everything needed to serve, reproduce or re-score the promoted model, and why it won."""
    return {
        "task": task,
        "partition": partition,
        "promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "artefact": artefact,
        "model_dir": artefact["path"],
        "base_model": {k: base_model.get(k) for k in ("name", "path", "source", "weights_sha256", "released")},
        "adapter_dir": adapter.get("adapter_dir"),
        "run_key": adapter.get("run_key"),
        "data_fingerprint": adapter.get("data_fingerprint"),
        "config_hash": adapter.get("config_hash"),
        "training_run_id": adapter.get("mlflow_run_id"),
        "decision_run_id": record.get("mlflow_run_id"),
        "suite_fingerprint": record["suite_fingerprint"],
        "scores": record["scores"],
        "p_value": record["p_value"],
        "margin": record["margin"],
        "reason": record["reason"],
    }


def version_tags(new: dict) -> dict[str, str]:
    """What a reviewer filters and reads on the model version page (the rest is in entry.json)."""
    scores = new.get("scores") or {}
    return tracking.tags(
        partition=new["partition"], artefact_id=new["artefact"]["id"], base_model=new["base_model"].get("name"),
        data_fingerprint=new.get("data_fingerprint"), eval_fingerprint=new.get("suite_fingerprint"),
        config_hash=new.get("config_hash"), tuned_pass_rate=(scores.get("tuned") or {}).get("pass_rate"),
        baseline_pass_rate=(scores.get("baseline") or {}).get("pass_rate"), p_value=new.get("p_value"),
        decision_run=new.get("decision_run_id"), training_run=new.get("training_run_id"),
    )  # fmt: skip


def _code(exc: Exception) -> str:
    return getattr(exc, "error_code", "")


def _registered(client, name: str):
    """The registered model, or None when it does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if _code(exc) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _alias_target(client, task: str) -> str | None:
    """The version number the ``champion`` alias points at, or None."""
    model = _registered(client, task)
    number = (model.aliases or {}).get(CHAMPION) if model else None
    return None if number is None else str(number)


def _read_entry(client, version) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(version.run_id, f"{FILES}/{ENTRY_FILE}", tmp)
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    return {**doc, "version": int(version.version), "source": version.source}


def champion(store: tracking.Store, task: str) -> dict | None:
    """The entry of the version the ``champion`` alias points at, or None. Raises
    RegistryError, naming the store, when it cannot be read."""
    from mlflow.exceptions import MlflowException

    client = store.client()
    try:
        number = _alias_target(client, task)
        if number is None:
            return None
        return _read_entry(client, client.get_model_version(task, number))
    except (MlflowException, OSError) as exc:
        raise RegistryError(f"cannot read the {task!r} champion from the MLflow store {store.uri}: {exc}") from exc


def champion_model_dir(store: tracking.Store, entry: dict, cache_dir: Path) -> Path:
    """A local folder holding exactly the champion's artefact: the folder it was built in if
    that still verifies, else its registered files, downloaded once into ``cache_dir``.
    Raises FileNotFoundError or ValueError, naming both places, when neither holds it."""
    expected = entry["artefact"]
    try:
        artefacts.verify(expected, Path(entry["model_dir"]))
        return Path(entry["model_dir"])
    except (FileNotFoundError, ValueError) as exc:
        local_problem = str(exc)
    target = Path(cache_dir) / expected["id"][:16]
    if not target.is_dir():
        import mlflow.artifacts

        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
        try:
            got = mlflow.artifacts.download_artifacts(artifact_uri=entry["source"], dst_path=str(staging),
                                                      tracking_uri=store.uri)  # fmt: skip
            os.replace(got, target)
        except Exception as exc:  # any MLflow/IO failure: the champion is not available
            raise FileNotFoundError(f"{local_problem}; its registered files {entry['source']} "
                                    f"could not be downloaded ({exc})") from exc  # fmt: skip
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    artefacts.verify(expected, target)
    return target


@contextlib.contextmanager
def _serialised(store: tracking.Store) -> Iterator[None]:
    """One promotion at a time into a local store (SQLite has one writer)."""
    if not store.is_local:
        yield
        return
    lock_path = store.artifact_root.parent / "registry.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _ensure_model(client, task: str) -> None:
    from mlflow.exceptions import MlflowException

    if _registered(client, task) is not None:
        return
    try:
        client.create_registered_model(task, tags=tracking.tags(task=task),
                                       description=f"tunegate champions of the task {task!r}")  # fmt: skip
    except MlflowException as exc:
        if _code(exc) != "RESOURCE_ALREADY_EXISTS":  # a concurrent promotion created it
            raise


def _version_of(client, task: str, artefact_id: str):
    """The version already registered for this artefact (a retry, or a re-promotion)."""
    found = client.search_model_versions(f"name='{task}' and tag.`{tracking.TAG}artefact_id`='{artefact_id}'")
    return min(found, key=lambda v: int(v.version)) if found else None


def _log_files(client, new: dict, base_model: dict) -> str:
    """Upload the judged artefact to the decision run; the version's source URI."""
    run_id = new["decision_run_id"]
    if not run_id:
        raise RegistryError("the gate decision carries no MLflow run id: re-run gate_decision")
    client.log_artifacts(run_id, new["model_dir"], f"{FILES}/model")
    adapter_dir = new.get("adapter_dir")
    if adapter_dir and Path(adapter_dir).is_dir():
        client.log_artifacts(run_id, adapter_dir, f"{FILES}/adapter")
    client.log_dict(run_id, base_model, f"{FILES}/base_model.json")
    client.log_dict(run_id, new, f"{FILES}/{ENTRY_FILE}")
    return f"{client.get_run(run_id).info.artifact_uri}/{FILES}/model"


def promote(store: tracking.Store, new: dict, base_model: dict) -> dict:
    """Register ``new`` (an ``entry``) as a version of its task's model and move the
    ``champion`` alias to it: both, or the champion as it was. Returns the entry with its
    version number."""
    task = new["task"]
    with _serialised(store):
        client = store.client()
        _ensure_model(client, task)
        version, created = _version_of(client, task, new["artefact"]["id"]), False
        if version is None:
            source = _log_files(client, new, base_model)
            version = client.create_model_version(task, source, run_id=new["decision_run_id"],
                                                  tags=version_tags(new), description=new["reason"])  # fmt: skip
            created = True
        number = str(version.version)
        try:
            client.set_registered_model_alias(task, CHAMPION, number)
        except Exception as exc:  # the server went away, a permission, anything: undo what we can
            raise RegistryError(_undo(client, task, number, created, exc)) from exc
    return {**new, "version": int(number), "source": version.source}


def _undo(client, task: str, number: str, created: bool, cause: Exception) -> str:
    """After a failed alias move: drop the version this attempt created if the store still
    answers and the alias is not on it; the message says what the registry now holds."""
    head = f"{task} version {number} was registered but `{CHAMPION}` could not be moved to it ({cause})"
    try:
        current = _alias_target(client, task)
        if created and current != number:
            client.delete_model_version(task, number)
            return f"{head}; version {number} was removed, the champion is unchanged (version {current})"
    except Exception as exc:  # the store is unreachable: leave the version, the retry reuses it
        return (f"{head}; the store did not answer the clean-up ({exc}): the champion is unchanged, version "
                f"{number} stays unaliased and a retry promotes it")  # fmt: skip
    return f"{head}; the champion is unchanged (version {current})"


def set_champion(store: tracking.Store, task: str, version: int) -> dict:
    """Point ``champion`` at an existing version (the rollback); its entry."""
    client = store.client()
    target = client.get_model_version(task, str(version))  # fails, naming the version, if absent
    client.set_registered_model_alias(task, CHAMPION, str(target.version))
    return _read_entry(client, target)


def export(store: tracking.Store, path: Path) -> Path:
    """Write the derived, read-only ``promoted.json``: every tunegate task's champion entry
    and its versions. The registry stays the truth; this file is rewritten, never read."""
    client = store.client()
    models = [m for m in client.search_registered_models() if f"{tracking.TAG}task" in (m.tags or {})]
    doc: dict[str, Any] = {
        "version": EXPORT_VERSION,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "note": "derived from the MLflow registry: move the `champion` alias to change it",
        "champions": {},
        "versions": {},
    }
    for model in sorted(models, key=lambda m: m.name):
        found = champion(store, model.name)
        if found:
            doc["champions"][model.name] = found
        aliases: dict[int, list[str]] = {}  # a search does not fill in aliases; the model has them
        for alias, number in (model.aliases or {}).items():
            aliases.setdefault(int(number), []).append(alias)
        versions = client.search_model_versions(f"name='{model.name}'")
        doc["versions"][model.name] = [
            {"version": int(v.version), "aliases": sorted(aliases.get(int(v.version), [])), "source": v.source,
             "run_id": v.run_id, "tags": dict(v.tags or {})}
            for v in sorted(versions, key=lambda v: int(v.version))
        ]  # fmt: skip
    path = Path(path)
    atomic_write_json(path, doc)
    path.chmod(0o444)
    return path


# --------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    """``show`` the champion, or ``set-champion <version>`` (the rollback), in the store the
    pipeline uses (``MLFLOW_TRACKING_URI``, tunegate.yaml ``mlflow.tracking_uri``, else the
    local store under ``TUNEGATE_HOME``)."""
    from pipelines import config
    from pipelines.config import REPO_ROOT
    from pipelines.evaluation.task import load_task

    parser = argparse.ArgumentParser(prog="python -m pipelines.gate.registry", description=main.__doc__)
    parser.add_argument("--task", help="registered model (default: the task of tunegate.yaml eval.task_file)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("show", help="print the champion's entry")
    move = sub.add_parser("set-champion", help="move the `champion` alias to VERSION (a rollback)")
    move.add_argument("version", type=int)
    args = parser.parse_args(argv)

    settings = config.load_settings(config.default_settings_file())
    home = config.default_home()
    store = tracking.resolve("", settings.mlflow.tracking_uri, home)
    task_file = Path(settings.eval.task_file)
    task = args.task or load_task(task_file if task_file.is_absolute() else REPO_ROOT / task_file).name
    if args.command == "set-champion":
        found = set_champion(store, task, args.version)
        export(store, config.Layout(home).registry_file)
        print(f"{task}: `{CHAMPION}` -> version {found['version']} "
              f"({found['partition']}, artefact {found['artefact']['id'][:16]})")
    else:
        print(json.dumps(champion(store, task), indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
