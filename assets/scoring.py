"""What every scoring asset shares: the suites, one promptfoo scoring run per model, and a
score card rendered as Dagster metadata. Used by ``assets.evaluation`` (ladder, tuned model,
general skills) and ``assets.promotion`` (the champion's re-score), so neither asset module
imports the other."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from pipelines import artefacts, tracking
from pipelines.config import REPO_ROOT, ConfigError
from pipelines.evaluation import suite as suites
from pipelines.evaluation.runner import PromptfooError
from pipelines.evaluation.scorecard import Contender, assertion_table_md, score, worst_failures_md
from pipelines.evaluation.task import load_task
from pipelines.evaluation.task_metrics import confusions_md, per_label_md, summary_md
from pipelines.generation import ModelSpec
from pipelines.orchestration.resources import PromptfooResource, TunegateResource


def repo_path(value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else REPO_ROOT / path


def task_spec(tunegate: TunegateResource):
    try:
        return load_task(repo_path(tunegate.settings().eval.task_file))
    except ConfigError as exc:
        raise dg.Failure(description=str(exc)) from exc


def experiment(tunegate: TunegateResource) -> str:
    """The MLflow experiment of this task: training, scores and decisions side by side."""
    return tracking.experiment_name(task_spec(tunegate).name)


def task_suite(tunegate: TunegateResource, eval_set: dict, train_path: Path | None = None) -> suites.Suite:
    """The held-out cases with the task's checks; a label task without ``output.labels``
    takes its label set from the train split (default: the one written with this eval split)."""
    try:
        return suites.task_suite(task_spec(tunegate), Path(eval_set["path"]), train_path or tunegate.layout.train_file,
                                 tunegate.settings().eval.max_cases)  # fmt: skip
    except ConfigError as exc:
        raise dg.Failure(description=str(exc)) from exc


def check_answer_budget(context, suite: suites.Suite, model_dir: Path) -> None:
    """Fail before generating when a json or label gold answer cannot fit in
    ``max_new_tokens`` (it could never pass); for a text task, warn."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    problem = suites.answer_budget_problem(suite, lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    if problem and (suite.scoring or {}).get("type") == "text":
        context.log.warning(problem)
    elif problem:
        raise dg.Failure(description=problem)


def general_suite(tunegate: TunegateResource) -> suites.Suite:
    settings = tunegate.settings().eval
    try:
        return suites.general_suite(repo_path(settings.general_file), settings.general_max_new_tokens)
    except ConfigError as exc:
        raise dg.Failure(description=str(exc)) from exc


def base_artefact(tunegate: TunegateResource, partition_key: str, base_model: dict) -> tuple[ModelSpec, dict]:
    """The fp32 base model with the chat template the registry says training uses."""
    template = tunegate.base_model(partition_key).chat_template
    model = ModelSpec(base_dir=base_model["path"], chat_template=template)
    return model, artefacts.identity(Path(base_model["path"]), template, {"dtype": "float32"})


def run_scoring(context, tunegate: TunegateResource, promptfoo: PromptfooResource, run_name: str,
                suite: suites.Suite, contenders: list[Contender], model: ModelSpec, train=None) -> dict[str, dict]:  # fmt: skip
    """Score contenders of one model in one promptfoo run (cached cards reused); each card is
    logged as an MLflow run (its id lands in the card as ``mlflow_run_id``)."""
    settings = tunegate.settings().eval
    slug = tunegate.base_model(context.partition_key).slug
    run_dir = tunegate.layout.eval_dir(slug, run_name)
    try:
        cards = score(run_dir, suite, contenders, model, promptfoo.runner(settings.timeout_s),
                      tunegate.layout.home / "evals" / "cards", train=train, batch_size=settings.batch_size,
                      max_concurrency=settings.max_concurrency, log=context.log.info)  # fmt: skip
    except PromptfooError as exc:
        raise dg.Failure(description=f"promptfoo scoring of {run_name} failed: {exc}",
                         metadata={"run_dir": dg.MetadataValue.path(str(run_dir))}) from exc  # fmt: skip
    run_ids = tracking.log_scores(tunegate.tracking_store(), experiment(tunegate), run_name, context.partition_key,
                                  cards, tracking.tags(suite=suite.name))  # fmt: skip
    return {name: {**card, "mlflow_run_id": run_ids[name]} for name, card in cards.items()}


def card_metadata(card: dict) -> dict:
    """The score card as the UI shows it."""
    metadata = {
        "pass_rate": dg.MetadataValue.float(round(card["pass_rate"], 4)),
        "ci_95": f"[{card['ci_low']:.3f}, {card['ci_high']:.3f}]",
        "passed": dg.MetadataValue.int(card["passed"]),
        "n": dg.MetadataValue.int(card["n"]),
        "checks": dg.MetadataValue.md(assertion_table_md(card)),
        "worst_failures": dg.MetadataValue.md(worst_failures_md(card)),
        "mean_prompt_tokens": dg.MetadataValue.float(round(card["mean_prompt_tokens"], 1)),
        "mean_output_tokens": dg.MetadataValue.float(round(card["mean_output_tokens"], 2)),
        "mean_latency_ms": dg.MetadataValue.float(round(card["mean_latency_ms"], 1)),
        "prompt": card.get("recipe_text", ""),
        "artefact_id": card["artefact"]["id"],
        "suite_fingerprint": card["suite_fingerprint"],
        "cache_hit": card["cache_hit"],
        "promptfoo_seconds": dg.MetadataValue.float(round(card.get("run_seconds", 0.0), 1)),
        "results_path": dg.MetadataValue.path(card["results_path"]),
        "mlflow_run_id": card.get("mlflow_run_id", ""),
        "open_in_promptfoo": dg.MetadataValue.md(f"```\n{card['view_command']}\n```"),
    }
    metrics = card.get("task_metrics")
    if metrics:
        metadata["task_metrics"] = dg.MetadataValue.md(summary_md(metrics))
        if metrics["type"] == "label":
            metadata["per_label_accuracy"] = dg.MetadataValue.md(per_label_md(metrics))
            metadata["confusions"] = dg.MetadataValue.md(confusions_md(metrics))
    if card.get("target_pass_rate") is not None:
        metadata["target_pass_rate"] = dg.MetadataValue.float(card["target_pass_rate"])
    return metadata


def log_card(context, name: str, card: dict) -> None:
    context.log.info(f"{name}: {card['passed']}/{card['n']} passed ({card['pass_rate']:.1%}, "
                     f"95% CI {card['ci_low']:.1%}-{card['ci_high']:.1%}), "
                     f"{card['mean_prompt_tokens']:.0f} prompt tokens/call")  # fmt: skip
