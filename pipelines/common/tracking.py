"""Experiment tracking in MLflow: where the store is, and one run per thing worth comparing.

The store is the local ``sqlite:///<home>/mlflow/mlflow.db`` (artifacts beside it, no set-up)
unless a tracking URI is configured: ``TunegateResource.mlflow_tracking_uri``, then the
``MLFLOW_TRACKING_URI`` environment variable, then ``tunegate.yaml`` ``mlflow.tracking_uri``
(an ``http://`` server, or any URI MLflow accepts). Everything goes to one experiment per
task, ``tunegate-<task>``, so training runs, score cards and gate decisions sit side by side
in the UI, filterable by their ``tunegate.*`` tags:

- training logs through Axolotl's own MLflow integration: the generated YAML carries
  ``use_mlflow`` and friends (``axolotl_keys``), the tags ride in ``MLFLOW_TAGS``;
- every score card is one finished run (``log_scores``): pass rate, CI, tokens, latency;
- every gate decision is one run (``log_decision``): the numbers, the paired counts, the
  p-values, and the markdown report and full record as artifacts.

Plain Python, no Dagster. ``mlflow`` is imported lazily: it costs seconds to import."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the records sit above this module
    from pipelines.evaluation.scorecard import ScoreCard
    from pipelines.gate.decision import Pairing
    from pipelines.gate.report import DecisionRecord

TAG = "tunegate."  # prefix of every tag tunegate sets
STORE_DIR = "mlflow"
ENV_URI = "MLFLOW_TRACKING_URI"
MAX_TAG_CHARS = 5000  # MLflow's limit on a tag value


def experiment_name(task: str) -> str:
    return f"tunegate-{task}"


def tags(**values: Any) -> dict[str, str]:
    """``tunegate.<key>`` tags from keyword values; None is dropped, the rest become strings."""
    return {TAG + key: str(value)[:MAX_TAG_CHARS] for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class Store:
    """A tracking + registry store: its URI and, for the embedded local store, the folder
    its artifacts go to (a server decides that itself)."""

    uri: str
    artifact_root: Path | None = None

    @property
    def is_local(self) -> bool:
        return self.artifact_root is not None

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created on first use (tolerating a concurrent creator)."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = (self.artifact_root / name).as_uri() if self.artifact_root else None
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id


def resolve(configured: str, settings_uri: str, home: Path) -> Store:
    """The store to use: ``configured`` (the resource), else ``$MLFLOW_TRACKING_URI``, else
    ``settings_uri`` (tunegate.yaml), else the local SQLite store under ``home``. A SQLite
    store keeps its artifacts in ``artifacts/`` beside the database file."""
    uri = configured or os.environ.get(ENV_URI, "") or settings_uri
    if not uri:
        folder = Path(home).resolve() / STORE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{folder / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):  # a local database: artifacts beside it, not in ./mlruns of the cwd
        return Store(uri, artifact_root=Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts")
    return Store(uri)


# --------------------------------------------------------------------------- training (Axolotl)
def axolotl_keys(store: Store, experiment: str, run_name: str) -> dict[str, Any]:
    """The keys that switch on Axolotl's own MLflow integration (HF's MLflowCallback)."""
    return {
        "use_mlflow": True,
        "mlflow_tracking_uri": store.uri,
        "mlflow_experiment_name": experiment,
        "mlflow_run_name": run_name,
    }


def tags_env(run_tags: dict[str, str]) -> dict[str, str]:
    """HF's MLflowCallback sets the tags it finds in ``MLFLOW_TAGS`` (JSON) on its run."""
    return {"MLFLOW_TAGS": json.dumps(run_tags, sort_keys=True)}


def find_run(store: Store, experiment: str, **match: str) -> str | None:
    """The newest run of ``experiment`` whose ``tunegate.*`` tags equal ``match``, or None."""
    client = store.client()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    where = " and ".join(f"tags.`{TAG}{key}` = '{value}'" for key, value in match.items())
    runs = client.search_runs([found.experiment_id], where, order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


# --------------------------------------------------------------------------- runs of ours
def _log_run(
    store: Store,
    experiment: str,
    run_name: str,
    run_tags: dict[str, str],
    metrics: dict[str, float | None],
    params: dict[str, Any] | None = None,
    texts: dict[str, str] | None = None,
) -> str:
    """One finished run with its numbers, params, tags and text artifacts; its id."""
    from mlflow.entities import Metric, Param

    client = store.client()
    run = client.create_run(store.experiment_id(experiment), run_name=run_name, tags=run_tags)
    run_id = run.info.run_id
    try:
        now = run.info.start_time
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None],
            params=[Param(k, str(v)[:6000]) for k, v in (params or {}).items()],
        )
        for name, text in (texts or {}).items():
            client.log_text(run_id, text, name)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


CARD_METRICS = (
    "pass_rate",
    "passed",
    "n",
    "ci_low",
    "ci_high",
    "mean_prompt_tokens",
    "mean_output_tokens",
    "mean_latency_ms",
    "target_pass_rate",
)


def log_scores(
    store: Store,
    experiment: str,
    stage: str,
    partition: str,
    cards: dict[str, ScoreCard],
    extra_tags: dict[str, str] | None = None,
) -> dict[str, str]:
    """One run per score card (``<stage>/<contender> @ <partition>``); contender -> run id."""
    run_ids = {}
    for contender, card in cards.items():
        run_tags = {
            **tags(
                kind="scoring",
                stage=stage,
                partition=partition,
                contender=contender,
                suite_fingerprint=card.suite_fingerprint,
                artefact_id=(card.artefact or {}).get("id"),
                cache_hit=card.cache_hit,
                results_path=card.results_path,
            ),
            **(extra_tags or {}),
        }
        params = {"prompt": card.recipe_text, "recipe": json.dumps(card.recipe, default=str)}
        run_ids[contender] = _log_run(
            store,
            experiment,
            f"{stage}/{contender} @ {partition}",
            run_tags,
            {k: getattr(card, k) for k in CARD_METRICS},
            params,
        )
    return run_ids


def _pairing_metrics(prefix: str, pairing: Pairing | None, first: str, second: str) -> dict[str, float]:
    if pairing is None:
        return {}
    return {
        f"{prefix}.n": pairing.n,
        f"{prefix}.both": pairing.both,
        f"{prefix}.only_{first}": pairing.only_first,
        f"{prefix}.only_{second}": pairing.only_second,
        f"{prefix}.neither": pairing.neither,
    }


def decision_metrics(record: DecisionRecord) -> dict[str, float | None]:
    """The gate's numbers as MLflow metrics: verdict, margins, p-values, paired counts."""
    decision, scores = record.decision, record.scores
    forgetting = decision.forgetting
    metrics: dict[str, float | None] = {
        "promote": 1.0 if decision.promote else 0.0,
        "margin": decision.margin,
        "p_value": decision.p_value,
        "champion_p_value": decision.champion_p_value,
        "general_drop": forgetting.total.difference,
        "general_drop_upper": forgetting.drop_upper,
        "tuned_pass_rate": scores.tuned.pass_rate,
        "baseline_pass_rate": scores.baseline.pass_rate,
        "champion_pass_rate": scores.champion.pass_rate if scores.champion else None,
        "break_even_calls_per_month": record.cost.break_even_calls_per_month,
    }
    metrics.update(_pairing_metrics("vs_baseline", decision.versus_baseline, "tuned", "baseline"))
    metrics.update(_pairing_metrics("vs_champion", decision.versus_champion, "tuned", "champion"))
    for step in ("quantisation", "adapter", "total"):
        metrics.update(_pairing_metrics(f"general.{step}", getattr(forgetting, step), "before", "after"))
    for check in decision.checks:
        metrics[f"check.{check.name}.passed"] = 1.0 if check.passed else 0.0
        metrics[f"check.{check.name}.value"] = check.value
    return metrics


def log_decision(
    store: Store, experiment: str, partition: str, record: DecisionRecord, extra_tags: dict[str, str] | None = None
) -> str:
    """The gate decision as a run: metrics, thresholds as params, report and record as artifacts."""
    decision = record.decision
    verdict = "PROMOTE" if decision.promote else "DO NOT PROMOTE"
    run_tags = {
        **tags(
            kind="gate_decision",
            partition=partition,
            promote=decision.promote,
            reason=decision.reason,
            baseline_rung=decision.baseline_rung,
            candidate_artefact_id=record.candidate["id"],
            suite_fingerprint=record.suite_fingerprint,
            champion_status=decision.champion.status,
        ),
        **(extra_tags or {}),
    }
    run_tags["mlflow.note.content"] = f"{verdict}: {decision.reason}"[:MAX_TAG_CHARS]
    params = {f"threshold.{c.name}": c.threshold for c in decision.checks}
    params["baseline_rung"] = decision.baseline_rung
    texts = {"report.md": record.report_md, "decision.json": json.dumps(record.to_dict(), indent=2, default=str)}
    return _log_run(store, experiment, f"gate @ {partition}", run_tags, decision_metrics(record), params, texts)
