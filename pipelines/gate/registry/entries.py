"""A registry version's entry, ``RegistryEntry`` (everything needed to serve, reproduce or
re-score the artefact, and why it won: ``entry.json``), and its MLflow tags."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from pipelines.common import tracking
from pipelines.common.metadata import Markdown, Metadata, PathValue
from pipelines.common.typed_records import from_fields
from pipelines.gate.report import DecisionRecord, Scores
from pipelines.models.materialize import BaseModelInfo
from pipelines.training.adapter import AdapterRecord

CHAMPION = "champion"


FILES = "promoted"  # the artifact folder of a promotion in the decision run


ENTRY_FILE = "entry.json"


ROLLBACK_COMMAND = ".venv/bin/python -m pipelines.gate.registry set-champion <version>"


class RegistryError(RuntimeError):
    """A promotion could not complete; the message says what state the registry is in."""


@dataclass(frozen=True)
class RegistryEntry:
    """Everything needed to serve, reproduce or re-score a promoted model, and why it won.
    ``version`` and ``source`` (the registered files' URI) are the registry's, set once the
    version exists; ``entry.json`` holds the rest."""

    task: str
    partition: str
    promoted_at: str
    artefact: dict[str, Any]  # pipelines.models.artefacts.identity(...)
    model_dir: str
    base_model: dict[str, Any]  # name, path, source, weights_sha256, released
    adapter_dir: str | None
    run_key: str | None
    data_fingerprint: str | None
    config_hash: str | None
    training_run_id: str | None
    decision_run_id: str | None
    suite_fingerprint: str
    scores: Scores
    p_value: float
    margin: float
    reason: str
    version: int | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["scores"] = self.scores.to_dict()
        for key in ("version", "source"):  # not registered yet: entry.json as it is uploaded
            if out[key] is None:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegistryEntry:
        """An entry from its ``to_dict()``; RecordError when it does not parse."""
        return from_fields(cls, data, scores=Scores.from_dict)

    def metadata(self) -> Metadata:
        """The promoted version as the UI shows it."""
        return {
            "registered_model": self.task,
            "version": int(self.version),
            "alias": CHAMPION,
            "source": self.source,
            "rollback": Markdown(f"```\n{ROLLBACK_COMMAND}\n```"),
            "model_dir": PathValue(self.model_dir),
            "artefact_id": self.artefact["id"],
            "task": self.task,
            "base_model": self.base_model["name"],
            "data_fingerprint": self.data_fingerprint or "",
            "tuned_pass_rate": float(self.scores.tuned.pass_rate),
            "baseline_pass_rate": float(self.scores.baseline.pass_rate),
            "p_value": float(self.p_value),
            "reason": self.reason,
        }


def entry(
    task: str, partition: str, artefact: dict, base_model: BaseModelInfo, adapter: AdapterRecord, record: DecisionRecord
) -> RegistryEntry:
    """Everything needed to serve, reproduce or re-score the promoted model, and why it won."""
    return RegistryEntry(
        task=task,
        partition=partition,
        promoted_at=datetime.now(UTC).isoformat(timespec="seconds"),
        artefact=artefact,
        model_dir=artefact["path"],
        base_model={k: getattr(base_model, k) for k in ("name", "path", "source", "weights_sha256", "released")},
        adapter_dir=adapter.adapter_dir,
        run_key=adapter.run_key,
        data_fingerprint=adapter.data_fingerprint,
        config_hash=adapter.config_hash,
        training_run_id=adapter.mlflow_run_id,
        decision_run_id=record.mlflow_run_id,
        suite_fingerprint=record.suite_fingerprint,
        scores=record.scores,
        p_value=record.decision.p_value,
        margin=record.decision.margin,
        reason=record.decision.reason,
    )


def version_tags(new: RegistryEntry) -> dict[str, str]:
    """What a reviewer filters and reads on the model version page (the rest is in entry.json)."""
    return tracking.tags(
        partition=new.partition,
        artefact_id=new.artefact["id"],
        base_model=new.base_model.get("name"),
        data_fingerprint=new.data_fingerprint,
        eval_fingerprint=new.suite_fingerprint,
        config_hash=new.config_hash,
        tuned_pass_rate=new.scores.tuned.pass_rate,
        baseline_pass_rate=new.scores.baseline.pass_rate,
        p_value=new.p_value,
        decision_run=new.decision_run_id,
        training_run=new.training_run_id,
    )
