"""Planted score cards and what the gate makes of them, for tests of the gate, the registry
and the promotion assets: hand-made cards (the evaluation stage's contract), paired
outcomes, the general-skills cards, a decision with the shipped settings, the cost table,
and a real gate record for a win logged to MLflow, made into a registry candidate and
promoted. The "model folders" here are small folders of bytes: the registry hashes and
copies files, it never loads them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pipelines.common import stats, tracking
from pipelines.config.gate import CostSettings, GateSettings
from pipelines.evaluation.scorecard import CaseResult, ScoreCard
from pipelines.gate import cost, decision, registry, report
from pipelines.gate.decision import ChampionInput
from pipelines.gate.registry import RegistryEntry
from pipelines.gate.report import DecisionRecord, Scores
from pipelines.models import artefacts
from pipelines.models.materialize import BaseModelInfo
from pipelines.training.adapter import AdapterRecord
from pipelines.training.run_plan import RunPlan

SETTINGS = GateSettings()  # the shipped defaults: margin 0.05, alpha 0.05, general drop 0.05
FP = "task-suite-fp-01"  # 16 characters: error messages show the first 16 of a fingerprint
OTHER_FP = "task-suite-fp-02"
GFP = "general-suite-01"
NO_CHAMPION = ChampionInput("none")
TRAINING = cost.TrainingTime(train_runtime_s=1800.0, tokens_per_second=1000.0)


def card(
    contender: str,
    outcomes: list[bool],
    suite: str = "task",
    fingerprint: str | None = FP,
    prompt_tokens: float = 300.0,
    target: float | None = None,
) -> ScoreCard:
    """A score card with one case per outcome (ids c0, c1, ...)."""
    n = len(outcomes)
    passed = sum(outcomes)
    return ScoreCard(
        contender=contender,
        suite=suite,
        suite_fingerprint=fingerprint,
        n=n,
        passed=passed,
        pass_rate=passed / n,
        ci_low=stats.wilson_interval(passed, n)[0],
        ci_high=stats.wilson_interval(passed, n)[1],
        target_pass_rate=target,
        assertion_pass_rates={},
        mean_latency_ms=120.0,
        mean_output_tokens=14.0,
        mean_prompt_tokens=prompt_tokens,
        results_path="/nowhere/results.json",
        recipe_text=f"recipe of {contender}",
        artefact={"id": f"artefact-of-{contender}", "path": f"/models/{contender}"},
        cases=[
            CaseResult(id=f"c{i}", passed=ok, output="", gold="", latency_ms=1.0, output_tokens=3)
            for i, ok in enumerate(outcomes)
        ],
    )


def with_case(c: ScoreCard, index: int, **changes) -> ScoreCard:
    """``c`` with its case ``index`` changed."""
    cases = list(c.cases)
    cases[index] = replace(cases[index], **changes)
    return replace(c, cases=cases)


def champion_entry(partition: str) -> RegistryEntry:
    """The registry entry of a champion promoted on ``partition``: what the gate reads of it
    (partition, base model); the rest are placeholders (no promotion time, no files)."""
    summary = card("champion", [True]).summary()
    return RegistryEntry(
        task="task",
        partition=partition,
        promoted_at="",
        artefact={"id": f"artefact-on-{partition}"},
        model_dir=f"/models/{partition}",
        base_model={"name": partition},
        adapter_dir=None,
        run_key=None,
        data_fingerprint=None,
        config_hash=None,
        training_run_id=None,
        decision_run_id=None,
        suite_fingerprint=FP,
        scores=Scores(ladder={}, baseline=summary, tuned=summary, general={}),
        p_value=0.01,
        margin=0.1,
        reason="an earlier win",
        version=1,
    )


def outcomes(both: int, only_first: int, only_second: int, neither: int) -> tuple[list[bool], list[bool]]:
    first = [True] * both + [True] * only_first + [False] * only_second + [False] * neither
    second = [True] * both + [False] * only_first + [True] * only_second + [False] * neither
    return first, second


def paired(both: int, only_tuned: int, only_base: int, neither: int, **kw) -> tuple[ScoreCard, ScoreCard]:
    """(baseline rung ``static_few_shot``, tuned) with these paired counts."""
    tuned, base = outcomes(both, only_tuned, only_base, neither)
    return card("static_few_shot", base, **kw), card("tuned", tuned, **kw)


def general(reference: list[bool], candidate: list[bool], base_as_trained: list[bool] | None = None) -> dict:
    return {
        "reference": card("base", reference, "general", GFP),
        "base_as_trained": None
        if base_as_trained is None
        else card("base_as_trained", base_as_trained, "general", GFP),
        "candidate": card("tuned", candidate, "general", GFP),
    }


def general_ok() -> dict:
    """No item lost or gained on 200 items: an upper bound of +1.3 pts, within the allowance
    (on 10 items the same "no change" would leave +22 pts possible: not enough evidence)."""
    same = [True] * 180 + [False] * 20
    return general(same, same, same)


def decide(baseline, tuned, general_cards=None, champion=NO_CHAMPION, settings=SETTINGS, rungs=None):
    rungs = rungs or {baseline.contender: baseline}
    return decision.decide(rungs, tuned, general_cards or general_ok(), champion, settings)


WIN = (5, 12, 1, 2)  # the tune passes c0..c16 (85 %) vs the best prompt 30 %, McNemar p = 0.0017
LOSS = (5, 1, 8, 6)  # the tune passes 30 % vs the best prompt 65 %


PRICES = CostSettings(
    input_per_1m_tokens=0.10,
    output_per_1m_tokens=0.40,
    training_per_hour=2.0,
    calls_per_month=100_000,
    retunes_per_quarter=1.0,
)


def cost_of(baseline: ScoreCard, tuned: ScoreCard, prices: CostSettings = PRICES) -> cost.CostReport:
    return cost.cost_report({baseline.contender: baseline}, baseline.contender, tuned, TRAINING, prices)


def base_model_info(name: str = "tiny-llama", path: str | Path = "/models/tiny", **fields) -> BaseModelInfo:
    """What the ``base_model`` asset returns, for a model folder that need not exist."""
    values = {
        "source": str(path),
        "weights_sha256": "w",
        "size_bytes": 0,
        "parameters": 0,
        "eos_token": "<|im_end|>",
        "pad_token": "<|im_end|>",
        **fields,
    }
    return BaseModelInfo(name=name, path=str(path), **values)


def adapter_record(adapter_dir: str = "/runs/adapter", run_key: str = "run-1", **fields) -> AdapterRecord:
    """What ``qlora_adapter`` returns, for an adapter that need not exist."""
    values = {
        "base_model_dir": "/models/tiny",
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_compute_dtype": "float32",
        "bnb_config": {"load_in_4bit": True},
        "chat_template": "tokenizer_default",
        "eot_tokens": ["<|im_end|>"],
        "system_prompt_policy": "from_record",
        "data_fingerprint": "data-fp",
        "config_hash": "cfg-hash",
        "base_model_sha256": "w",
        "run_dir": "/runs",
        "mlflow_run_id": None,
        "eval_loss_first": 2.0,
        "eval_loss_last": 1.0,
        "train_loss_last": 1.0,
        "trainable_params": 1000,
        "train_runtime_s": 600.0,
        "tokens_per_second": 900.0,
        "versions": {},
        "how_to_load": "",
        **fields,
    }
    return AdapterRecord(adapter_dir=adapter_dir, run_key=run_key, **values)


# --------------------------------------------------------------------------- a win in the registry
def run_plan_double(run_dir: str = "/runs/run-1") -> RunPlan:
    """What ``axolotl_config`` returns, for a run that never starts (training skipped)."""
    return RunPlan(
        base_model="tiny-llama",
        slug="tiny-llama",
        config={},
        config_hash="cfg-hash",
        run_key="run-1",
        run_dir=Path(run_dir),
        data_fingerprint="data-fp",
        base_model_sha256="w",
        base_model_dir=Path("/models/tiny"),
        tokenizer_hash="t",
        cuda=False,
    )


BASE_MODEL = BaseModelInfo(
    name="tiny",
    path="/models/tiny",
    source="pkg:tiny",
    weights_sha256="w" * 64,
    size_bytes=0,
    parameters=0,
    eos_token="<|im_end|>",
    pad_token="<|im_end|>",
)


def model_folder(path: Path, content: bytes) -> Path:
    """A "model folder" of bytes: its weights and a config."""
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(content)
    (path / "config.json").write_text('{"model_type": "llama"}')
    return path


def logged_win(store: tracking.Store, task: str, partition: str, model_dir: Path) -> DecisionRecord:
    """A real gate record for a win, logged to MLflow like gate_decision logs it."""
    baseline, tuned = paired(*WIN)
    tuned = replace(tuned, artefact=artefacts.identity(model_dir, "chatml", {"dtype": "float32"}))
    record = report.decision_record(
        decide(baseline, tuned), {"static_few_shot": baseline}, tuned, general_ok(), cost_of(baseline, tuned)
    )
    return replace(
        record,
        mlflow_run_id=tracking.log_decision(
            store, tracking.experiment_name(task), partition, record, tracking.tags(data_fingerprint="data-fp")
        ),
    )


def candidate_entry(store, task, tmp_path, partition: str) -> RegistryEntry:
    """The registry entry of ``partition``'s win: its folders under ``tmp_path``, its logged decision."""
    model_dir = model_folder(tmp_path / "models" / partition, partition.encode() * 100)
    adapter_dir = model_folder(tmp_path / "adapters" / partition, b"adapter-" + partition.encode())
    record = logged_win(store, task, partition, model_dir)
    adapter = adapter_record(str(adapter_dir), f"run-{partition}", config_hash="cfg")
    return registry.entry(task, partition, record.candidate, BASE_MODEL, adapter, record)


def promote_candidate(store, task, tmp_path, partition: str) -> RegistryEntry:
    """``candidate_entry`` promoted: registered, and the champion."""
    return registry.promote(store, candidate_entry(store, task, tmp_path, partition), BASE_MODEL)
