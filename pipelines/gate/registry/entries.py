"""A registry version's entry (everything needed to serve, reproduce or re-score the
artefact, and why it won) and its MLflow tags."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pipelines.common import tracking

CHAMPION = "champion"


FILES = "promoted"  # the artifact folder of a promotion in the decision run


ENTRY_FILE = "entry.json"


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
