"""Evaluation: the prompt ladder, the tuned model and the general-skills checks, scored by
promptfoo on suites that training never saw.

Thin shells over ``pipelines.evaluation`` (recipes, suites, the promptfoo runner, score
cards). Each asset's value is a score card (or, for ``baseline_scores``, the whole ladder);
its metadata is what a reviewer reads in the UI: pass rate with a 95 % Wilson interval,
per-check pass rates, the worst failures, tokens and latency per call, and how to open the
run in ``promptfoo view``. Cards are cached by (artefact identity, recipe, suite
fingerprint): re-materialising an unchanged contender reuses its card.

The helpers every scoring asset shares (the suites, one promptfoo scoring run per model)
live here too; ``assets.gate`` uses them for the champion's re-score. Each card says how it
is shown (``ScoreCard.metadata()``); ``assets.metadata.to_dagster`` turns that into Dagster's."""

from dataclasses import replace
from pathlib import Path

import dagster as dg

from assets.metadata import to_dagster
from pipelines.common import tracking
from pipelines.common.jsonl import read_jsonl
from pipelines.config.base import ConfigError
from pipelines.config.evaluation import DEFAULT_LADDER, RungSettings
from pipelines.config.paths import REPO_ROOT
from pipelines.config.project import Project
from pipelines.data.split import SplitFile
from pipelines.evaluation import recipes
from pipelines.evaluation import suite as suites
from pipelines.evaluation.runner import PromptfooError
from pipelines.evaluation.scorecard import Contender, ScoreCard, score
from pipelines.evaluation.task import load_task
from pipelines.gate.decision import IncomparableCards
from pipelines.gate.ladder import Ladder
from pipelines.models import artefacts
from pipelines.models.loading import ModelSpec
from pipelines.models.materialize import BaseModelInfo
from pipelines.models.merge import BaseAsTrained, TunedModel
from pipelines.orchestration.partitions import base_model_partitions
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


def task_suite(tunegate: TunegateResource, eval_set: SplitFile, train_path: Path | None = None) -> suites.Suite:
    """The held-out cases with the task's checks; a label task without ``output.labels``
    takes its label set from the train split (default: the one written with this eval split)."""
    try:
        return suites.task_suite(
            task_spec(tunegate),
            Path(eval_set.path),
            train_path or tunegate.layout.train_file,
            tunegate.settings().eval.max_cases,
        )
    except ConfigError as exc:
        raise dg.Failure(description=str(exc)) from exc


def check_answer_budget(context, suite: suites.Suite, model_dir: Path) -> None:
    """Fail before generating when a json or label gold answer cannot fit in
    ``max_new_tokens`` (it could never pass); for a text task, warn."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    problem = suites.answer_budget_problem(
        suite, lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
    )
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


def base_artefact(tunegate: TunegateResource, partition_key: str, base_model: BaseModelInfo) -> tuple[ModelSpec, dict]:
    """The fp32 base model with the chat template the registry says training uses."""
    template = tunegate.base_model(partition_key).chat_template
    model = ModelSpec(base_dir=base_model.path, chat_template=template)
    return model, artefacts.identity(Path(base_model.path), template, {"dtype": "float32"})


def run_scoring(
    context,
    tunegate: TunegateResource,
    promptfoo: PromptfooResource,
    run_name: str,
    suite: suites.Suite,
    contenders: list[Contender],
    model: ModelSpec,
    train=None,
) -> dict[str, ScoreCard]:
    """Score contenders of one model in one promptfoo run (cached cards reused); each card is
    logged as an MLflow run (its id lands in the card as ``mlflow_run_id``)."""
    settings = tunegate.settings().eval
    slug = tunegate.base_model(context.partition_key).slug
    run_dir = tunegate.layout.eval_dir(slug, run_name)
    try:
        cards = score(
            run_dir,
            suite,
            contenders,
            model,
            promptfoo.runner(settings.timeout_s),
            tunegate.layout.home / "evals" / "cards",
            train=train,
            batch_size=settings.batch_size,
            max_concurrency=settings.max_concurrency,
            log=context.log.info,
        )
    except PromptfooError as exc:
        raise dg.Failure(
            description=f"promptfoo scoring of {run_name} failed: {exc}",
            metadata={"run_dir": dg.MetadataValue.path(str(run_dir))},
        ) from exc
    run_ids = tracking.log_scores(
        tunegate.tracking_store(),
        experiment(tunegate),
        run_name,
        context.partition_key,
        cards,
        tracking.tags(suite=suite.name),
    )
    return {name: replace(card, mlflow_run_id=run_ids[name]) for name, card in cards.items()}


def log_card(context, name: str, card: ScoreCard) -> None:
    context.log.info(
        f"{name}: {card.passed}/{card.n} passed ({card.pass_rate:.1%}, "
        f"95% CI {card.ci_low:.1%}-{card.ci_high:.1%}), "
        f"{card.mean_prompt_tokens:.0f} prompt tokens/call"
    )


GROUP = "evaluation"


KINDS = {"promptfoo", "python"}


LADDER_PREFIX = "ladder"


def build_prompt_ladder(ladder: tuple[RungSettings, ...]) -> dg.AssetsDefinition:
    """One asset per rung (``ladder/<name>``) plus ``baseline_scores`` (the strongest rung),
    all from ONE promptfoo run on the base model: one model load, one promptfoo start."""
    rung_keys = {rung.name: dg.AssetKey([LADDER_PREFIX, rung.name]) for rung in ladder}
    inputs = {dg.AssetKey("train_set"), dg.AssetKey("eval_set"), dg.AssetKey("base_model")}
    outs = {
        f"rung_{rung.name}": dg.AssetOut(
            key=rung_keys[rung.name],
            group_name=GROUP,
            kinds=KINDS,
            description=f"Prompt-only rung {rung.name!r} ({rung.recipe}, k={rung.k}) on the base model, scored by "
            "promptfoo on the held-out cases; examples from the TRAIN split only.",
        )
        for rung in ladder
    }
    outs["baseline_scores"] = dg.AssetOut(
        key="baseline_scores",
        group_name=GROUP,
        kinds=KINDS,
        description="The baseline to beat: the strongest rung of the prompt ladder (ties go to the cheaper prompt). "
        "If any rung meets the task's target_pass_rate, training is skipped.",
    )
    deps = {name: inputs for name in outs}
    deps["baseline_scores"] = set(rung_keys.values())

    @dg.multi_asset(name="prompt_ladder", outs=outs, partitions_def=base_model_partitions, internal_asset_deps=deps)
    def prompt_ladder(
        context: dg.AssetExecutionContext,
        tunegate: TunegateResource,
        promptfoo: PromptfooResource,
        train_set: SplitFile,
        eval_set: SplitFile,
        base_model: BaseModelInfo,
    ):
        configured = tunegate.settings().eval.ladder
        if tuple(configured) != tuple(ladder):
            raise dg.Failure(
                description=(
                    f"eval.ladder in {tunegate.settings_path()} is {[r.name for r in configured]}, but this code location "
                    f"was loaded with {[r.name for r in ladder]}: reload the code location (its assets come from the ladder)"
                )
            )
        task = task_spec(tunegate)
        suite = task_suite(tunegate, eval_set, Path(train_set.path))
        check_answer_budget(context, suite, Path(base_model.path))
        model, artefact = base_artefact(tunegate, context.partition_key, base_model)
        contenders = [Contender(r.name, artefact, recipes.for_task(r.recipe, task, r.k)) for r in ladder]
        train = list(read_jsonl(Path(train_set.path)))
        cards = run_scoring(context, tunegate, promptfoo, "ladder", suite, contenders, model, train=train)
        for rung in ladder:
            card = cards[rung.name]
            log_card(context, rung.name, card)
            yield dg.Output(card, output_name=f"rung_{rung.name}", metadata=to_dagster(card.metadata()))
        try:
            baseline_scores = Ladder.of(cards)
        except IncomparableCards as exc:
            raise dg.Failure(description=str(exc)) from exc
        best, skip = baseline_scores.baseline_rung, baseline_scores.skip_training
        context.log.info(f"baseline to beat: {best} ({cards[best].pass_rate:.1%})" + (f"; {skip}" if skip else ""))
        yield dg.Output(baseline_scores, output_name="baseline_scores", metadata=to_dagster(baseline_scores.metadata()))

    return prompt_ladder


# the schema's default ladder, for tests; the code location builds its own from tunegate.yaml
prompt_ladder = build_prompt_ladder(DEFAULT_LADDER)


def _tuned_model_spec(tuned_model: TunedModel) -> ModelSpec:
    return ModelSpec(base_dir=tuned_model.path, chat_template=tuned_model.chat_template)


def score_as_trained(
    context, tunegate, promptfoo, name: str, eval_set: SplitFile, model: ModelSpec, artefact: dict
) -> ScoreCard:
    """The card of a trained model (``model``, shipped as ``artefact``) on the held-out cases,
    prompted exactly as in training: the tuned model here, the re-scored champion in ``assets.gate``."""
    contender = Contender(name, artefact, recipes.Recipe("as_trained"))
    return run_scoring(context, tunegate, promptfoo, name, task_suite(tunegate, eval_set), [contender], model)[name]


@dg.asset(
    partitions_def=base_model_partitions,
    group_name=GROUP,
    kinds=KINDS,
    description=(
        "The tuned model on the same held-out cases: the adapter merged into the weights it was trained "
        "against (what ships), prompted exactly as in training, scored by promptfoo with the same checks."
    ),
)
def tuned_scores(
    context: dg.AssetExecutionContext,
    tunegate: TunegateResource,
    promptfoo: PromptfooResource,
    eval_set: SplitFile,
    tuned_model: TunedModel,
) -> dg.MaterializeResult:
    if tuned_model.data_fingerprint != eval_set.fingerprint:
        raise dg.Failure(
            description=(
                f"the tuned model was trained on dataset version {tuned_model.data_fingerprint!r}, the "
                f"held-out set is version {eval_set.fingerprint!r}: its eval split may overlap that "
                "training data; rematerialise qlora_adapter"
            )
        )
    card = score_as_trained(
        context, tunegate, promptfoo, "tuned", eval_set, _tuned_model_spec(tuned_model), tuned_model.artefact
    )
    log_card(context, "tuned", card)
    return dg.MaterializeResult(value=card, metadata=to_dagster(card.metadata()))


def _general(context, tunegate, promptfoo, name: str, model: ModelSpec, artefact: dict) -> dg.MaterializeResult:
    card = run_scoring(
        context, tunegate, promptfoo, f"{name}-general", general_suite(tunegate), [Contender(name, artefact)], model
    )[name]
    log_card(context, f"{name} general skills", card)
    return dg.MaterializeResult(value=card, metadata=to_dagster(card.metadata()))


@dg.asset(
    partitions_def=base_model_partitions,
    group_name=GROUP,
    kinds=KINDS,
    description=(
        "General skills (evals/general.jsonl: instruction following, arithmetic, facts) of the fp32 base "
        "model, the model that serves without tuning: the reference for forgetting."
    ),
)
def baseline_general_scores(
    context: dg.AssetExecutionContext,
    tunegate: TunegateResource,
    promptfoo: PromptfooResource,
    base_model: BaseModelInfo,
) -> dg.MaterializeResult:
    model, artefact = base_artefact(tunegate, context.partition_key, base_model)
    return _general(context, tunegate, promptfoo, "base", model, artefact)


@dg.asset(
    partitions_def=base_model_partitions,
    group_name=GROUP,
    kinds=KINDS,
    description=(
        "General skills of the base model as training saw it (4-bit NF4, dequantised), without the adapter: "
        "separates the cost of quantisation from the adapter's own effect. Same card as the fp32 base "
        "(cached) for a plain LoRA."
    ),
)
def base_as_trained_general_scores(
    context: dg.AssetExecutionContext,
    tunegate: TunegateResource,
    promptfoo: PromptfooResource,
    base_as_trained: BaseAsTrained,
) -> dg.MaterializeResult:
    model = ModelSpec(base_dir=base_as_trained.path, chat_template=base_as_trained.chat_template)
    return _general(context, tunegate, promptfoo, "base_as_trained", model, base_as_trained.artefact)


@dg.asset(
    partitions_def=base_model_partitions,
    group_name=GROUP,
    kinds=KINDS,
    description="General skills of the tuned model that would ship: the gate refuses one that forgot them.",
)
def tuned_general_scores(
    context: dg.AssetExecutionContext, tunegate: TunegateResource, promptfoo: PromptfooResource, tuned_model: TunedModel
) -> dg.MaterializeResult:
    return _general(context, tunegate, promptfoo, "tuned", _tuned_model_spec(tuned_model), tuned_model.artefact)


def build_assets(project: Project) -> list[dg.AssetsDefinition]:
    """The evaluation stage of the code location: the configured prompt ladder and the scores."""
    return [
        build_prompt_ladder(project.settings.eval.ladder),
        tuned_scores,
        baseline_general_scores,
        base_as_trained_general_scores,
        tuned_general_scores,
    ]
