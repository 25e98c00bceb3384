"""Benchmark: a user's own labelled data at scale (~10k rows, ~80 labels) through data,
the prompt ladder's few-shot selection and scoring, against the shipped 12-intent example
(480 rows) measured the same way in the same run.

Both tasks are written by ``scripts/make_demo_data.py --intents-only`` (a CSV ``text,intent``,
its sources.yaml, task.yaml with ``output.type: label`` and tunegate.yaml), then:

1. data: ``python -m pipelines.orchestration.data`` (``make data``) on them: wall time, peak RSS;
2. the suite and the ladder's prompts for EVERY held-out case, as the ladder asset builds
   them: label set from the train split, retrieval index over train and the nearest k for
   each case (time), prompt tokens per rung (the model's tokenizer and chat template), and
   whether ``max_new_tokens`` fits the longest gold label;
3. scoring (the large task only): the whole ladder on ``--cases`` held-out cases (a fixed
   sample, like ``eval.max_cases``) through the real promptfoo run and provider: wall time,
   ms per call per rung, pass rates, peak RSS of the provider.

    .venv/bin/python bench/intent_scale.py [--rows 10000 --labels 80 --cases 60]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.common.jsonl import read_jsonl  # noqa: E402
from pipelines.config.base_models import load_base_models
from pipelines.config.paths import (
    REPO_ROOT,
    Layout,
    default_base_models_file,  # noqa: E402
    default_home,
)
from pipelines.config.settings import load_settings  # noqa: E402
from pipelines.data.records import turn  # noqa: E402
from pipelines.evaluation import fewshot, recipes  # noqa: E402
from pipelines.evaluation.runner import PromptfooRunner  # noqa: E402
from pipelines.evaluation.scorecard import Contender, score  # noqa: E402
from pipelines.evaluation.suite import answer_budget_problem, task_suite  # noqa: E402
from pipelines.evaluation.task import load_task  # noqa: E402
from pipelines.models import artefacts, materialize
from pipelines.models.loading import ModelSpec  # noqa: E402

PY = sys.executable


def children_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def make_task(out: Path, rows: int, labels: int) -> dict:
    """Write the task and run the data assets on it; the figures of that step."""
    subprocess.run(
        [
            PY,
            str(REPO_ROOT / "scripts" / "make_demo_data.py"),
            "--intents-only",
            "--rows",
            str(rows),
            "--labels",
            str(labels),
            "--out",
            str(out / "task"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (out / "dagster").mkdir(parents=True, exist_ok=True)
    (out / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "TUNEGATE_SOURCES": str(out / "task" / "sources.yaml"),
        "TUNEGATE_SETTINGS": str(out / "task" / "tunegate.yaml"),
        "TUNEGATE_HOME": str(out / "home"),
        "DAGSTER_HOME": str(out / "dagster"),
    }
    started = time.perf_counter()
    proc = subprocess.run(
        [PY, "-m", "pipelines.orchestration.data"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    if proc.returncode:
        raise SystemExit(f"make data failed on {out}:\n{proc.stderr[-3000:]}")
    layout = Layout(out / "home")
    counts = {
        f"{side}_rows": sum(1 for _ in read_jsonl(getattr(layout, f"{side}_file")))
        for side in ("train", "validation", "eval")
    }
    return {
        "data_s": time.perf_counter() - started,
        "data_peak_mib": children_peak_mib(),
        **counts,
        "layout": layout,
        "task_file": out / "task" / "task.yaml",
    }


def prompts(task_figures: dict, tokenizer, ladder) -> dict:
    """The suite and every rung's prompt for every held-out case, as the ladder builds them."""
    layout, task = task_figures["layout"], load_task(task_figures["task_file"])
    started = time.perf_counter()
    suite = task_suite(task, layout.eval_file, layout.train_file)
    train = list(read_jsonl(layout.train_file))
    suite_s = time.perf_counter() - started
    started = time.perf_counter()
    fewshot.Retriever(train).nearest([c["user"] for c in suite.cases], 3)
    retrieval_s = time.perf_counter() - started
    tokens = {}
    for rung in ladder:
        conversations, _ = recipes.build(recipes.for_task(rung.recipe, task, rung.k), suite.records, train)
        counts = [
            len(
                tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=True)[
                    "input_ids"
                ]
            )
            for c in conversations
        ]
        tokens[rung.name] = (sum(counts) / len(counts), max(counts))
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    gold = max(count(turn(c["record"], "assistant")) for c in suite.cases)
    return {
        "task": task,
        "suite": suite,
        "train": train,
        "labels": len(suite.scoring["labels"]),
        "suite_s": suite_s,
        "retrieval_s": retrieval_s,
        "tokens": tokens,
        "longest_gold_tokens": gold,
        "budget_problem": answer_budget_problem(suite, count),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--labels", type=int, default=80)
    parser.add_argument("--cases", type=int, default=60, help="held-out cases scored per rung (0: skip scoring)")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    settings = load_settings(REPO_ROOT / "tunegate.yaml")
    spec = load_base_models(default_base_models_file())[0]
    base_dir = materialize.materialize(spec, Layout(default_home()).model_cache_dir(spec.slug))
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    with tempfile.TemporaryDirectory(prefix="tunegate-intent-scale-") as tmp_name:
        tmp = Path(tmp_name)
        make_task(tmp / "warm-up", 480, 12)  # numba compiles the MinHash kernels once per install: not data time
        figures = {}
        for name, rows, labels in (("example", 480, 12), ("scale", args.rows, args.labels)):
            figures[name] = data = make_task(tmp / name, rows, labels)
            data.update(prompts(data, tokenizer, settings.eval.ladder))
            tok = ", ".join(f"{r} {m:.0f} (max {x})" for r, (m, x) in data["tokens"].items())
            print(
                f"{name}: {rows} rows, {labels} labels -> train {data['train_rows']}, validation "
                f"{data['validation_rows']}, eval {data['eval_rows']}; label set {data['labels']}\n"
                f"  data (make data): {data['data_s']:.1f} s, peak RSS of a child so far {data['data_peak_mib']:.0f} MiB\n"
                f"  suite + label set: {data['suite_s']:.2f} s; retrieval index + 3 nearest for {data['eval_rows']} cases: "
                f"{data['retrieval_s']:.2f} s\n  prompt tokens per call: {tok}\n"
                f"  longest gold label {data['longest_gold_tokens']} tokens; max_new_tokens "
                f"{data['suite'].max_new_tokens}: {data['budget_problem'] or 'fits'}",
                flush=True,
            )
        small, big = figures["example"], figures["scale"]
        ratios = ", ".join(f"{r} {big['tokens'][r][0] / small['tokens'][r][0]:.2f}x" for r in big["tokens"])
        print(
            f"\nscale / example: data {big['data_s'] / small['data_s']:.2f}x, retrieval "
            f"{big['retrieval_s'] / small['retrieval_s']:.1f}x, prompt tokens {ratios}",
            flush=True,
        )
        if args.cases:
            suite = task_suite(big["task"], big["layout"].eval_file, big["layout"].train_file, args.cases)
            model = ModelSpec(base_dir=str(base_dir), chat_template=spec.chat_template)
            artefact = artefacts.identity(base_dir, spec.chat_template, {"dtype": "float32"})
            ladder = [
                Contender(r.name, artefact, recipes.for_task(r.recipe, big["task"], r.k)) for r in settings.eval.ladder
            ]
            started = time.perf_counter()
            cards = score(
                tmp / "run",
                suite,
                ladder,
                model,
                PromptfooRunner(timeout_s=settings.eval.timeout_s),
                tmp / "cards",
                train=big["train"],
                batch_size=settings.eval.batch_size,
                max_concurrency=settings.eval.max_concurrency,
                log=lambda _: None,
            )
            wall = time.perf_counter() - started
            print(
                f"\nladder on {len(suite.cases)} of {big['eval_rows']} held-out cases (batch {settings.eval.batch_size}): "
                f"{wall:.1f} s, peak RSS of a child {children_peak_mib():.0f} MiB"
            )
            for name, card in cards.items():
                m = card.task_metrics
                print(
                    f"  {name}: {card.passed}/{card.n} passed, {card.mean_latency_ms:.0f} ms/call, "
                    f"{card.mean_prompt_tokens:.0f} prompt tokens, {card.mean_output_tokens:.1f} output tokens, "
                    f"valid labels {m['valid_label_rate']:.0%}"
                )
    print(f"this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
