"""Evaluation stage: promptfoo config generation, results parsing, failures, one real run.

The parsing tests read a results.json captured from a real promptfoo run of SmolLM2-135M
(the prompt-only baseline on tests/fixtures/promptfoo/tickets_eval.jsonl). The real run
here uses the tiny random Llama (a test double: plumbing only, its answers are noise)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from pipelines import promptfoo as pf
from pipelines import stats
from pipelines.config import REPO_ROOT, ConfigError
from pipelines.generation import ModelSpec

FIXTURES = Path(__file__).parent / "fixtures" / "promptfoo"
TRAIN = FIXTURES / "tickets_train.jsonl"
EVAL = FIXTURES / "tickets_eval.jsonl"
CAPTURED = FIXTURES / "smollm2_baseline_results.json"
SCORECARD_KEYS = {
    "contender", "suite", "n", "passed", "pass_rate", "ci_low", "ci_high", "target_pass_rate",
    "assertion_pass_rates", "mean_latency_ms", "mean_output_tokens", "results_path",
    "eval_fingerprint", "cases",
}  # fmt: skip
CASE_KEYS = {"id", "passed", "output", "gold", "latency_ms", "output_tokens"}


def _task() -> pf.TaskSpec:
    """The task the captured fixture was scored with (fixed here, so editing the shipped
    evals/task.yaml prompt does not invalidate the captured run)."""
    return pf.TaskSpec.model_validate(
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


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- task spec
def test_shipped_task_spec_is_valid():
    task = pf.load_task(REPO_ROOT / "evals" / "task.yaml")
    assert set(task.match_fields) <= set(task.output.schema_["properties"])
    assert "only" in task.system_prompt.lower()  # the strong prompt asks for the JSON alone


def test_task_spec_error_names_file_and_key(tmp_path):
    bad = tmp_path / "task.yaml"
    bad.write_text(yaml.safe_dump({**_task().model_dump(by_alias=True), "match_fields": ["colour"]}))
    with pytest.raises(ConfigError, match=r"task\.yaml.*colour"):
        pf.load_task(bad)


def test_shipped_general_set_parses():
    suite = pf.general_suite(REPO_ROOT / "evals" / "general.jsonl", 32)
    assert len(suite.cases) >= 20
    assert {c["assert"][0]["metric"] for c in suite.cases} == {"arithmetic", "facts", "format"}


# --------------------------------------------------------------------------- config generation
def test_few_shot_examples_come_only_from_train():
    suite = pf.task_suite(_task(), EVAL, "baseline", TRAIN, few_shot_k=3)
    train_users = {pf._turn(r, "user") for r in pf.read_jsonl(TRAIN)}
    eval_users = {pf._turn(r, "user") for r in pf.read_jsonl(EVAL)}
    assert suite.few_shot_ids and all(i.startswith("train-") for i in suite.few_shot_ids)
    for case in suite.cases:
        messages = case["messages"]
        assert messages[0] == {"role": "system", "content": _task().system_prompt}
        shots = [m["content"] for m in messages[1:-1] if m["role"] == "user"]
        assert len(shots) == 3 and set(shots) <= train_users and not set(shots) & eval_users
        assert messages[-1] == {"role": "user", "content": case["user"]}
    # deterministic and spread over labels
    labels = {pf.label_of(r) for r in pf.read_jsonl(TRAIN) if r["id"] in suite.few_shot_ids}
    assert len(labels) == 3
    assert pf.task_suite(_task(), EVAL, "baseline", TRAIN, few_shot_k=3).few_shot_ids == suite.few_shot_ids


def test_tuned_prompt_is_the_training_conversation_without_the_answer():
    suite = pf.task_suite(_task(), EVAL, "tuned")
    record = pf.read_jsonl(EVAL)[0]
    assert suite.cases[0]["messages"] == record["messages"][:-1]
    assert suite.few_shot_ids == []


def test_bad_gold_answer_names_file_line_and_id(tmp_path):
    rows = [json.loads(line) for line in EVAL.read_text().splitlines()]
    rows[2]["messages"][-1]["content"] = "not json"
    bad = _write_jsonl(tmp_path / "eval.jsonl", rows)
    with pytest.raises(ConfigError, match=r"eval\.jsonl: line 3 \(id 'eval-003'\).*not JSON"):
        pf.task_suite(_task(), bad, "tuned")


def test_odd_characters_survive_into_config_and_cases(tmp_path):
    suite = pf.task_suite(_task(), EVAL, "baseline", TRAIN, few_shot_k=2)
    config_path = pf.write_run(tmp_path, suite, "baseline", ModelSpec(base_dir=str(tmp_path)), 4, 60)
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    cases = [json.loads(line) for line in (tmp_path / "cases.jsonl").read_text("utf-8").splitlines()]
    for test, case, written in zip(config["tests"], suite.cases, cases):
        assert test["vars"] == {"case": {"id": case["id"], "user": case["user"], "gold": case["gold"]}}
        assert written == {"id": case["id"], "messages": case["messages"]}
    users = [t["vars"]["case"]["user"] for t in config["tests"]]
    assert any("{{ user }}" in u and "\n" in u for u in users)
    assert any("🚚" in u for u in users) and any(u.startswith("file://") for u in users)
    provider = config["providers"][0]
    assert provider["config"]["workers"] == 1 and provider["id"].endswith("evals/provider.py")
    assert [a["metric"] for a in config["defaultTest"]["assert"]] == ["schema", "category", "priority"]


# --------------------------------------------------------------------------- parsing a real run
def test_parse_captured_results_into_scorecard():
    suite = pf.task_suite(_task(), EVAL, "baseline", TRAIN, few_shot_k=3)
    card = pf.parse_results(CAPTURED, suite, "baseline")
    assert SCORECARD_KEYS <= set(card)
    assert [c["id"] for c in card["cases"]] == [c["id"] for c in suite.cases]  # eval-file order
    assert all(CASE_KEYS <= set(c) for c in card["cases"])
    raw = json.loads(CAPTURED.read_text())["results"]["results"]
    assert card["passed"] == sum(r["success"] for r in raw) == 1
    assert card["n"] == 6 and math.isclose(card["pass_rate"], 1 / 6)
    assert (card["ci_low"], card["ci_high"]) == stats.wilson_interval(1, 6)
    assert card["assertion_pass_rates"]["schema"] == 1.0
    assert math.isclose(card["assertion_pass_rates"]["category"], 1 / 6)
    assert card["target_pass_rate"] == 0.9
    by_id = {c["id"]: c for c in card["cases"]}
    assert by_id["eval-004"]["passed"] and by_id["eval-004"]["gold"] == {"category": "refund", "priority": "high"}
    assert by_id["eval-001"]["failed_assertions"] == ["category", "priority"]
    assert all(c["latency_ms"] > 0 and c["output_tokens"] > 0 for c in card["cases"])
    table = pf.worst_failures_md(card)
    assert table.splitlines()[2].startswith("| eval-001 ") and "eval-004" not in table


def test_parse_rejects_results_that_do_not_match_the_suite(tmp_path):
    suite = pf.task_suite(_task(), EVAL, "baseline", TRAIN, few_shot_k=3)
    doc = json.loads(CAPTURED.read_text())
    doc["results"]["results"] = doc["results"]["results"][:-1]
    short = tmp_path / "results.json"
    short.write_text(json.dumps(doc))
    with pytest.raises(pf.PromptfooError, match="expected results for 6 cases"):
        pf.parse_results(short, suite, "baseline")


# --------------------------------------------------------------------------- failures
def test_missing_promptfoo_is_a_clear_error(tmp_path):
    runner = pf.PromptfooRunner(npm_dir=str(tmp_path))  # no node_modules here
    with pytest.raises(pf.PromptfooError, match="make setup"):
        runner.run(tmp_path / "promptfooconfig.yaml", tmp_path / "results.json")
    with pytest.raises(pf.PromptfooError, match="wrapper .* not found"):
        pf.PromptfooRunner(cli=str(tmp_path / "no-such-promptfoo")).check()


def test_promptfoo_crash_reports_stderr_tail(tmp_path):
    config = tmp_path / "promptfooconfig.yaml"
    config.write_text(yaml.safe_dump({"prompts": ["{{ x }}"], "providers": [42], "tests": [{}]}))
    with pytest.raises(pf.PromptfooError, match=r"(?s)exited with \d+.*stderr tail") as info:
        pf.PromptfooRunner(timeout_s=120).run(config, tmp_path / "results.json")
    assert str(config) in str(info.value)


def test_provider_error_fails_the_run_with_its_message(tmp_path):
    """A real promptfoo run whose provider cannot load its model: no silent 0 % score."""
    suite = pf.task_suite(_task(), EVAL, "tuned")
    missing = ModelSpec(base_dir=str(tmp_path / "no-model"))
    with pytest.raises(pf.PromptfooError, match=r"(?s)6 of 6 cases errored.*no-model: not a model folder"):
        pf.evaluate(tmp_path / "run", suite, "tuned", missing, pf.PromptfooRunner(timeout_s=120))


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


# --------------------------------------------------------------------------- real runs (tiny model)
@pytest.mark.slow
def test_baseline_scores_asset_runs_promptfoo_on_tiny_model(tiny_model_dir, tiny_registry, tmp_path):
    """The one real promptfoo run: the `baseline_scores` asset, 4 cases, through the shipped
    provider (batched generation), with the odd characters of the fixture tickets."""
    import dagster as dg

    from assets.evaluation import baseline_scores
    from pipelines.resources import PromptfooResource, TunegateResource

    rows = [json.loads(line) for line in EVAL.read_text("utf-8").splitlines()][:4]
    eval_path = _write_jsonl(tmp_path / "eval.jsonl", rows)
    settings = tmp_path / "tunegate.yaml"
    settings.write_text(yaml.safe_dump({"eval": {"few_shot_k": 2, "batch_size": 3}}))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("base_model", ["tiny-llama"])
    resources = {
        "tunegate": TunegateResource(
            home=str(tmp_path / "home"), base_models_file=str(tiny_registry), settings_file=str(settings)
        ),
        "promptfoo": PromptfooResource(timeout_s=300),
    }
    with dg.build_asset_context(partition_key="tiny-llama", instance=instance, resources=resources) as ctx:
        result = baseline_scores(
            ctx,
            train_set={"path": str(TRAIN), "fingerprint": "f"},
            eval_set={"path": str(eval_path), "fingerprint": "f"},
            base_model={"path": str(tiny_model_dir)},
        )
    card = result.value
    assert SCORECARD_KEYS <= set(card) and card["n"] == 4 and card["suite"] == "task"
    assert [c["id"] for c in card["cases"]] == [r["id"] for r in rows]
    assert all(isinstance(c["output"], str) and c["output_tokens"] >= 1 for c in card["cases"])
    assert all(c["latency_ms"] > 0 for c in card["cases"])
    assert len(card["few_shot_ids"]) == 2 and card["model"]["chat_template"] == "tokenizer_default"
    assert {"pass_rate", "ci_95", "checks", "worst_failures", "open_in_promptfoo"} <= set(result.metadata)
    run_dir = tmp_path / "home" / "evals" / "tiny-llama" / "baseline"
    assert Path(card["results_path"]) == run_dir / "results.json"
    assert (run_dir / "promptfoo").is_dir()  # PROMPTFOO_CONFIG_DIR stayed in the run dir
    raw = json.loads(Path(card["results_path"]).read_text("utf-8"))["results"]["results"]
    users = {r["testIdx"]: (r["vars"]["case"]["user"], r["prompt"]["raw"]) for r in raw}
    for index, row in enumerate(rows):  # odd characters reach promptfoo's results untouched
        assert users[index] == (row["messages"][1]["content"],) * 2


@pytest.mark.slow
def test_tuned_model_loads_4bit_base_plus_adapter(tiny_model_dir, tmp_path):
    """The tuned contender: NF4 base + a PEFT LoRA adapter (made here with peft, a test
    double for the training stage's adapter), generating through the same code."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from pipelines import generation

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    spec = ModelSpec.tuned(
        {
            "base_model_dir": str(tiny_model_dir),
            "adapter_dir": str(tmp_path / "adapter"),
            "load_in_4bit": True,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_compute_dtype": "float32",
            "chat_template": "tokenizer_default",
        }
    )
    loaded = generation.load(spec)
    assert type(loaded.model).__name__.startswith("Peft")
    assert any(type(m).__name__ == "Linear4bit" for m in loaded.model.modules())
    out = generation.generate(loaded, [[{"role": "user", "content": "hi"}]] * 3, 4, batch_size=2)
    assert len(out) == 3 and all(1 <= g.output_tokens <= 4 for g in out)
    shutil.rmtree(tmp_path / "adapter")
