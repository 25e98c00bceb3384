"""The general-skills suite (evals/general.jsonl): generated, deterministic, well-formed, and
every check verified with promptfoo's own evaluator against hand-written right and wrong
answers (the ``echo`` provider returns the prompt, so each test's prompt is the answer)."""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "make_general_suite.py"
SUITE = REPO / "evals" / "general.jsonl"
BIN = REPO / "evals" / "node_modules" / ".bin"
ITEM_KEYS = {"id", "skill", "kind", "prompt", "assert"}
# words of the training data's theme (support tickets: scripts/make_demo_data.py)
THEME_WORDS = (
    "ticket",
    "billing",
    "bill",
    "billed",
    "invoice",
    "refund",
    "refunded",
    "shipping",
    "shipment",
    "shipped",
    "delivery",
    "delivered",
    "parcel",
    "courier",
    "account",
    "priority",
    "urgent",
    "category",
    "customer",
    "support",
    "subscription",
    "password",
    "login",
    "order",
    "charged",
    "checkout",
)


def _load_script():
    spec = importlib.util.spec_from_file_location("make_general_suite", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


mgs = _load_script()


def _committed() -> list[dict]:
    return [json.loads(line) for line in SUITE.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- fast checks
def test_committed_file_is_what_the_script_generates():
    assert SUITE.read_text(encoding="utf-8") == mgs.render(mgs.items())
    assert mgs.render(mgs.items()) == mgs.render(mgs.items())  # no hidden state between runs
    assert mgs.main(["--check"]) == 0


def test_check_flag_reports_a_stale_file(tmp_path):
    stale = tmp_path / "general.jsonl"
    stale.write_text(SUITE.read_text(encoding="utf-8").replace("capital", "kapital", 1))
    assert mgs.main(["--check", "--out", str(stale)]) == 1


def test_size_mix_and_unique_ids():
    rows = _committed()
    assert len(rows) >= 300
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))
    prompts = [r["prompt"] for r in rows]
    assert len(prompts) == len(set(prompts))
    per_skill = collections.Counter(r["skill"] for r in rows)
    assert set(per_skill) == set(mgs.SKILLS)
    assert all(n >= 60 for n in per_skill.values()), per_skill
    assert per_skill["instruction"] >= 0.4 * len(rows), per_skill


def test_item_format():
    prefix = {"instruction": "ifeval", "arithmetic": "arith", "facts": "fact"}
    for row in _committed():
        assert set(row) == ITEM_KEYS, row
        assert re.fullmatch(rf"{prefix[row['skill']]}-{re.escape(row['kind'])}-\d{{3}}", row["id"]), row["id"]
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", row["kind"]), row["kind"]
        assert isinstance(row["prompt"], str) and row["prompt"].strip() == row["prompt"] != ""
        assert 1 <= len(row["assert"]) <= 3, row["id"]
        for check in row["assert"]:
            assert check["type"] in mgs.ALLOWED_ASSERTS, (row["id"], check)
            assert set(check) <= {"type", "value"}, (row["id"], check)
            if check["type"] != "is-json":
                assert isinstance(check["value"], str) and check["value"], (row["id"], check)
            if isinstance(check.get("value"), str):
                # promptfoo renders string values with nunjucks: no template syntax allowed
                assert not re.search(r"\{[{%#]", check["value"]), (row["id"], check)
            if check["type"] in ("regex", "not-regex"):
                assert not re.search(r"\(\?[a-z]", check["value"]), (row["id"], check)  # no inline flags


def test_prompts_stay_short_and_off_the_training_theme():
    pattern = re.compile(r"\b(?:" + "|".join(THEME_WORDS) + r")s?\b", re.IGNORECASE)
    for row in _committed():
        assert not pattern.search(row["prompt"]), (row["id"], row["prompt"])
        assert len(row["prompt"].split()) <= 40, row["id"]
        if row["kind"] == "max-words":
            assert int(re.search(r"\b(\d+) words", row["prompt"]).group(1)) <= 20
        for check in row["assert"]:
            if check["type"] == "is-json":
                assert not {"category", "priority"} & set(check["value"].get("required", [])), row["id"]


def test_every_item_has_right_and_wrong_answers():
    cases = mgs.cases()
    assert [c.item for c in cases] == _committed()
    for case in cases:
        assert case.good and case.bad, case.item["id"]
        assert not set(case.good) & set(case.bad), case.item["id"]
        assert all(len(text.split()) <= 20 for text in case.good), case.item["id"]


def test_arithmetic_answers_are_unique_whole_numbers_not_in_the_prompt():
    for case in mgs.cases():
        if case.item["skill"] != "arithmetic":
            continue
        numbers = [int(n) for n in re.findall(r"\d+", case.item["prompt"])]
        op = case.item["kind"]
        if op == "half":  # "What is half of a?"
            numbers.append(2)
        a, b = numbers
        if case.item["prompt"].startswith("Subtract"):  # "Subtract b from a."
            a, b = b, a
        answer = {"add": a + b, "sub": a - b, "mul": a * b, "double": a * b, "div": a // b, "half": a // b}[op]
        assert op not in ("div", "half") or a % b == 0, case.item["id"]
        assert answer >= 2 and case.good[0] == str(answer), case.item["id"]
        assert not re.search(case.item["assert"][0]["value"], case.item["prompt"]), case.item["id"]


# --------------------------------------------------------------------------- promptfoo
def promptfoo_echo(workdir: Path, tests: list[tuple[str, str, list[dict]]]) -> list[bool]:
    """Run promptfoo (pinned CLI, offline) with the ``echo`` provider on ``(name, answer,
    asserts)`` tests and return each test's success, in order. The answer travels as an
    object var so promptfoo never templates it."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "description": "general-suite check validation",
        "prompts": [{"raw": "{{ case.text }}", "label": "answer"}],
        "providers": ["echo"],
        "tests": [
            {"description": name, "vars": {"case": {"name": name, "text": text}}, "assert": asserts}
            for name, text, asserts in tests
        ],
        "evaluateOptions": {"maxConcurrency": 8, "cache": False},
        "sharing": False,
    }
    (workdir / "cfg.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PROMPTFOO_DISABLE_TELEMETRY="1",
        PROMPTFOO_DISABLE_UPDATE="1",
        PROMPTFOO_DISABLE_SHARING="1",
        PROMPTFOO_DISABLE_REMOTE_GENERATION="1",
        PROMPTFOO_CACHE_ENABLED="false",
        PROMPTFOO_FAILED_TEST_EXIT_CODE="0",
        NO_COLOR="1",
        NODE_NO_WARNINGS="1",
        # promptfoo 0.123.1 can die at exit with "write after end" from its per-run debug
        # log file (winston) after the results are written; that file is not needed here
        PROMPTFOO_DISABLE_DEBUG_LOG="1",
        PROMPTFOO_CONFIG_DIR=str(workdir / "promptfoo"),
    )
    proc = subprocess.run(
        [
            str(BIN / "promptfoo"),
            "eval",
            "-c",
            "cfg.yaml",
            "-o",
            "results.json",
            "--no-cache",
            "--no-table",
            "--no-progress-bar",
            "--no-share",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text(encoding="utf-8"))["results"]["results"]
    assert len(results) == len(tests)
    by_index = {r["testIdx"]: r for r in results}
    outcomes = []
    for index, (name, text, _) in enumerate(tests):
        result = by_index[index]
        assert result["vars"]["case"]["name"] == name
        assert result["response"]["output"] == text, (name, result["response"])  # echoed verbatim
        outcomes.append(bool(result["success"]))
    return outcomes


needs_promptfoo = pytest.mark.skipif(
    not (BIN / "promptfoo").exists() or not (BIN / "node").exists(),
    reason="the pinned promptfoo CLI is installed by `make setup` (npm ci in evals/)",
)


@pytest.mark.slow
@needs_promptfoo
def test_checks_accept_right_answers_and_reject_wrong_ones(tmp_path):
    tests, expected = [], []
    for case in mgs.cases():
        for verdict, answers in ((True, case.good), (False, case.bad)):
            for n, text in enumerate(answers):
                tests.append((f"{case.item['id']}:{'good' if verdict else 'bad'}:{n}", text, case.item["assert"]))
                expected.append(verdict)
    outcomes = promptfoo_echo(tmp_path, tests)
    wrong = [(name, text, got) for (name, text, _), want, got in zip(tests, expected, outcomes) if got != want]
    assert not wrong, "\n".join(f"{name}: {text!r} -> {'pass' if got else 'fail'}" for name, text, got in wrong[:40])
