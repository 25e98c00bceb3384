"""Evaluation: the prompt-only baseline and the tuned model, scored by promptfoo.

Thin shells over ``pipelines.promptfoo`` (config, run, parse) and ``pipelines.generation``
(the model, loaded exactly as trained). Each asset returns a ScoreCard dict (see the stage
contract); its metadata is the summary a reviewer reads in the UI: pass rate with a 95 %
Wilson interval, per-check pass rates, the worst failures, latency and tokens, and how to
open the full run in ``promptfoo view``."""

from pathlib import Path

import dagster as dg

from pipelines import promptfoo as pf
from pipelines.config import REPO_ROOT, ConfigError
from pipelines.generation import ModelSpec
from pipelines.partitions import base_model_partitions
from pipelines.resources import PromptfooResource, TunegateResource

GROUP = "evaluation"
KINDS = {"promptfoo", "python"}


def _repo_path(value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else REPO_ROOT / path


def _score(
    context: dg.AssetExecutionContext,
    tunegate: TunegateResource,
    promptfoo: PromptfooResource,
    contender: str,
    suite: pf.Suite,
    model: ModelSpec,
) -> dg.MaterializeResult:
    """Run one promptfoo scoring and turn the ScoreCard into the asset's value + metadata."""
    settings = tunegate.settings().eval
    slug = tunegate.base_model(context.partition_key).slug
    run_name = contender if suite.name == "task" else f"{contender}-general"
    run_dir = tunegate.layout.eval_dir(slug, run_name)
    context.log.info(f"scoring {run_name} on {len(suite.cases)} cases with promptfoo in {run_dir}")
    try:
        card = pf.evaluate(
            run_dir,
            suite,
            contender,
            model,
            promptfoo.runner(settings.timeout_s),
            batch_size=settings.batch_size,
            max_concurrency=settings.max_concurrency,
        )
    except pf.PromptfooError as exc:
        raise dg.Failure(
            description=f"promptfoo scoring of {run_name} failed: {exc}",
            metadata={"run_dir": dg.MetadataValue.path(str(run_dir))},
        ) from exc
    metadata = {
        "pass_rate": dg.MetadataValue.float(round(card["pass_rate"], 4)),
        "ci_95": f"[{card['ci_low']:.3f}, {card['ci_high']:.3f}]",
        "passed": dg.MetadataValue.int(card["passed"]),
        "n": dg.MetadataValue.int(card["n"]),
        "checks": dg.MetadataValue.md(pf.assertion_table_md(card)),
        "worst_failures": dg.MetadataValue.md(pf.worst_failures_md(card)),
        "mean_latency_ms": dg.MetadataValue.float(round(card["mean_latency_ms"], 1)),
        "mean_output_tokens": dg.MetadataValue.float(round(card["mean_output_tokens"], 2)),
        "promptfoo_seconds": dg.MetadataValue.float(round(card["duration_s"], 1)),
        "results_path": dg.MetadataValue.path(card["results_path"]),
        "config_path": dg.MetadataValue.path(card["config_path"]),
        "open_in_promptfoo": dg.MetadataValue.md(f"```\n{pf.view_command(card)}\n```"),
        "eval_fingerprint": card["eval_fingerprint"],
        "model": dg.MetadataValue.json(card["model"]),
    }
    if card["target_pass_rate"] is not None:
        metadata["target_pass_rate"] = dg.MetadataValue.float(card["target_pass_rate"])
    if card["few_shot_ids"]:
        metadata["few_shot_ids_from_train"] = ", ".join(card["few_shot_ids"])
    context.log.info(
        f"{run_name}: {card['passed']}/{card['n']} passed ({card['pass_rate']:.1%}, "
        f"95% CI {card['ci_low']:.1%}-{card['ci_high']:.1%})"
    )
    return dg.MaterializeResult(value=card, metadata=metadata)


def _task_suite(tunegate: TunegateResource, eval_set: dict, contender: str, train_set: dict | None):
    settings = tunegate.settings().eval
    try:
        task = pf.load_task(_repo_path(settings.task_file))
        return pf.task_suite(
            task,
            Path(eval_set["path"]),
            contender,
            train_path=Path(train_set["path"]) if train_set else None,
            few_shot_k=settings.few_shot_k if contender == "baseline" else 0,
        )
    except ConfigError as exc:
        raise dg.Failure(description=str(exc)) from exc


def _general_suite(tunegate: TunegateResource) -> pf.Suite:
    settings = tunegate.settings().eval
    try:
        return pf.general_suite(_repo_path(settings.general_file), settings.general_max_new_tokens)
    except ConfigError as exc:
        raise dg.Failure(description=str(exc)) from exc


def _tuned_model(adapter: dict, eval_set: dict | None = None) -> ModelSpec:
    if eval_set is not None and adapter.get("data_fingerprint") not in (None, eval_set["fingerprint"]):
        raise dg.Failure(
            description=(
                "the adapter was trained on another dataset version "
                f"({str(adapter['data_fingerprint'])[:12]} vs eval_set {eval_set['fingerprint'][:12]}): "
                "its eval split may overlap that training data; rematerialise qlora_adapter"
            )
        )
    return ModelSpec.tuned(adapter)


def _base_model(tunegate: TunegateResource, partition_key: str, base_model: dict) -> ModelSpec:
    """The base model, with the chat template the registry says training uses."""
    return ModelSpec.base(base_model, tunegate.base_model(partition_key).chat_template)


@dg.asset(
    partitions_def=base_model_partitions,
    group_name=GROUP,
    kinds=KINDS,
    description=(
        "The prompt-only baseline, scored BEFORE any training: the base model with a strong "
        "prompt (evals/task.yaml's system prompt + eval.few_shot_k examples from the TRAIN "
        "split) on the held-out eval split, by promptfoo with the task's built-in checks. "
        "If it already meets target_pass_rate, training is skipped."
    ),
)
def baseline_scores(
    context: dg.AssetExecutionContext,
    tunegate: TunegateResource,
    promptfoo: PromptfooResource,
    train_set: dict,
    eval_set: dict,
    base_model: dict,
) -> dg.MaterializeResult:
    suite = _task_suite(tunegate, eval_set, "baseline", train_set)
    model = _base_model(tunegate, context.partition_key, base_model)
    return _score(context, tunegate, promptfoo, "baseline", suite, model)


@dg.asset(
    partitions_def=base_model_partitions,
    group_name=GROUP,
    kinds=KINDS,
    description=(
        "The tuned model on the same held-out cases: the base model in 4-bit NF4 (as trained) "
        "plus the QLoRA adapter, prompted exactly as in training (its chat template and the "
        "records' own system prompt), scored by promptfoo with the same checks."
    ),
)
def tuned_scores(
    context: dg.AssetExecutionContext,
    tunegate: TunegateResource,
    promptfoo: PromptfooResource,
    eval_set: dict,
    qlora_adapter: dict,
) -> dg.MaterializeResult:
    suite = _task_suite(tunegate, eval_set, "tuned", None)
    return _score(context, tunegate, promptfoo, "tuned", suite, _tuned_model(qlora_adapter, eval_set))


@dg.asset(
    partitions_def=base_model_partitions,
    group_name=GROUP,
    kinds=KINDS,
    description=(
        "General-skills check of the base model (evals/general.jsonl: arithmetic, facts, "
        "format following it gets right): the reference for catastrophic forgetting."
    ),
)
def baseline_general_scores(
    context: dg.AssetExecutionContext,
    tunegate: TunegateResource,
    promptfoo: PromptfooResource,
    base_model: dict,
) -> dg.MaterializeResult:
    model = _base_model(tunegate, context.partition_key, base_model)
    return _score(context, tunegate, promptfoo, "baseline", _general_suite(tunegate), model)


@dg.asset(
    partitions_def=base_model_partitions,
    group_name=GROUP,
    kinds=KINDS,
    description=(
        "The same general-skills check with the adapter loaded (4-bit base + QLoRA): the gate "
        "refuses an adapter that forgot how to follow ordinary instructions."
    ),
)
def tuned_general_scores(
    context: dg.AssetExecutionContext,
    tunegate: TunegateResource,
    promptfoo: PromptfooResource,
    qlora_adapter: dict,
) -> dg.MaterializeResult:
    return _score(
        context, tunegate, promptfoo, "tuned", _general_suite(tunegate), _tuned_model(qlora_adapter)
    )


__all__ = ["baseline_scores", "tuned_scores", "baseline_general_scores", "tuned_general_scores"]
