"""Test doubles for the assets other stages own, and reading what ``dg.materialize`` did:
``double`` stands in for any upstream asset with a fixed value; the data stage's train and
validation splits (the fixture files) and the prompt-only baseline for the training stage;
everything upstream of the promotion group (``promotion_assets``) for the gate's assets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dagster as dg

from pipelines.data import split
from pipelines.data.split import SplitFile
from pipelines.gate.ladder import Ladder
from pipelines.models import artefacts
from pipelines.models.merge import BaseAsTrained, TunedModel
from pipelines.orchestration.partitions import base_model_partitions
from tests.cards import FP, WIN, adapter_record, base_model_info, card, general_ok, paired

PARTITION = "tiny-llama"
FIXTURES = Path(__file__).parent / "fixtures"
TRAIN = FIXTURES / "chat_train.jsonl"
VALIDATION = FIXTURES / "chat_eval.jsonl"  # stands in for the validation slice of train
EVAL = FIXTURES / "promptfoo" / "tickets_eval.jsonl"
TASK = "support_ticket_triage"  # evals/task.yaml
TEMPLATE = "tokenizer_default"


def double(name: str, value) -> dg.AssetsDefinition:
    """A test double standing in for an upstream stage's asset, returning a fixed value
    (a dict, or a record: a score card, the ladder, the champion). No return annotation:
    Dagster type-checks an annotated value."""

    @dg.asset(name=name, partitions_def=base_model_partitions, group_name="test_doubles")
    def _asset():
        return value

    return _asset


def metadata_of(result, node: str) -> dict:
    """The metadata values of ``node``'s one materialisation in a ``dg.materialize`` result."""
    (mat,) = result.asset_materializations_for_node(node)
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


# --------------------------------------------------------------------------- training
def training_resources(home: Path, registry: Path, settings: Path) -> dict:
    """The training stage's resources: outputs under ``home``, this base-model registry and tunegate.yaml."""
    from pipelines.orchestration.resources import AxolotlResource, TunegateResource

    return {
        "tunegate": TunegateResource(home=str(home), base_models_file=str(registry), settings_file=str(settings)),
        "axolotl": AxolotlResource(),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }


def fixture_fingerprint() -> str:
    """The data fingerprint of the fixture train and validation files."""
    return split.data_fingerprint(TRAIN, VALIDATION)


def split_value(path: Path, fingerprint: str | None = None) -> SplitFile:
    """What the data stage's train_set / validation_set / eval_set assets return, for a fixture file."""
    rows = len(Path(path).read_text().splitlines())
    return SplitFile(path=str(path), rows=rows, fingerprint=fingerprint or fixture_fingerprint(), labels={})


# The data stage's train split and validation slice (our fixture files) and the evaluation
# stage's prompt-only baseline scores, for the training stage's tests.
@dg.asset(name="train_set")
def train_set_double() -> SplitFile:
    return split_value(TRAIN)


@dg.asset(name="validation_set")
def validation_set_double() -> SplitFile:
    return split_value(VALIDATION)


def baseline_double(target: float | None, pass_rate: float):
    """The evaluation stage's prompt-only baseline scores, with this pass rate and target."""
    skip = (
        f"no fine-tune needed: the baseline passes {pass_rate:.0%} >= target {target:.0%}"
        if target is not None and pass_rate >= target
        else None
    )

    rung = card("zero_shot", [i < round(12 * pass_rate) for i in range(12)], target=target)

    @dg.asset(name="baseline_scores", partitions_def=base_model_partitions)
    def baseline_scores_double() -> Ladder:
        return Ladder("zero_shot", {"zero_shot": rung}, skip)

    return baseline_scores_double


def training_stage_assets(baseline: dg.AssetsDefinition) -> list[dg.AssetsDefinition]:
    """The training stage to materialise on the doubles: the fixture splits, this prompt-only
    baseline (``baseline_double``), and the real base_model, axolotl_config and qlora_adapter."""
    from assets import models, training

    return [
        train_set_double,
        validation_set_double,
        baseline,
        models.base_model,
        training.axolotl_config,
        training.qlora_adapter,
    ]


TINY_OVERRIDES = {  # the tiny learner, one epoch of 12 steps: at lr 0.01 its eval loss falls far past the guard's 1 %
    "learning_rate": 0.01,
    "micro_batch_size": 4,
    "warmup_ratio": 0.0,
}


# --------------------------------------------------------------------------- promotion
def promotion_assets(
    tiny_model_dir, tuned_dir, outcome=WIN, *, tuned_fingerprint=FP, champion=None, tuned_model_template=TEMPLATE
) -> list:
    """Doubles for everything upstream of the promotion group, plus its three real assets."""
    from assets.gate import champion_scores, gate_decision, promoted_model

    baseline, tuned = paired(*outcome)
    scored = artefacts.identity(tuned_dir, TEMPLATE, {"dtype": "float32"})
    tuned = replace(tuned, artefact=scored, suite_fingerprint=tuned_fingerprint)
    general = general_ok()
    doubles = [
        double("baseline_scores", Ladder("static_few_shot", {"static_few_shot": baseline})),
        double("tuned_scores", tuned),
        double("baseline_general_scores", general["reference"]),
        double("base_as_trained_general_scores", general["base_as_trained"]),
        double("tuned_general_scores", general["candidate"]),
        double("eval_set", split_value(EVAL, "data-fp")),
        double("base_model", base_model_info(path=tiny_model_dir)),
        double(
            "base_as_trained",
            BaseAsTrained(
                path="/models/base-as-trained",
                quantised=True,
                bnb_config={},
                chat_template=TEMPLATE,
                artefact={"id": "base-as-trained-id"},
            ),
        ),
        double("qlora_adapter", adapter_record()),
        double(
            "tuned_model",
            TunedModel(
                path=str(tuned_dir),
                chat_template=tuned_model_template,
                run_key="run-1",
                artefact=artefacts.identity(tuned_dir, tuned_model_template, {"dtype": "float32"}),
                adapter_dir="/runs/adapter",
                data_fingerprint="data-fp",
                base_as_trained="base-as-trained-id",
            ),
        ),
    ]
    real = [gate_decision, promoted_model]
    if champion is None:
        real.append(champion_scores)  # the real asset: reads the registry (status none / same / missing)
    else:
        doubles.append(double("champion_scores", champion))
    return [*doubles, *real]
