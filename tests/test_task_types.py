"""Task output types (evals/task.yaml `output.type`: json, label, text): validation that names
the key, the promptfoo checks each type writes, what a card reports beyond pass/fail, and the
gate's paired test on every type.

Planted answers go through the REAL promptfoo evaluator: the run is written by our own
``write_run``, only the provider is promptfoo's ``echo`` (each test's prompt is the planted
answer), so the checks, promptfoo's verdicts and our parser are all the shipped ones. The
tiny-model runs (slow) score each type end to end through the ``prompt_ladder`` asset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.common import stats
from pipelines.config.base import ConfigError
from pipelines.config.gate import GateSettings
from pipelines.evaluation import runner, scorecard, task_metrics
from pipelines.evaluation import suite as suites
from pipelines.evaluation.runner import PromptfooRunner
from pipelines.evaluation.task import TaskSpec, load_task, normalise_label
from pipelines.gate import decision
from pipelines.gate.decision import ChampionInput
from pipelines.models.loading import ModelSpec
from tests.cards import base_model_info, general_ok
from tests.doubles import split_value

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / "evals" / "node_modules" / ".bin"
needs_promptfoo = pytest.mark.skipif(
    not (BIN / "promptfoo").exists() or not (BIN / "node").exists(),
    reason="the pinned promptfoo CLI is installed by `make setup` (npm ci in evals/)",
)
INTENTS = ["card_arrival", "lost_card", "exchange_rate", "refund_status"]


def label_task(labels: list[str] | None = None) -> TaskSpec:
    output: dict = {"type": "label"} | ({"labels": labels} if labels else {})
    return TaskSpec.model_validate(
        {"name": "intents", "system_prompt": "Name the intent.", "output": output, "max_new_tokens": 8}
    )


def text_task(metric: str = "rouge-n", threshold: float = 0.5) -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "name": "replies",
            "system_prompt": "Write the reply.",
            "output": {"type": "text", "metric": metric, "threshold": threshold},
        }
    )


def json_task() -> TaskSpec:
    props = {
        "name": {"type": ["string", "null"]},
        "city": {"type": ["string", "null"]},
        "amount": {"type": ["number", "null"]},
    }
    return TaskSpec.model_validate(
        {
            "name": "extract",
            "system_prompt": "Extract the fields as JSON.",
            "output": {"type": "json", "schema": {"type": "object", "properties": props}},
            "match_fields": ["name", "city", "amount"],
        }
    )


def record(id_: str, user: str, answer: str) -> dict:
    return {
        "id": id_,
        "source": "test",
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
    }


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the spec
@pytest.mark.parametrize(
    ("output", "extra", "message"),
    [
        (
            {"type": "label", "labels": ["Lost card", "lost_card"]},
            {},
            r"output\.labels: 'Lost card' and 'lost_card' are the same label",
        ),
        ({"type": "label", "labels": ["only"]}, {}, r"output\.labels: List should have at least 2 items"),
        ({"type": "label"}, {"match_fields": ["x"]}, r"match_fields: only output\.type json has fields to match"),
        ({"type": "text", "metric": "bleu", "threshold": 1.5}, {}, r"output\.threshold: bleu scores lie in \[0, 1\]"),
        (
            {"type": "text", "metric": "levenshtein", "threshold": 2.5},
            {},
            r"output\.threshold: levenshtein's threshold is a maximum edit distance",
        ),
        (
            {"type": "text", "metric": "meteor", "threshold": 0.5},
            {},
            r"output\.metric: Input should be 'rouge-n', 'bleu', 'gleu' or 'levenshtein'",
        ),
        ({"type": "text", "metric": "bleu"}, {}, r"output\.threshold: required key missing"),
        ({"type": "xml"}, {}, r"output: Input tag 'xml' .* expected tags: 'json', 'label', 'text'"),
        (
            {"type": "json", "schema": {"properties": {"a": {}}}},
            {},
            r"match_fields: output\.type json needs at least one field",
        ),
    ],
)
def test_a_bad_output_spec_names_the_key(tmp_path, output, extra, message):
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "system_prompt": "s", "output": output, **extra}))
    with pytest.raises(ConfigError, match=rf"task\.yaml: task spec: {message}"):
        load_task(path)


def test_a_json_output_without_type_is_the_json_contract():
    task = TaskSpec.model_validate(
        {"name": "t", "system_prompt": "s", "match_fields": ["a"], "output": {"schema": {"properties": {"a": {}}}}}
    )
    assert task.output.type == "json" and "a all equal to the gold" in task.pass_rule


def test_shipped_intent_example_task_is_a_label_task():
    task = load_task(REPO / "examples" / "intent" / "task.yaml")
    assert task.output.type == "label" and task.output.labels is None  # derived from the train split
    sources = yaml.safe_load((REPO / "examples" / "intent" / "sources.yaml").read_text())["sources"]
    assert [s["fields"] for s in sources] == [{"user": "text", "assistant": "intent"}]


def test_label_set_from_train_with_unseen_eval_labels_reported(tmp_path):
    train = write_jsonl(
        tmp_path / "train.jsonl",
        [
            record(f"t{i}", f"q{i}", label)
            for i, label in enumerate(["lost_card", "card_arrival", "Lost card", "exchange_rate"])
        ],
    )
    eval_ = write_jsonl(
        tmp_path / "eval.jsonl",
        [record("e1", "where is my card", "card_arrival"), record("e2", "refund?", "refund_status")],
    )
    suite = suites.task_suite(label_task(), eval_, train)
    assert suite.scoring["labels"] == ["card_arrival", "exchange_rate", "lost_card", "refund_status"]
    assert suite.scoring["labels_unseen_in_train"] == ["refund_status"]
    assert [c["gold"] for c in suite.cases] == ["card_arrival", "refund_status"]
    with pytest.raises(ConfigError, match="no train split was given"):
        suites.task_suite(label_task(), eval_)
    with pytest.raises(
        ConfigError,
        match=r"eval\.jsonl: line 2 \(id 'e2'\): gold label 'refund_status' is not in the task spec's output\.labels",
    ):
        suites.task_suite(label_task(["card_arrival", "lost_card"]), eval_)
    # the label set is part of the suite: another set, another fingerprint (cards never mix)
    explicit = suites.task_suite(label_task(INTENTS), eval_)
    assert explicit.fingerprint != suite.fingerprint
    assert explicit.default_assert[0]["type"] == "javascript" and "{{" not in explicit.default_assert[0]["value"]


def test_free_text_in_a_label_task_or_json_task_is_a_clear_error(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [record("t1", "q", "same"), record("t2", "q2", "same.")])
    eval_ = write_jsonl(tmp_path / "eval.jsonl", [record("e1", "q", "same")])
    with pytest.raises(ConfigError, match=r"train\.jsonl: output\.type label needs at least 2 distinct answers"):
        suites.task_suite(label_task(), eval_, train)
    with pytest.raises(ConfigError, match=r"assistant turn is not JSON: .* needs output\.type label .* or text"):
        suites.task_suite(json_task(), eval_)


def test_max_cases_scores_a_fixed_sample_in_file_order(tmp_path):
    rows = [record(f"e{i:03d}", f"question {i}", INTENTS[i % 4]) for i in range(50)]
    eval_ = write_jsonl(tmp_path / "eval.jsonl", rows)
    full = suites.task_suite(label_task(INTENTS), eval_)
    first = suites.task_suite(label_task(INTENTS), eval_, max_cases=10)
    again = suites.task_suite(label_task(INTENTS), eval_, max_cases=10)
    ids = [c["id"] for c in first.cases]
    assert len(ids) == 10 and ids == [c["id"] for c in again.cases] and ids == sorted(ids)
    assert first.fingerprint == again.fingerprint != full.fingerprint
    assert len(suites.task_suite(label_task(INTENTS), eval_, max_cases=50).cases) == 50


# --------------------------------------------------------------------------- planted answers, real promptfoo
def echo_cards(tmp_path: Path, suite: suites.Suite, answers: dict[str, list[str]]) -> dict[str, scorecard.ScoreCard]:
    """Score planted answers per contender with promptfoo's own evaluator: our run files,
    with promptfoo's ``echo`` provider answering each case's prompt (the planted answer)."""
    names = list(answers)
    planted = suites.Suite(
        suite.name,
        [],
        suite.default_assert,
        suite.max_new_tokens,
        suite.fingerprint,
        suite.target_pass_rate,
        suite.scoring,
    )
    run_dir = tmp_path / "run"
    tests = []
    for name in names:
        planted.cases = [{**case, "user": answer} for case, answer in zip(suite.cases, answers[name], strict=True)]
        config = runner.write_run(
            run_dir, planted, {name: [[]] * len(suite.cases)}, ModelSpec(base_dir=str(tmp_path)), 4, 120
        )
        tests += yaml.safe_load(config.read_text())["tests"]
    config_doc = yaml.safe_load(config.read_text())
    config_doc.update(providers=["echo"], tests=tests)
    config.write_text(yaml.safe_dump(config_doc, sort_keys=False, allow_unicode=True))
    PromptfooRunner(timeout_s=300).run(config, run_dir / "results.json")
    return scorecard.parse_results(run_dir / "results.json", suite, names)


LABEL_ANSWERS = [  # (planted answer, gold, passes?)
    ("card_arrival", "card_arrival", True),
    ("  Card Arrival. ", "card_arrival", True),
    ('"lost-card"', "lost_card", True),
    ("LOST_CARD!\n", "lost_card", True),
    ("exchange rate", "exchange_rate", True),
    ("card_arrival", "lost_card", False),
    ("intent: lost_card", "lost_card", False),
    ("lost card, I think", "lost_card", False),
    ("", "refund_status", False),
    ("refund status pending", "refund_status", False),
]


@pytest.mark.slow
@needs_promptfoo
def test_label_task_through_promptfoo(tmp_path):
    rows = [record(f"e{i:02d}", f"q{i}", gold) for i, (_, gold, _) in enumerate(LABEL_ANSWERS)]
    suite = suites.task_suite(label_task(INTENTS), write_jsonl(tmp_path / "eval.jsonl", rows))
    card = echo_cards(tmp_path, suite, {"zero_shot": [a for a, _, _ in LABEL_ANSWERS]})["zero_shot"]
    verdicts = [c.passed for c in card.cases]
    assert verdicts == [want for _, _, want in LABEL_ANSWERS]
    # promptfoo's javascript normalisation and ours agree on every planted answer
    assert verdicts == [normalise_label(a) == normalise_label(g) for a, g, _ in LABEL_ANSWERS]
    m = card.task_metrics
    assert m["type"] == "label" and m["n_labels"] == 4 and m["accuracy"] == 0.5 == card.pass_rate
    assert m["per_label"] == {
        "card_arrival": {"n": 2, "correct": 2},
        "exchange_rate": {"n": 1, "correct": 1},
        "lost_card": {"n": 5, "correct": 2},
        "refund_status": {"n": 2, "correct": 0},
    }
    assert m["macro_accuracy"] == pytest.approx((1 + 1 + 0.4 + 0) / 4)
    assert m["valid_label_rate"] == pytest.approx(6 / 10)
    assert m["top_confusions"][0] == ["lost_card", "(not a label)", 2]
    assert ["lost_card", "card_arrival", 1] in m["top_confusions"]
    assert "| refund_status | 2 | 0 | 0% |" in task_metrics.per_label_md(m).splitlines()[2]


@pytest.mark.slow
@needs_promptfoo
def test_json_partial_credit_through_promptfoo(tmp_path):
    gold = {"name": "Ana Li", "city": "Porto", "amount": 12.5}
    planted = [
        json.dumps(gold),  # all three fields
        json.dumps({**gold, "amount": 13}),  # two of three
        json.dumps({"name": "Ana Li", "city": None, "amount": None}),  # one, two missing
        "name: Ana Li",  # not JSON: nothing
    ]
    rows = [record(f"e{i}", f"q{i}", json.dumps(gold)) for i in range(4)]
    suite = suites.task_suite(json_task(), write_jsonl(tmp_path / "eval.jsonl", rows))
    card = echo_cards(tmp_path, suite, {"tuned": planted})["tuned"]
    assert [c.passed for c in card.cases] == [True, False, False, False]  # the pass rule: every field
    assert [c.checks for c in card.cases][:2] == [
        {"schema": True, "name": True, "city": True, "amount": True},
        {"schema": True, "name": True, "city": True, "amount": False},
    ]
    m = card.task_metrics
    assert m["per_field_accuracy"] == {"name": 0.75, "city": 0.5, "amount": 0.25}
    assert m["field_accuracy"] == pytest.approx(6 / 12)
    # predicted non-null fields 3 + 3 + 1 = 7, 6 right; expected 12
    assert (m["field_precision"], m["field_recall"]) == (pytest.approx(6 / 7), pytest.approx(6 / 12))
    assert m["field_f1"] == pytest.approx(2 * (6 / 7) * 0.5 / (6 / 7 + 0.5))
    assert m["cases_with_some_fields_right"] == 2
    assert "field F1" in task_metrics.summary_md(m)


@pytest.mark.slow
@needs_promptfoo
@pytest.mark.parametrize(
    ("metric", "threshold", "verdicts"),
    [
        ("rouge-n", 0.75, [True, True, False, False]),
        ("bleu", 0.5, [True, True, False, False]),
        ("gleu", 0.5, [True, True, False, False]),
        ("levenshtein", 10, [True, False, False, True]),
    ],
)
def test_text_task_through_promptfoo(tmp_path, metric, threshold, verdicts):
    gold = "Your new card ships today and arrives within 3 working days."
    planted = [
        gold,
        "Your new card ships today and should arrive within 3 days.",
        "We cannot help with that {{ request }}.",  # template syntax in an answer stays text
        "Your new card ships today, arrives in 3 working days!!",  # close in characters
    ]
    rows = [record(f"e{i}", f"q{i}", gold) for i in range(4)]
    suite = suites.task_suite(text_task(metric, threshold), write_jsonl(tmp_path / "eval.jsonl", rows))
    assert suite.default_assert == [
        {"type": metric, "value": "{{ case.gold }}", "threshold": threshold, "metric": metric}
    ]
    card = echo_cards(tmp_path, suite, {"zero_shot": planted})["zero_shot"]
    assert [c.output for c in card.cases] == planted
    assert [c.passed for c in card.cases] == verdicts
    m = card.task_metrics
    assert m["metric"] == metric and m["threshold"] == threshold
    scores = [c.scores[metric] for c in card.cases]
    if metric != "levenshtein":  # levenshtein's score is its pass (0/1)
        assert scores[0] == pytest.approx(1.0) and scores[2] < scores[1] < 1
        assert m["mean_score"] == pytest.approx(sum(scores) / 4)


# --------------------------------------------------------------------------- the gate, every type
def _card(name: str, suite: suites.Suite, passed: list[bool]) -> scorecard.ScoreCard:
    cases = [
        scorecard.CaseResult(
            id=c["id"],
            passed=p,
            output="",
            gold=c["gold"],
            latency_ms=1.0,
            output_tokens=1,
            prompt_tokens=10,
            failed_assertions=[] if p else ["x"],
            checks={},
            scores={},
        )
        for c, p in zip(suite.cases, passed)
    ]
    return scorecard.summarise(name, suite, cases, {})


@pytest.mark.parametrize("kind", ["json", "label", "text"])
def test_gate_pairs_cases_of_every_type(tmp_path, kind):
    """Cards of each type carry per-case pass/fail under one suite fingerprint: the gate's
    paired McNemar counts them, and a card from another suite is refused."""
    n = 40
    if kind == "json":
        task, answers = json_task(), [json.dumps({"name": "a", "city": "b", "amount": 1})] * n
    elif kind == "label":
        task, answers = label_task(INTENTS), [INTENTS[i % 4] for i in range(n)]
    else:
        task, answers = text_task(), ["a reply"] * n
    eval_ = write_jsonl(tmp_path / "eval.jsonl", [record(f"e{i}", f"q{i}", a) for i, a in enumerate(answers)])
    suite = suites.task_suite(task, eval_)
    tuned = _card("tuned", suite, [i < 30 for i in range(n)])  # 30 pass
    rung = _card("zero_shot", suite, [i < 10 for i in range(n)])  # 10 pass, all also passed by the tune
    assert tuned.task_metrics["type"] == kind
    verdict = decision.decide({"zero_shot": rung}, tuned, general_ok(), ChampionInput("none"), GateSettings())
    assert verdict.promote and (verdict.versus_baseline.only_first, verdict.versus_baseline.only_second) == (20, 0)
    assert verdict.p_value == pytest.approx(stats.mcnemar_one_sided(20, 0))
    worse = _card("tuned", suite, [10 <= i < 20 or i < 5 for i in range(n)])  # 15 pass, 5 shared
    assert not decision.decide({"zero_shot": rung}, worse, general_ok(), ChampionInput("none"), GateSettings()).promote
    other = suites.task_suite(task.model_copy(update={"max_new_tokens": 7}), eval_)
    with pytest.raises(decision.IncomparableCards, match="different suites"):
        decision.decide(
            {"zero_shot": _card("zero_shot", other, [True] * n)},
            tuned,
            general_ok(),
            ChampionInput("none"),
            GateSettings(),
        )


# --------------------------------------------------------------------------- the tiny model (plumbing only)
PARTITION = "tiny-llama"


def _materialise_ladder(
    tmp_path: Path,
    tiny_model_dir: Path,
    tiny_registry: Path,
    task: dict,
    train: list[dict],
    eval_rows: list[dict],
    max_cases: int | None = None,
    failure: bool = False,
):
    """The shipped ``prompt_ladder`` multi-asset (one rung: static few-shot, k=2) on the tiny
    random Llama, with ``task`` as evals/task.yaml. Upstream assets are test doubles."""
    import dagster as dg

    from assets.evaluation import build_prompt_ladder
    from pipelines.config.evaluation import RungSettings
    from pipelines.orchestration.resources import PromptfooResource, TunegateResource
    from tests.doubles import double

    train_path = write_jsonl(tmp_path / "train.jsonl", train)
    eval_path = write_jsonl(tmp_path / "eval.jsonl", eval_rows)
    task_path = tmp_path / "task.yaml"
    task_path.write_text(yaml.safe_dump(task))
    ladder = (RungSettings(name="static_few_shot", recipe="static_few_shot", k=2),)
    settings = tmp_path / "tunegate.yaml"
    settings.write_text(
        yaml.safe_dump(
            {
                "eval": {
                    "batch_size": 4,
                    "task_file": str(task_path),
                    "max_cases": max_cases,
                    "ladder": [r.model_dump() for r in ladder],
                }
            }
        )
    )
    tunegate = TunegateResource(
        home=str(tmp_path / "home"), base_models_file=str(tiny_registry), settings_file=str(settings)
    )
    doubles = [
        double("train_set", split_value(train_path, "f")),
        double("eval_set", split_value(eval_path, "f")),
        double("base_model", base_model_info(path=tiny_model_dir)),
    ]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("base_model", [PARTITION])
        result = dg.materialize(
            [*doubles, build_prompt_ladder(ladder)],
            instance=instance,
            partition_key=PARTITION,
            resources={"tunegate": tunegate, "promptfoo": PromptfooResource(timeout_s=300)},
            raise_on_error=not failure,
        )
        if failure:
            assert not result.success
            return [
                e.event_specific_data.error.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"
            ]
        assert result.success
        card = result.output_for_node("prompt_ladder", "rung_static_few_shot")
        meta = {
            m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("prompt_ladder")
        }
    return card, meta["ladder/static_few_shot"]


@pytest.mark.slow
@needs_promptfoo
def test_label_task_on_the_tiny_model(tmp_path, tiny_model_dir, tiny_registry):
    """The shipped intent example's spec (labels from the train split) through the real
    provider: each case is scored against its label, the card carries per-label figures and
    the UI gets per-label accuracy and confusions; eval.max_cases caps the cases scored."""
    import csv

    rows = list(csv.DictReader((REPO / "examples" / "intent" / "intents.csv").open(encoding="utf-8")))
    records = [record(f"r{i:03d}", r["text"], r["intent"]) for i, r in enumerate(rows[:36])]
    task = yaml.safe_load((REPO / "examples" / "intent" / "task.yaml").read_text())
    card, meta = _materialise_ladder(
        tmp_path, tiny_model_dir, tiny_registry, task, records[:24], records[24:], max_cases=8
    )
    assert card.n == 8 and card.suite == "task"
    m = card.task_metrics
    assert m["type"] == "label" and m["n_labels"] == 12  # 24 train rows cover the 12 intents
    assert sum(v["n"] for v in m["per_label"].values()) == 8
    assert m["accuracy"] == card.pass_rate
    for case in card.cases:  # the check's verdict is normalised equality with the gold
        assert case.passed == (normalise_label(case.output) == normalise_label(case.gold))
    assert {"task_metrics", "per_label_accuracy", "confusions"} <= set(meta)
    assert "pass rule (what the gate counts)" in meta["task_metrics"].value


@pytest.mark.slow
@needs_promptfoo
def test_text_task_on_the_tiny_model(tmp_path, tiny_model_dir, tiny_registry):
    replies = [
        "Your card ships today.",
        "The transfer arrives tomorrow.",
        "We have closed the account.",
        "Your limit is now higher.",
        "The fee has been refunded.",
        "Your PIN is on its way.",
    ]
    records = [record(f"r{i}", f"Message {i}: what happens next?", replies[i % 6]) for i in range(10)]
    task = {
        "name": "replies",
        "system_prompt": "Write the reply.",
        "max_new_tokens": 12,
        "output": {"type": "text", "metric": "rouge-n", "threshold": 0.5},
    }
    card, meta = _materialise_ladder(tmp_path, tiny_model_dir, tiny_registry, task, records[:6], records[6:])
    assert card.n == 4
    scores = [c.scores["rouge-n"] for c in card.cases]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert [c.passed for c in card.cases] == [s >= 0.5 for s in scores]
    assert card.task_metrics["mean_score"] == pytest.approx(sum(scores) / 4)
    assert "mean rouge-n" in meta["task_metrics"].value


def test_an_answer_budget_too_small_for_the_gold_is_named(tmp_path):
    rows = [record("e1", "q", "card_arrival"), record("e2", "q", "a much longer label than the others")]
    suite = suites.task_suite(
        label_task().model_copy(update={"max_new_tokens": 4}),
        write_jsonl(tmp_path / "eval.jsonl", rows),
        write_jsonl(tmp_path / "train.jsonl", rows),
    )
    words = lambda text: len(text.split())  # noqa: E731  (a stand-in tokenizer: one token per word)
    assert suites.answer_budget_problem(suite, words) == (
        "max_new_tokens is 4 but 1 of 2 gold answers need at least that many tokens (longest 7, case e2): "
        "raise max_new_tokens in the task spec to at least 8"
    )
    roomy = suites.Suite(**{**suite.__dict__, "max_new_tokens": 8})
    assert suites.answer_budget_problem(roomy, words) is None


def test_the_gate_report_shows_each_contenders_task_figures(tmp_path):
    from pipelines.config.gate import CostSettings
    from pipelines.gate.cost import TrainingTime, cost_report
    from pipelines.gate.report import decision_md

    eval_ = write_jsonl(tmp_path / "eval.jsonl", [record(f"e{i}", f"q{i}", INTENTS[i % 4]) for i in range(40)])
    suite = suites.task_suite(label_task(INTENTS), eval_)
    rung, tuned = (
        _card("zero_shot", suite, [i < 10 for i in range(40)]),
        _card("tuned", suite, [i < 30 for i in range(40)]),
    )
    verdict = decision.decide({"zero_shot": rung}, tuned, general_ok(), ChampionInput("none"), GateSettings())
    costs = cost_report({"zero_shot": rung}, "zero_shot", tuned, TrainingTime(60.0, 100.0), CostSettings())
    report = decision_md(verdict, {"zero_shot": rung}, tuned, general_ok(), costs)
    assert "Pass rule per case (what the paired tests count): the answer, normalised" in report
    assert "| contender | pass rate | macro accuracy | answers in the label set | worst label |" in report
    assert "| tuned | 75.0% | 75.0% | 0.0% | " in report  # _card's outputs are empty: no answer is a label


def test_the_ladder_refuses_a_label_that_cannot_fit_max_new_tokens(tmp_path, tiny_model_dir, tiny_registry):
    """Before any generation: the model's tokenizer counts the longest gold answer."""
    records = [record(f"r{i}", f"q{i}", label) for i, label in enumerate(INTENTS * 3)]
    task = {"name": "intents", "system_prompt": "Name the intent.", "output": {"type": "label"}, "max_new_tokens": 2}
    [message] = _materialise_ladder(
        tmp_path, tiny_model_dir, tiny_registry, task, records[:8], records[8:], failure=True
    )
    assert "max_new_tokens is 2 but 4 of 4 gold answers need at least that many tokens" in message
    assert "raise max_new_tokens in the task spec to at least" in message
    assert not (tmp_path / "home" / "evals").exists()  # nothing was generated


def test_the_shipped_intent_example_is_what_the_script_writes(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_demo_data", REPO / "scripts" / "make_demo_data.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.write_intent_task(tmp_path, 480, 12, seed=20260101, name="intent_example")
    shipped = REPO / "examples" / "intent"
    assert (tmp_path / "intents.csv").read_text() == (shipped / "intents.csv").read_text()
    for name in ("sources.yaml", "task.yaml"):
        assert yaml.safe_load((tmp_path / name).read_text()) == yaml.safe_load((shipped / name).read_text())
    assert yaml.safe_load((shipped / "tunegate.yaml").read_text()) == {
        "eval": {"task_file": "examples/intent/task.yaml"}
    }
    assert "NOT the default demo" in (shipped / "task.yaml").read_text()
    rows = (shipped / "intents.csv").read_text().splitlines()
    assert rows[0] == "text,intent" and len(rows) == 481
    assert {row.rsplit(",", 1)[1] for row in rows[1:]} == set(script.intent_labels(12))
