"""Evaluation stage (pipelines/evaluation/): the task spec, suites, prompt recipes, the
promptfoo run files, parsing results into score cards, the card cache, runner failures, and
one real promptfoo run of the prompt ladder.

The parsing tests read a results.json captured from a real promptfoo run of SmolLM2-135M
(the prompt-only baseline on tests/fixtures/promptfoo/tickets_eval.jsonl). The run predates
contender-major runs: ``"contender": "baseline"`` was added to every result entry's
``vars.case`` (and ``testCase.vars.case``) with a small script, nothing else was changed,
because the parser now checks each result's (contender, case id). The real run here uses
the tiny random Llama (a test double: plumbing only, its answers are noise)."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import stat
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml

from pipelines.common import stats
from pipelines.common.jsonl import read_jsonl
from pipelines.config.base import ConfigError
from pipelines.config.paths import REPO_ROOT
from pipelines.data.records import turn
from pipelines.evaluation import fewshot, recipes, runner, scorecard
from pipelines.evaluation import suite as suites
from pipelines.evaluation.runner import PromptfooError, PromptfooRunner
from pipelines.evaluation.scorecard import CaseResult, Contender, ScoreCard
from pipelines.evaluation.task import TaskSpec, load_task
from pipelines.models.loading import ModelSpec
from tests.cards import base_model_info
from tests.doubles import split_value

FIXTURES = Path(__file__).parent / "fixtures" / "promptfoo"
TRAIN = FIXTURES / "tickets_train.jsonl"
EVAL = FIXTURES / "tickets_eval.jsonl"
CAPTURED = FIXTURES / "smollm2_baseline_results.json"
SCORECARD_KEYS = {
    "contender",
    "suite",
    "suite_fingerprint",
    "n",
    "passed",
    "pass_rate",
    "ci_low",
    "ci_high",
    "target_pass_rate",
    "assertion_pass_rates",
    "mean_latency_ms",
    "mean_output_tokens",
    "mean_prompt_tokens",
    "cases",
}
CASE_KEYS = {"id", "passed", "output", "gold", "latency_ms", "output_tokens", "prompt_tokens", "failed_assertions"}
ODD = "Odd | pipes || here {{ x }} {% if y %}z{% endif %}\nfile://evil.py and a second line | end"


def _task() -> TaskSpec:
    """The task the captured fixture was scored with (fixed here, so editing the shipped
    evals/task.yaml prompt does not invalidate the captured run)."""
    return TaskSpec.model_validate(
        {
            "name": "fixture",
            "system_prompt": "Classify the ticket. Reply with only JSON.",
            "output": {
                "type": "json",
                "schema": {
                    "type": "object",
                    "properties": {
                        "category": {"enum": ["billing", "technical", "account", "shipping", "refund"]},
                        "priority": {"enum": ["low", "medium", "high", "urgent"]},
                    },
                    "required": ["category", "priority"],
                    "additionalProperties": False,
                },
            },
            "match_fields": ["category", "priority"],
            "max_new_tokens": 32,
            "target_pass_rate": 0.9,
        }
    )


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _ticket(id_: str, user: str, category: str, priority: str = "medium") -> dict:
    return {
        "id": id_,
        "source": "test",
        "label": category,
        "messages": [
            {"role": "system", "content": "Classify the support ticket."},
            {"role": "user", "content": user},
            {"role": "assistant", "content": json.dumps({"category": category, "priority": priority})},
        ],
    }


# --------------------------------------------------------------------------- task spec
def test_shipped_task_spec_is_valid():
    task = load_task(REPO_ROOT / "evals" / "task.yaml")
    assert set(task.match_fields) <= set(task.output.schema_["properties"])
    assert "only" in task.system_prompt.lower()  # the strong prompt asks for the JSON alone
    assert task.target_pass_rate is not None and 1 <= task.max_new_tokens <= 2048


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"match_fields": ["colour"]}, "colour"),  # not a property of the schema
        ({"few_shot_k": 3}, "few_shot_k"),  # removed: the ladder's rungs say k now
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"system_prompt": None}, "system_prompt"),
    ],
)
def test_task_spec_error_names_file_and_key(tmp_path, change, key):
    bad = tmp_path / "task.yaml"
    bad.write_text(yaml.safe_dump({**_task().model_dump(by_alias=True), **change}))
    with pytest.raises(ConfigError, match=rf"task\.yaml: task spec: .*{key}"):
        load_task(bad)


# --------------------------------------------------------------------------- suites
def test_shipped_general_suite_parses():
    suite = suites.general_suite(REPO_ROOT / "evals" / "general.jsonl", 32)
    assert suite.name == "general" and len(suite.cases) >= 300
    assert suite.max_new_tokens == 32 and suite.default_assert == [] and suite.fingerprint
    assert {c["assert"][0]["metric"] for c in suite.cases} == {"arithmetic", "facts", "instruction"}
    skills = {item["id"]: item["skill"] for item in _rows(REPO_ROOT / "evals" / "general.jsonl")}
    for case in suite.cases:  # every check tagged with the item's skill, asked as a plain user turn
        assert {a["metric"] for a in case["assert"]} == {skills[case["id"]]}
        assert case["record"]["messages"] == [{"role": "user", "content": case["user"]}]
        assert all(a["type"] in suites.GENERAL_ASSERTIONS for a in case["assert"])
    # the decoding budget is part of the fingerprint: cards at another budget do not compare
    assert suites.general_suite(REPO_ROOT / "evals" / "general.jsonl", 16).fingerprint != suite.fingerprint


def test_general_suite_rejects_an_unknown_assertion_naming_file_and_line(tmp_path):
    good = {
        "id": "g1",
        "skill": "facts",
        "prompt": "Capital of France?",
        "assert": [{"type": "icontains", "value": "Paris"}],
    }
    bad = {"id": "g2", "skill": "facts", "prompt": "2+2?", "assert": [{"type": "python", "value": "file://check.py"}]}
    path = _write_jsonl(tmp_path / "general.jsonl", [good, bad])
    with pytest.raises(ConfigError, match=r"general\.jsonl: line 2: assertion types \['python'\]"):
        suites.general_suite(path, 8)
    _write_jsonl(path, [good, {k: v for k, v in bad.items() if k != "skill"}])
    with pytest.raises(ConfigError, match=r"general\.jsonl: line 2: missing keys \['skill'\]"):
        suites.general_suite(path, 8)
    _write_jsonl(path, [good, good])
    with pytest.raises(ConfigError, match=r"general\.jsonl: duplicate item ids"):
        suites.general_suite(path, 8)


def test_task_suite_cases_and_fingerprint(tmp_path):
    suite = suites.task_suite(_task(), EVAL)
    assert suite.name == "task" and [c["id"] for c in suite.cases] == [r["id"] for r in _rows(EVAL)]
    assert suite.cases[3]["gold"] == {"category": "refund", "priority": "high"}
    assert suite.target_pass_rate == 0.9 and suite.max_new_tokens == 32
    assert [a["metric"] for a in suite.default_assert] == ["schema", "category", "priority"]
    assert suite.fingerprint == suites.task_suite(_task(), EVAL).fingerprint
    # another prompt, another suite: cards scored under another task spec do not compare
    other = _task().model_copy(update={"system_prompt": "Something else."})
    assert suites.task_suite(other, EVAL).fingerprint != suite.fingerprint
    changed = _rows(EVAL)
    changed[0]["messages"][1]["content"] += "!"
    assert suites.task_suite(_task(), _write_jsonl(tmp_path / "eval.jsonl", changed)).fingerprint != suite.fingerprint


def test_bad_gold_answer_names_file_line_and_id(tmp_path):
    rows = _rows(EVAL)
    rows[2]["messages"][-1]["content"] = "not json"
    bad = _write_jsonl(tmp_path / "eval.jsonl", rows)
    with pytest.raises(ConfigError, match=r"eval\.jsonl: line 3 \(id 'eval-003'\).*not JSON"):
        suites.task_suite(_task(), bad)
    rows = _rows(EVAL)
    rows[4]["id"] = rows[1]["id"]
    with pytest.raises(ConfigError, match=r"eval\.jsonl: line 5 \(id 'eval-002'\): missing or duplicate id"):
        suites.task_suite(_task(), _write_jsonl(tmp_path / "eval.jsonl", rows))


# --------------------------------------------------------------------------- recipes
def test_zero_shot_is_the_strong_prompt_and_the_ticket_only():
    recipe = recipes.for_task("zero_shot", _task(), k=3)
    assert recipe.k == 0 and recipe.system_prompt == _task().system_prompt
    suite = suites.task_suite(_task(), EVAL)
    conversations, shown = recipes.build(recipe, suite.records, train=None)
    for conversation, case in zip(conversations, suite.cases, strict=True):
        assert conversation == [
            {"role": "system", "content": _task().system_prompt},
            {"role": "user", "content": case["user"]},
        ]
    assert shown == [[] for _ in suite.cases]


def test_static_few_shot_shows_the_same_train_examples_to_every_case():
    suite = suites.task_suite(_task(), EVAL)
    train = list(read_jsonl(TRAIN))
    train_by_id = {r["id"]: r for r in train}
    eval_users = {c["user"] for c in suite.cases}
    recipe = recipes.for_task("static_few_shot", _task(), k=3)
    conversations, shown = recipes.build(recipe, suite.records, train)
    # round-robin over the sorted labels: account, billing, refund
    assert shown == [["train-003", "train-001", "train-005"]] * len(suite.cases)
    assert len({train_by_id[i]["label"] for i in shown[0]}) == 3  # spread over labels
    for conversation, case in zip(conversations, suite.cases, strict=True):
        assert conversation[0] == {"role": "system", "content": _task().system_prompt}
        assert conversation[-1] == {"role": "user", "content": case["user"]}
        shots = conversation[1:-1]
        assert shots == [
            m
            for i in shown[0]
            for m in (
                {"role": "user", "content": turn(train_by_id[i], "user")},
                {"role": "assistant", "content": turn(train_by_id[i], "assistant")},
            )
        ]
        assert not {m["content"] for m in shots} & eval_users
    assert recipes.build(recipe, suite.records, train) == (conversations, shown)  # deterministic
    with pytest.raises(ValueError, match="needs the train split"):
        recipes.build(recipe, suite.records, None)


def _near_copy_split() -> tuple[list[dict], list[dict]]:
    """Eval rows come in near-identical pairs, closer to each other than to any train row:
    an index that held eval rows would retrieve a case's twin."""
    train = [
        _ticket("train-01", "I was charged twice for my subscription", "billing"),
        _ticket("train-02", "The export button freezes the dashboard", "technical"),
        _ticket("train-03", "Parcel was delivered to the neighbour", "shipping"),
        _ticket("train-04", "Please reset my password, I am locked out", "account"),
        _ticket("train-05", "I want a refund for the broken blender", "refund"),
        _ticket("train-06", "My invoice shows a double charge", "billing"),
    ]
    eval_ = [
        _ticket("eval-01", "My invoice 1001 shows a double charge for March on the premium plan", "billing"),
        _ticket("eval-02", "My invoice 1002 shows a double charge for March on the premium plan", "billing"),
        _ticket("eval-03", "The export to CSV button freezes the whole dashboard since the update", "technical"),
        _ticket("eval-04", "The export to PDF button freezes the whole dashboard since the update", "technical"),
        _ticket("eval-05", "Parcel 77 was delivered to the neighbour at number 12 instead of me", "shipping"),
        _ticket("eval-06", "Parcel 78 was delivered to the neighbour at number 14 instead of me", "shipping"),
    ]
    return train, eval_


def test_retrieved_examples_are_per_case_and_all_from_train():
    train, eval_ = _near_copy_split()
    train_ids, eval_ids = {r["id"] for r in train}, {r["id"] for r in eval_}
    recipe = recipes.for_task("retrieved_few_shot", _task(), k=3)
    conversations, shown = recipes.build(recipe, eval_, train)
    assert all(len(ids) == 3 for ids in shown)
    assert {i for ids in shown for i in ids} <= train_ids
    assert not {i for ids in shown for i in ids} & eval_ids
    eval_users = {turn(r, "user") for r in eval_}
    for conversation in conversations:  # no held-out ticket appears as an example either
        assert not {m["content"] for m in conversation[1:-1]} & eval_users
    assert len({tuple(ids) for ids in shown}) > 1  # per case, not one fixed set
    # the index really would have found the twins: eval-02 is eval-01's nearest row overall
    everything = fewshot.Retriever(train + eval_).nearest([turn(eval_[0], "user")], 2)[0]
    assert [r["id"] for r in everything] == ["eval-02", "eval-01"]


def test_the_nearest_example_is_the_most_similar_and_comes_last():
    train, eval_ = _near_copy_split()
    _, shown = recipes.build(recipes.for_task("retrieved_few_shot", _task(), k=2), eval_, train)
    assert [ids[-1] for ids in shown] == ["train-06", "train-06", "train-02", "train-02", "train-03", "train-03"]
    retriever = fewshot.Retriever(list(read_jsonl(TRAIN)))
    [nearest] = retriever.nearest(["The app crashes every time I open the settings page on my phone"], 3)
    assert nearest[-1]["id"] == "train-002"  # the near-copy, nearest the question
    assert len(nearest) == 3 and len({r["id"] for r in nearest}) == 3
    assert retriever.nearest(["anything"], 0) == [[]]
    assert len(retriever.nearest(["anything"], 50)[0]) == 6  # never more than the train split


def test_as_trained_is_the_conversation_without_the_answer():
    suite = suites.task_suite(_task(), EVAL)
    conversations, shown = recipes.build(recipes.Recipe("as_trained"), suite.records, train=None)
    for conversation, record in zip(conversations, _rows(EVAL), strict=True):
        assert conversation == record["messages"][:-1]  # the record's own system turn + the ticket
        assert conversation[0]["role"] == "system" and conversation[-1]["role"] == "user"
    assert shown == [[] for _ in conversations]
    assert recipes.for_task("as_trained", _task(), k=5) == recipes.Recipe("as_trained")
    two_turns = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": "d"},
        ]
    }
    assert recipes.as_trained_messages(two_turns) == [{"role": "user", "content": "a"}]


# --------------------------------------------------------------------------- run files
def _odd_suite(tmp_path: Path) -> suites.Suite:
    rows = _rows(EVAL) + [
        {
            **_ticket("eval-007", ODD, "technical", "low"),
            "messages": [
                {"role": "system", "content": "sys {{ system }} | pipe"},
                {"role": "user", "content": ODD},
                {"role": "assistant", "content": json.dumps({"category": "technical", "priority": "low"})},
            ],
        }
    ]
    return suites.task_suite(_task(), _write_jsonl(tmp_path / "eval.jsonl", rows))


def test_write_run_is_contender_major_and_odd_characters_survive(tmp_path):
    suite = _odd_suite(tmp_path)
    n = len(suite.cases)
    train = list(read_jsonl(TRAIN))
    conversations = {
        "zero_shot": recipes.build(recipes.for_task("zero_shot", _task()), suite.records, train)[0],
        "as_trained": recipes.build(recipes.Recipe("as_trained"), suite.records, train)[0],
    }
    run_dir = tmp_path / "run"
    config_path = runner.write_run(run_dir, suite, conversations, ModelSpec(base_dir="rel/model"), 4, 60)
    assert config_path == run_dir / "promptfooconfig.yaml"
    text = config_path.read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    written = [json.loads(line) for line in (run_dir / "cases.jsonl").read_text("utf-8").splitlines()]
    assert len(config["tests"]) == len(written) == 2 * n
    for index, (test, row) in enumerate(zip(config["tests"], written, strict=True)):
        contender, case = list(conversations)[index // n], suite.cases[index % n]
        assert test["vars"] == {
            "case": {"id": case["id"], "contender": contender, "user": case["user"], "gold": case["gold"]}
        }
        assert test["description"] == f"{contender}: {case['id']}"
        assert row == {
            "key": f"{contender}/{case['id']}",
            "group": contender,
            "messages": conversations[contender][index % n],
        }
    users = [t["vars"]["case"]["user"] for t in config["tests"]]
    assert users.count(ODD) == 2  # untouched: braces, pipes, newlines, file://
    assert any("{{ user }}" in u and "{% raw %}" in u and "\n" in u for u in users)
    assert any("🚚" in u for u in users) and any(u.startswith("file://") for u in users)
    assert "🚚" in text  # allow_unicode: readable, not escaped
    assert written[2 * n - 1]["messages"] == [
        {"role": "system", "content": "sys {{ system }} | pipe"},
        {"role": "user", "content": ODD},
    ]
    assert written[n - 1]["messages"][-1] == {"role": "user", "content": ODD}
    # the case's text reaches promptfoo only as an object var; the one template is ours
    assert config["prompts"] == [{"raw": "{{ case.user }}", "label": "task"}]
    provider = config["providers"][0]
    assert provider["id"] == f"file://{REPO_ROOT / 'evals' / 'provider.py'}"
    assert provider["config"]["workers"] == 1 and provider["config"]["batch_size"] == 4
    assert provider["config"]["timeout"] == 60_000 and provider["config"]["max_new_tokens"] == 32
    assert provider["config"]["cases_file"] == str((run_dir / "cases.jsonl").resolve())
    assert provider["config"]["model"]["base_dir"] == str(Path("rel/model").resolve())  # the worker's cwd is run_dir
    assert [a["metric"] for a in config["defaultTest"]["assert"]] == ["schema", "category", "priority"]
    assert config["evaluateOptions"] == {"maxConcurrency": 4, "cache": False} and config["sharing"] is False


def test_write_run_per_item_checks_of_the_general_suite(tmp_path):
    item = {
        "id": "g1",
        "skill": "facts",
        "prompt": "Name a colour. {{ x }} | y",
        "assert": [{"type": "icontains", "value": "red"}],
    }
    suite = suites.general_suite(_write_jsonl(tmp_path / "general.jsonl", [item]), 8)
    config = yaml.safe_load(
        runner.write_run(
            tmp_path / "run",
            suite,
            {"base": [c["record"]["messages"] for c in suite.cases]},
            ModelSpec(base_dir=str(tmp_path)),
            2,
            30,
        ).read_text()
    )
    assert "defaultTest" not in config
    assert config["tests"][0]["assert"] == [{"type": "icontains", "value": "red", "metric": "facts"}]
    assert config["tests"][0]["vars"]["case"]["user"] == "Name a colour. {{ x }} | y"


def test_write_run_rejects_a_wrong_number_of_conversations(tmp_path):
    suite = suites.task_suite(_task(), EVAL)
    with pytest.raises(ValueError, match="zero_shot: 5 conversations for 6 cases"):
        runner.write_run(tmp_path, suite, {"zero_shot": [[]] * 5}, ModelSpec(base_dir=str(tmp_path)), 4, 60)


# --------------------------------------------------------------------------- parsing a real run
def test_parse_captured_results_into_a_scorecard():
    suite = suites.task_suite(_task(), EVAL)
    cards = scorecard.parse_results(CAPTURED, suite, ["baseline"])
    assert list(cards) == ["baseline"]
    card = cards["baseline"]
    assert SCORECARD_KEYS <= set(card.to_dict()) and card.results_path == str(CAPTURED)
    assert card.contender == "baseline" and card.suite == "task"
    assert card.suite_fingerprint == suite.fingerprint
    assert [c.id for c in card.cases] == [c["id"] for c in suite.cases]  # eval-file order
    assert all(CASE_KEYS <= set(c.to_dict()) for c in card.cases)
    raw = json.loads(CAPTURED.read_text())["results"]["results"]
    assert card.passed == sum(r["success"] for r in raw) == 1
    assert card.n == 6 and math.isclose(card.pass_rate, 1 / 6)
    assert (card.ci_low, card.ci_high) == stats.wilson_interval(1, 6)
    assert card.assertion_pass_rates["schema"] == 1.0
    assert math.isclose(card.assertion_pass_rates["category"], 1 / 6)
    assert card.target_pass_rate == 0.9
    by_id = {c.id: c for c in card.cases}
    assert by_id["eval-004"].passed and by_id["eval-004"].gold == {"category": "refund", "priority": "high"}
    assert by_id["eval-001"].failed_assertions == ["category", "priority"]
    assert by_id["eval-001"].output == '{"category": "refund", "priority": "high"}'
    assert all(c.latency_ms > 0 and c.output_tokens > 0 for c in card.cases)
    assert [c.prompt_tokens for c in card.cases] == [317, 325, 332, 319, 316, 308]
    assert math.isclose(card.mean_prompt_tokens, (317 + 325 + 332 + 319 + 316 + 308) / 6)
    assert card.mean_output_tokens == 14
    table = scorecard.worst_failures_md(card)
    assert table.splitlines()[2].startswith("| eval-001 ") and "eval-004" not in table
    assert "| schema | 100.0% |" in scorecard.assertion_table_md(card)


def _captured() -> dict:
    return json.loads(CAPTURED.read_text())


def _planted(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    return path


def test_parse_rejects_results_that_do_not_match_the_suite(tmp_path):
    suite = suites.task_suite(_task(), EVAL)
    doc = _captured()
    doc["results"]["results"] = doc["results"]["results"][:-1]
    with pytest.raises(PromptfooError, match=r"expected results for 6 tests \(1 contenders x 6 cases\)"):
        scorecard.parse_results(_planted(tmp_path, doc), suite, ["baseline"])
    with pytest.raises(PromptfooError, match=r"expected results for 12 tests \(2 contenders x 6 cases\)"):
        scorecard.parse_results(CAPTURED, suite, ["baseline", "zero_shot"])
    with pytest.raises(PromptfooError, match="test 0 is baseline/eval-001, expected zero_shot/eval-001"):
        scorecard.parse_results(CAPTURED, suite, ["zero_shot"])
    doc = _captured()
    doc["results"]["results"][1]["vars"]["case"]["id"] = "eval-999"
    with pytest.raises(PromptfooError, match="test 1 is baseline/eval-999, expected baseline/eval-002"):
        scorecard.parse_results(_planted(tmp_path, doc), suite, ["baseline"])
    doc = _captured()  # a result without a contender (a run written before contender-major runs)
    del doc["results"]["results"][0]["vars"]["case"]["contender"]
    with pytest.raises(PromptfooError, match="test 0 is None/eval-001, expected baseline/eval-001"):
        scorecard.parse_results(_planted(tmp_path, doc), suite, ["baseline"])


def test_parse_fails_on_a_provider_error(tmp_path):
    suite = suites.task_suite(_task(), EVAL)
    doc = _captured()
    doc["results"]["results"][2].update({"failureReason": 2, "error": "tunegate provider failed: boom"})
    with pytest.raises(PromptfooError, match=r"(?s)1 of 6 cases errored; first error:\ntunegate provider failed: boom"):
        scorecard.parse_results(_planted(tmp_path, doc), suite, ["baseline"])


# --------------------------------------------------------------------------- the card cache
@dataclass(frozen=True)
class PlantingRunner:
    """Test double for PromptfooRunner: 'runs' promptfoo by planting the captured results."""

    timeout_s: int = 60

    def run(self, config_path: Path, results_path: Path) -> float:
        assert config_path.is_file() and (config_path.parent / "cases.jsonl").is_file()
        shutil.copyfile(CAPTURED, results_path)
        return 1.5


@dataclass(frozen=True)
class RefusingRunner:
    """Test double for PromptfooRunner: any run is a test failure."""

    timeout_s: int = 60

    def run(self, config_path: Path, results_path: Path) -> float:
        raise AssertionError("promptfoo ran for a contender whose card is cached")


def test_score_caches_cards_by_artefact_recipe_and_suite(tmp_path):
    suite = suites.task_suite(_task(), EVAL)
    train = list(read_jsonl(TRAIN))
    artefact = {"id": "artefact-1", "path": "/models/base"}
    contender = Contender("baseline", artefact, recipes.for_task("static_few_shot", _task(), k=3))
    model = ModelSpec(base_dir=str(tmp_path / "model"))
    cache = tmp_path / "cards"
    logged: list[str] = []

    first = scorecard.score(
        tmp_path / "run", suite, [contender], model, PlantingRunner(), cache, train=train, log=logged.append
    )["baseline"]
    assert first.cache_hit is False and first.passed == 1 and first.n == 6
    assert first.artefact == artefact and first.recipe == {
        "kind": "static_few_shot",
        "k": 3,
        "system_prompt": _task().system_prompt,
    }
    assert first.recipe_text.startswith("strong system prompt + the same 3 train examples")
    assert all(c.examples == ["train-003", "train-001", "train-005"] for c in first.cases)
    assert first.run_seconds == 1.5 and first.run_contenders == 1
    assert first.config_path == str(tmp_path / "run" / "promptfooconfig.yaml")
    assert first.model["base_dir"] == str(tmp_path / "model")
    cached_file = cache / f"{contender.key(suite)}.json"
    assert cached_file.is_file()

    second = scorecard.score(
        tmp_path / "run2", suite, [contender], model, RefusingRunner(), cache, train=train, log=logged.append
    )["baseline"]
    assert second.cache_hit is True
    assert replace(second, cache_hit=False) == first
    assert not (tmp_path / "run2").exists() and any("reusing" in line for line in logged)

    # a changed artefact, recipe or suite is a new contender: it is scored, never reused
    changed_suite = suites.task_suite(_task().model_copy(update={"max_new_tokens": 16}), EVAL)
    for other, on in [
        (Contender("baseline", {**artefact, "id": "artefact-2"}, contender.recipe), suite),
        (Contender("baseline", artefact, recipes.for_task("static_few_shot", _task(), k=2)), suite),
        (Contender("baseline", artefact, recipes.for_task("retrieved_few_shot", _task(), k=3)), suite),
        (contender, changed_suite),
    ]:
        assert other.key(on) != contender.key(suite)
        with pytest.raises(AssertionError, match="whose card is cached"):
            scorecard.score(
                tmp_path / "run3", on, [other], model, RefusingRunner(), cache, train=train, log=logged.append
            )
    # the batch size is not part of the key (see scorecard.py)
    again = scorecard.score(
        tmp_path / "run4",
        suite,
        [contender],
        model,
        RefusingRunner(),
        cache,
        train=train,
        batch_size=3,
        log=logged.append,
    )
    assert again["baseline"].cache_hit is True


def test_a_cached_card_that_does_not_parse_is_a_cache_miss(tmp_path):
    """A damaged cache file, or one missing a field a card needs, is scored again (and
    rewritten), never a crash; a file written before a field with a default existed is reused."""
    suite = suites.task_suite(_task(), EVAL)
    contender = Contender("baseline", {"id": "artefact-1", "path": "/models/base"}, recipes.Recipe("as_trained"))
    model = ModelSpec(base_dir=str(tmp_path / "model"))
    cache = tmp_path / "cards"
    cached_file = cache / f"{contender.key(suite)}.json"
    good = scorecard.score(tmp_path / "run", suite, [contender], model, PlantingRunner(), cache, log=lambda _: None)
    doc = json.loads(cached_file.read_text())
    assert "cache_hit" not in doc and "mlflow_run_id" not in doc  # this materialisation's, not the card's
    assert ScoreCard.from_dict(doc) == good["baseline"]

    older = {k: v for k, v in doc.items() if k not in ("task_metrics", "mean_prompt_tokens", "view_command")}
    cached_file.write_text(json.dumps(older))
    reused = scorecard.score(tmp_path / "run2", suite, [contender], model, RefusingRunner(), cache, log=lambda _: None)
    assert reused["baseline"].cache_hit is True and reused["baseline"].task_metrics is None

    no_cases = {k: v for k, v in doc.items() if k != "cases"}
    wrong_type = {**doc, "pass_rate": "high"}
    bad_case = {**doc, "cases": [{**doc["cases"][0], "passed": None}, *doc["cases"][1:]]}
    for damaged in (
        '{"contender": "baseline", "pass_ra',
        "[1, 2]",
        json.dumps(no_cases),
        json.dumps(wrong_type),
        json.dumps(bad_case),
        "\xff\xfe not text",
    ):
        cached_file.write_text(damaged, encoding="latin-1")
        logged: list[str] = []
        card = scorecard.score(tmp_path / "run3", suite, [contender], model, PlantingRunner(), cache, log=logged.append)
        assert card["baseline"].cache_hit is False and card["baseline"].pass_rate == good["baseline"].pass_rate
        assert any("not a usable score card" in line for line in logged), (damaged, logged)
        rewritten = ScoreCard.from_dict(json.loads(cached_file.read_text()))
        assert rewritten.results_path == str(tmp_path / "run3" / "results.json")


def test_a_card_shows_in_the_ui_through_the_one_converter():
    """ScoreCard.metadata() is Dagster-free; assets/metadata.py turns each kind into Dagster's."""
    import dagster as dg

    from assets.metadata import to_dagster
    from pipelines.common.metadata import JsonValue

    card = scorecard.parse_results(CAPTURED, suites.task_suite(_task(), EVAL), ["baseline"])["baseline"]
    card = replace(card, artefact={"id": "artefact-1"}, view_command="promptfoo view", mlflow_run_id="run-1")
    meta = to_dagster(card.metadata())
    assert meta["pass_rate"] == dg.MetadataValue.float(round(1 / 6, 4)) and meta["n"] == dg.MetadataValue.int(6)
    assert meta["passed"] == dg.MetadataValue.int(1) and meta["cache_hit"] == dg.MetadataValue.bool(False)
    assert meta["results_path"] == dg.MetadataValue.path(str(CAPTURED))
    assert meta["checks"] == dg.MetadataValue.md(scorecard.assertion_table_md(card))
    assert meta["open_in_promptfoo"] == dg.MetadataValue.md("```\npromptfoo view\n```")
    assert meta["ci_95"] == dg.MetadataValue.text(f"[{card.ci_low:.3f}, {card.ci_high:.3f}]")
    assert meta["target_pass_rate"] == dg.MetadataValue.float(0.9) and "task_metrics" in meta
    assert to_dagster({"doc": JsonValue({"a": 1}), "none": None}) == {
        "doc": dg.MetadataValue.json({"a": 1}),
        "none": dg.MetadataValue.null(),
    }
    with pytest.raises(TypeError, match="'when': datetime is not a metadata value"):
        to_dagster({"when": __import__("datetime").datetime.now()})


def test_a_card_round_trips_and_pickles():
    card = scorecard.parse_results(CAPTURED, suites.task_suite(_task(), EVAL), ["baseline"])["baseline"]
    card = replace(card, cases=[replace(card.cases[0], examples=["train-001"]), *card.cases[1:]])
    assert ScoreCard.from_dict(json.loads(json.dumps(card.to_dict()))) == card
    assert pickle.loads(pickle.dumps(card)) == card  # values pass between assets through Dagster's pickling IO manager
    assert "examples" not in card.cases[1].to_dict() and card.cases[0].to_dict()["examples"] == ["train-001"]
    assert CaseResult.from_dict(card.cases[0].to_dict()) == card.cases[0]


# --------------------------------------------------------------------------- runner failures
def test_missing_promptfoo_is_a_clear_error(tmp_path):
    missing = PromptfooRunner(npm_dir=str(tmp_path))  # no node_modules here
    with pytest.raises(PromptfooError, match="make setup"):
        missing.run(tmp_path / "promptfooconfig.yaml", tmp_path / "results.json")
    with pytest.raises(PromptfooError, match="wrapper .* not found"):
        PromptfooRunner(cli=str(tmp_path / "no-such-promptfoo")).check()


def _fake_cli(tmp_path: Path, body: str) -> PromptfooRunner:
    """A stand-in promptfoo wrapper (a shell script) and the pinned-CLI files check() wants."""
    bin_dir = tmp_path / "npm" / "node_modules" / ".bin"
    bin_dir.mkdir(parents=True)
    for name in ("promptfoo", "node"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 99\n")
    cli = tmp_path / "fake-promptfoo"
    cli.write_text("#!/bin/sh\n" + body)
    cli.chmod(cli.stat().st_mode | stat.S_IXUSR)
    return PromptfooRunner(cli=str(cli), npm_dir=str(tmp_path / "npm"), timeout_s=2, extra_env={"TUNEGATE_TEST": "yes"})


def test_runner_invokes_the_wrapper_offline_in_the_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    seen = tmp_path / "seen.txt"
    fake = _fake_cli(
        tmp_path,
        f'pwd > {seen}\necho "$@" >> {seen}\nenv >> {seen}\n'
        'while [ "$1" != "-o" ]; do shift; done\necho "{{}}" > "$2"\n',
    )
    config = run_dir / "promptfooconfig.yaml"
    config.write_text("{}")
    assert fake.run(config, run_dir / "results.json") >= 0
    lines = seen.read_text().splitlines()
    assert lines[0] == str(run_dir)
    assert lines[1] == (
        f"eval -c {config} -o {run_dir / 'results.json'} --no-cache --no-table --no-progress-bar --no-share"
    )
    env = dict(line.split("=", 1) for line in lines[2:] if "=" in line)
    assert env["PATH"].split(os.pathsep)[0] == str(tmp_path / "npm" / "node_modules" / ".bin")
    assert env["PROMPTFOO_CONFIG_DIR"] == str(run_dir / "promptfoo")
    assert env["PROMPTFOO_DISABLE_TELEMETRY"] == "1" and env["PROMPTFOO_DISABLE_SHARING"] == "1"
    assert env["PROMPTFOO_FAILED_TEST_EXIT_CODE"] == "0" and env["TUNEGATE_TEST"] == "yes"
    assert str(REPO_ROOT) in env["PYTHONPATH"].split(os.pathsep)


def test_runner_reports_exit_code_and_stderr_tail(tmp_path):
    fake = _fake_cli(tmp_path, "echo 'progress' \necho 'boom: config invalid' >&2\nexit 3\n")
    (tmp_path / "promptfooconfig.yaml").write_text("{}")
    with pytest.raises(PromptfooError, match=r"(?s)exited with 3 .*stderr tail:\nboom: config invalid"):
        fake.run(tmp_path / "promptfooconfig.yaml", tmp_path / "results.json")


def test_runner_without_results_file_is_an_error(tmp_path):
    fake = _fake_cli(tmp_path, "echo 'all good, honest'\nexit 0\n")
    (tmp_path / "promptfooconfig.yaml").write_text("{}")
    stale = tmp_path / "results.json"
    stale.write_text("{}")  # a previous run's results must not be read as this run's
    with pytest.raises(PromptfooError, match=r"(?s)wrote no .*results\.json.*all good, honest"):
        fake.run(tmp_path / "promptfooconfig.yaml", stale)


def test_runner_timeout_stops_the_whole_process_group(tmp_path):
    marker = tmp_path / "grandchild-survived"
    fake = _fake_cli(tmp_path, f"(sleep 4; touch {marker}) &\nsleep 30\n")
    (tmp_path / "promptfooconfig.yaml").write_text("{}")
    started = time.perf_counter()
    with pytest.raises(PromptfooError, match="timed out after 2s"):
        fake.run(tmp_path / "promptfooconfig.yaml", tmp_path / "results.json")
    assert time.perf_counter() - started < 20
    time.sleep(3)
    assert not marker.exists()  # the background child was killed with its parent


def test_promptfoo_crash_reports_stderr_tail(tmp_path):
    """The real pinned CLI on a config it rejects."""
    config = tmp_path / "promptfooconfig.yaml"
    config.write_text(yaml.safe_dump({"prompts": ["{{ x }}"], "providers": [42], "tests": [{}]}))
    with pytest.raises(PromptfooError, match=r"(?s)exited with \d+.*stderr tail") as info:
        PromptfooRunner(timeout_s=120).run(config, tmp_path / "results.json")
    assert str(config) in str(info.value)


def test_provider_error_fails_the_run_with_its_message(tmp_path):
    """A real promptfoo run whose provider cannot load its model: no silent 0 % score."""
    suite = suites.task_suite(_task(), EVAL)
    missing = ModelSpec(base_dir=str(tmp_path / "no-model"))
    contender = Contender("tuned", {"id": "artefact-x"}, recipes.Recipe("as_trained"))
    with pytest.raises(PromptfooError, match=r"(?s)6 of 6 cases errored.*no-model: not a model folder"):
        scorecard.score(
            tmp_path / "run", suite, [contender], missing, PromptfooRunner(timeout_s=120), tmp_path / "cards"
        )
    assert not (tmp_path / "cards").exists() or not list((tmp_path / "cards").iterdir())  # no card cached


# --------------------------------------------------------------------------- statistics
def test_wilson_interval_known_values():
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)
    low, high = stats.wilson_interval(5, 10)
    assert math.isclose(low, 0.2366, abs_tol=1e-4) and math.isclose(high, 0.7634, abs_tol=1e-4)
    low, high = stats.wilson_interval(0, 10)
    assert low == 0.0 and math.isclose(high, 0.2775, abs_tol=1e-4)
    low, high = stats.wilson_interval(10, 10)
    assert math.isclose(low, 0.7225, abs_tol=1e-4) and high == 1.0
    with pytest.raises(ValueError):
        stats.wilson_interval(3, 2)


# --------------------------------------------------------------------------- a real run (tiny model)
PARTITION = "tiny-llama"
LADDER = ("zero_shot", "static_few_shot", "retrieved_few_shot")


@pytest.mark.slow
def test_prompt_ladder_runs_promptfoo_once_on_the_tiny_model(tiny_model_dir, tiny_registry, tmp_path):
    """The one real promptfoo run: the `prompt_ladder` multi-asset (the shipped three rungs),
    4 cases each, through the shipped provider (batched generation), with the odd characters
    of the fixture tickets. A second materialisation reuses every card."""
    import dagster as dg

    from assets.evaluation import prompt_ladder
    from pipelines.models import artefacts
    from pipelines.orchestration.resources import PromptfooResource, TunegateResource
    from tests.doubles import double

    rows = _rows(EVAL)[:4]
    eval_path = _write_jsonl(tmp_path / "eval.jsonl", rows)

    doubles = [
        double("train_set", split_value(TRAIN, "f")),
        double("eval_set", split_value(eval_path, "f")),
        double("base_model", base_model_info(path=tiny_model_dir)),
    ]
    settings = tmp_path / "tunegate.yaml"
    settings.write_text(yaml.safe_dump({"eval": {"batch_size": 3}}))
    tunegate = TunegateResource(
        home=str(tmp_path / "home"), base_models_file=str(tiny_registry), settings_file=str(settings)
    )
    resources = {"tunegate": tunegate, "promptfoo": PromptfooResource(timeout_s=300)}
    expected_artefact = artefacts.identity(tiny_model_dir, "tokenizer_default", {"dtype": "float32"})
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("base_model", [PARTITION])
        result = dg.materialize(
            [*doubles, prompt_ladder], instance=instance, partition_key=PARTITION, resources=resources
        )
        assert result.success
        keys = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert {f"ladder/{name}" for name in LADDER} | {"baseline_scores"} <= keys
        baseline = result.output_for_node("prompt_ladder", "baseline_scores")
        cards = {name: result.output_for_node("prompt_ladder", f"rung_{name}") for name in LADDER}

        assert list(baseline.rungs) == list(LADDER) and baseline.baseline_rung in LADDER
        assert baseline.skip_training is None  # random weights cannot reach the 90 % target
        run_dir = tmp_path / "home" / "evals" / PARTITION / "ladder"
        train_ids = {r["id"] for r in _rows(TRAIN)}
        for name, card in cards.items():
            assert baseline.rungs[name].pass_rate == card.pass_rate
            assert SCORECARD_KEYS <= set(card.to_dict()) and card.n == 4 and card.suite == "task"
            assert card.contender == name and card.cache_hit is False
            assert card.artefact["id"] == expected_artefact["id"]  # the fp32 base with its template
            assert card.recipe["kind"] == name and card.run_contenders == 3
            assert [c.id for c in card.cases] == [r["id"] for r in rows]
            assert all(isinstance(c.output, str) and c.output_tokens >= 1 for c in card.cases)
            assert all(c.latency_ms > 0 and c.prompt_tokens > 0 for c in card.cases)
            assert card.model["chat_template"] == "tokenizer_default"
            assert Path(card.results_path) == run_dir / "results.json"  # one run for the whole ladder
        assert all("examples" not in c.to_dict() for c in cards["zero_shot"].cases)
        assert {tuple(c.examples) for c in cards["static_few_shot"].cases} == {("train-003", "train-001", "train-005")}
        assert all(len(c.examples) == 3 and set(c.examples) <= train_ids for c in cards["retrieved_few_shot"].cases)
        assert cards["zero_shot"].mean_prompt_tokens < cards["static_few_shot"].mean_prompt_tokens
        meta = {
            m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("prompt_ladder")
        }
        assert {"pass_rate", "ci_95", "checks", "worst_failures", "open_in_promptfoo", "artefact_id"} <= set(
            meta["ladder/zero_shot"]
        )
        assert meta["ladder/zero_shot"]["artefact_id"].value == expected_artefact["id"]
        assert {"baseline_rung", "ladder", "skip_training", "suite_fingerprint"} <= set(meta["baseline_scores"])
        assert (run_dir / "promptfoo").is_dir()  # PROMPTFOO_CONFIG_DIR stayed in the run dir

        raw = json.loads((run_dir / "results.json").read_text("utf-8"))["results"]["results"]
        assert len(raw) == 3 * 4
        users = {r["testIdx"]: (r["vars"]["case"]["user"], r["prompt"]["raw"]) for r in raw}
        for index in range(12):  # odd characters reach promptfoo's results untouched
            row = rows[index % 4]
            assert users[index] == (row["messages"][1]["content"],) * 2

        again = dg.materialize(
            [*doubles, prompt_ladder], instance=instance, partition_key=PARTITION, resources=resources
        )
        assert again.success
        for name in LADDER:
            card = again.output_for_node("prompt_ladder", f"rung_{name}")
            assert card.cache_hit is True and card.pass_rate == cards[name].pass_rate
