"""Evaluation: the prompt ladder, the tuned model and the general-skills checks, scored by
promptfoo on suites that training never saw.

Thin shells over ``pipelines.evaluation`` (recipes, suites, the promptfoo runner, score
cards). Each asset's value is a score card (or, for ``baseline_scores``, the whole ladder);
its metadata is what a reviewer reads in the UI: pass rate with a 95 % Wilson interval,
per-check pass rates, the worst failures, tokens and latency per call, and how to open the
run in ``promptfoo view``. Cards are cached by (artefact identity, recipe, suite
fingerprint): re-materialising an unchanged contender reuses its card."""

from pathlib import Path

import dagster as dg

from assets.scoring import (
    base_artefact,
    card_metadata,
    check_answer_budget,
    general_suite,
    log_card,
    run_scoring,
    task_spec,
    task_suite,
)
from pipelines import config
from pipelines.evaluation import recipes
from pipelines.evaluation.scorecard import Contender
from pipelines.gate.decision import IncomparableCards, meets_target, strongest_rung
from pipelines.gate.report import ladder_md
from pipelines.generation import ModelSpec
from pipelines.orchestration.partitions import base_model_partitions
from pipelines.records import read_jsonl
from pipelines.orchestration.resources import PromptfooResource, TunegateResource

GROUP = "evaluation"
KINDS = {"promptfoo", "python"}
LADDER_PREFIX = "ladder"


def build_prompt_ladder(ladder: tuple[config.RungSettings, ...]) -> dg.AssetsDefinition:
    """One asset per rung (``ladder/<name>``) plus ``baseline_scores`` (the strongest rung),
    all from ONE promptfoo run on the base model: one model load, one promptfoo start."""
    rung_keys = {rung.name: dg.AssetKey([LADDER_PREFIX, rung.name]) for rung in ladder}
    inputs = {dg.AssetKey("train_set"), dg.AssetKey("eval_set"), dg.AssetKey("base_model")}
    outs = {
        f"rung_{rung.name}": dg.AssetOut(
            key=rung_keys[rung.name], group_name=GROUP, kinds=KINDS,
            description=f"Prompt-only rung {rung.name!r} ({rung.recipe}, k={rung.k}) on the base model, scored by "
                        "promptfoo on the held-out cases; examples from the TRAIN split only.")
        for rung in ladder
    }
    outs["baseline_scores"] = dg.AssetOut(
        key="baseline_scores", group_name=GROUP, kinds=KINDS,
        description="The baseline to beat: the strongest rung of the prompt ladder (ties go to the cheaper prompt). "
                    "If any rung meets the task's target_pass_rate, training is skipped.")
    deps = {name: inputs for name in outs}
    deps["baseline_scores"] = set(rung_keys.values())

    @dg.multi_asset(name="prompt_ladder", outs=outs, partitions_def=base_model_partitions, internal_asset_deps=deps)
    def prompt_ladder(context: dg.AssetExecutionContext, tunegate: TunegateResource, promptfoo: PromptfooResource,
                      train_set: dict, eval_set: dict, base_model: dict):  # fmt: skip
        configured = tunegate.settings().eval.ladder
        if tuple(configured) != tuple(ladder):
            raise dg.Failure(description=(
                f"eval.ladder in {tunegate.settings_path()} is {[r.name for r in configured]}, but this code location "
                f"was loaded with {[r.name for r in ladder]}: reload the code location (its assets come from the ladder)"))
        task = task_spec(tunegate)
        suite = task_suite(tunegate, eval_set, Path(train_set["path"]))
        check_answer_budget(context, suite, Path(base_model["path"]))
        model, artefact = base_artefact(tunegate, context.partition_key, base_model)
        contenders = [Contender(r.name, artefact, recipes.for_task(r.recipe, task, r.k)) for r in ladder]
        train = list(read_jsonl(Path(train_set["path"])))
        cards = run_scoring(context, tunegate, promptfoo, "ladder", suite, contenders, model, train=train)
        for rung in ladder:
            card = cards[rung.name]
            log_card(context, rung.name, card)
            yield dg.Output(card, output_name=f"rung_{rung.name}", metadata=card_metadata(card))
        try:
            best = strongest_rung(cards)
        except IncomparableCards as exc:
            raise dg.Failure(description=str(exc)) from exc
        skip = meets_target(cards)
        context.log.info(f"baseline to beat: {best} ({cards[best]['pass_rate']:.1%})" + (f"; {skip}" if skip else ""))
        yield dg.Output(
            {"baseline_rung": best, "rungs": cards, "skip_training": skip},
            output_name="baseline_scores",
            metadata={
                "baseline_rung": best,
                "pass_rate": dg.MetadataValue.float(round(cards[best]["pass_rate"], 4)),
                "ladder": dg.MetadataValue.md(ladder_md(cards, best)),
                "skip_training": skip or "no: no rung meets the target",
                "suite_fingerprint": cards[best]["suite_fingerprint"],
            },
        )

    return prompt_ladder


prompt_ladder = build_prompt_ladder(config.load_settings(config.default_settings_file()).eval.ladder)


def _tuned_contender(tuned_model: dict) -> tuple[ModelSpec, Contender]:
    model = ModelSpec(base_dir=tuned_model["path"], chat_template=tuned_model["chat_template"])
    return model, Contender("tuned", tuned_model["artefact"], recipes.Recipe("as_trained"))


@dg.asset(
    partitions_def=base_model_partitions, group_name=GROUP, kinds=KINDS,
    description=("The tuned model on the same held-out cases: the adapter merged into the weights it was trained "
                 "against (what ships), prompted exactly as in training, scored by promptfoo with the same checks."),
)  # fmt: skip
def tuned_scores(context: dg.AssetExecutionContext, tunegate: TunegateResource, promptfoo: PromptfooResource,
                 eval_set: dict, tuned_model: dict) -> dg.MaterializeResult:  # fmt: skip
    if tuned_model.get("data_fingerprint") != eval_set["fingerprint"]:
        raise dg.Failure(
            description=(f"the tuned model was trained on dataset version {tuned_model.get('data_fingerprint')!r}, the "
                         f"held-out set is version {eval_set['fingerprint']!r}: its eval split may overlap that "
                         "training data; rematerialise qlora_adapter")  # fmt: skip
        )
    model, contender = _tuned_contender(tuned_model)
    card = run_scoring(context, tunegate, promptfoo, "tuned", task_suite(tunegate, eval_set), [contender], model)["tuned"]
    log_card(context, "tuned", card)
    return dg.MaterializeResult(value=card, metadata=card_metadata(card))


def _general(context, tunegate, promptfoo, name: str, model: ModelSpec, artefact: dict) -> dg.MaterializeResult:
    card = run_scoring(context, tunegate, promptfoo, f"{name}-general", general_suite(tunegate),
                       [Contender(name, artefact)], model)[name]  # fmt: skip
    log_card(context, f"{name} general skills", card)
    return dg.MaterializeResult(value=card, metadata=card_metadata(card))


@dg.asset(
    partitions_def=base_model_partitions, group_name=GROUP, kinds=KINDS,
    description=("General skills (evals/general.jsonl: instruction following, arithmetic, facts) of the fp32 base "
                 "model, the model that serves without tuning: the reference for forgetting."),
)  # fmt: skip
def baseline_general_scores(context: dg.AssetExecutionContext, tunegate: TunegateResource,
                            promptfoo: PromptfooResource, base_model: dict) -> dg.MaterializeResult:  # fmt: skip
    model, artefact = base_artefact(tunegate, context.partition_key, base_model)
    return _general(context, tunegate, promptfoo, "base", model, artefact)


@dg.asset(
    partitions_def=base_model_partitions, group_name=GROUP, kinds=KINDS,
    description=("General skills of the base model as training saw it (4-bit NF4, dequantised), without the adapter: "
                 "separates the cost of quantisation from the adapter's own effect. Same card as the fp32 base "
                 "(cached) for a plain LoRA."),
)  # fmt: skip
def base_as_trained_general_scores(context: dg.AssetExecutionContext, tunegate: TunegateResource,
                                   promptfoo: PromptfooResource, base_as_trained: dict) -> dg.MaterializeResult:  # fmt: skip
    model = ModelSpec(base_dir=base_as_trained["path"], chat_template=base_as_trained["chat_template"])
    return _general(context, tunegate, promptfoo, "base_as_trained", model, base_as_trained["artefact"])


@dg.asset(
    partitions_def=base_model_partitions, group_name=GROUP, kinds=KINDS,
    description="General skills of the tuned model that would ship: the gate refuses one that forgot them.",
)
def tuned_general_scores(context: dg.AssetExecutionContext, tunegate: TunegateResource,
                         promptfoo: PromptfooResource, tuned_model: dict) -> dg.MaterializeResult:  # fmt: skip
    model, contender = _tuned_contender(tuned_model)
    return _general(context, tunegate, promptfoo, "tuned", model, contender.artefact)


__all__ = ["prompt_ladder", "tuned_scores", "baseline_general_scores", "base_as_trained_general_scores",
           "tuned_general_scores"]  # fmt: skip
