"""Benchmark: what does scoring through promptfoo cost over calling the model directly?

For each of two contenders, N eval cases are answered (a) by the same batched greedy
generation called directly in Python (pipelines.models: loading.load + decoding.generate), and (b)
through `promptfoo eval` with the shipped provider (CLI start, worker start, model load,
the same batched generation, built-in assertions, results.json). Both sides load the model
once per contender (one promptfoo run per contender), so the ratio measures promptfoo's
overhead. Goal: <= 1.3x.

Contenders: the prompt-only baseline (strong system prompt + the `static_few_shot` examples
from train, k from the first static rung of `eval.ladder`) on the base model, and the tuned
model when one is given (--tuned-model: a merged model folder, the `tuned_model` asset's
path; its tokenizer carries the chat template training used); without one, the second
contender is the base model prompted as in training (`as_trained`: the records' own system
prompt), which exercises the same code path with different prompts.

    .venv/bin/python bench/eval_overhead.py [--n 200] [--batch-size 16] [--tuned-model DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.config.base_models import load_base_models
from pipelines.config.paths import REPO_ROOT, Layout, default_base_models_file, default_home, default_settings_file  # noqa: E402
from pipelines.config.settings import load_settings  # noqa: E402
from pipelines.data.records import turn  # noqa: E402
from pipelines.evaluation import recipes  # noqa: E402
from pipelines.evaluation.runner import PromptfooRunner, write_run  # noqa: E402
from pipelines.evaluation.scorecard import ScoreCard, parse_results  # noqa: E402
from pipelines.evaluation.suite import Suite, task_suite  # noqa: E402
from pipelines.evaluation.task import TaskSpec, gold_answer, load_task  # noqa: E402
from pipelines.models import decoding, loading, materialize


def _usable(task: TaskSpec, lines: list[str]) -> list[dict]:
    """Records with a user turn and a gold JSON answer (the raw demo file also holds the
    deliberately broken rows the data stage quarantines: skip those here)."""
    out = []
    for line in lines:
        try:
            record = json.loads(line)
            gold_answer(record, Path("bench"), task)
        except (ValueError, TypeError, AttributeError, KeyError):
            continue
        if isinstance(record.get("messages"), list) and turn(record, "user"):
            out.append(record)
    return out


def _records(task: TaskSpec, n: int, layout: Layout) -> tuple[list[dict], list[dict]]:
    """n cases to answer and a train pool for few-shot: the materialised splits when they
    exist, else the demo tickets. Throughput only: scores are not the point here."""

    def read(path: Path) -> list[dict]:
        return _usable(task, path.read_text(encoding="utf-8", errors="replace").splitlines())

    if layout.train_file.is_file() and layout.eval_file.is_file():
        train = read(layout.train_file)
        pool = read(layout.eval_file) + train
    else:
        pool = read(REPO_ROOT / "data" / "demo" / "tickets.jsonl")
        train = pool[n:]
    if len(pool) < n:
        raise SystemExit(f"only {len(pool)} usable cases found, asked for {n}")
    cases = [{**record, "id": f"bench-{index:04d}"} for index, record in enumerate(pool[:n])]
    return cases, train


def _suite(task: TaskSpec, cases: list[dict], tmp: Path) -> Suite:
    """The bench cases as a task suite (the same cases for both contenders)."""
    path = tmp / "cases.jsonl"
    path.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases), encoding="utf-8")
    return task_suite(task, path)


def _static_k(ladder) -> int:
    """k of the first `static_few_shot` rung: the baseline the old `eval.few_shot_k` set."""
    for rung in ladder:
        if rung.recipe == "static_few_shot":
            return rung.k
    raise SystemExit("eval.ladder has no static_few_shot rung: nothing sets the baseline's k")


def _direct(model: loading.ModelSpec, conversations: list[list[dict]], max_new_tokens: int, batch_size: int) -> float:
    started = time.perf_counter()
    loaded = loading.load(model)
    decoding.generate(loaded, conversations, max_new_tokens, batch_size)
    return time.perf_counter() - started


def _through_promptfoo(
    run_dir: Path,
    suite: Suite,
    contender: str,
    conversations: list[list[dict]],
    model: loading.ModelSpec,
    runner: PromptfooRunner,
    batch_size: int,
    max_concurrency: int,
) -> tuple[float, ScoreCard]:
    """Write the run, run promptfoo, parse the card: the whole scoring of one contender."""
    started = time.perf_counter()
    config_path = write_run(
        run_dir, suite, {contender: conversations}, model, batch_size, runner.timeout_s, max_concurrency
    )
    results_path = run_dir / "results.json"
    runner.run(config_path, results_path)
    card = parse_results(results_path, suite, [contender])[contender]
    return time.perf_counter() - started, card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--tuned-model", type=Path, help="a merged tuned model folder (the `tuned_model` asset's path)")
    args = parser.parse_args()

    settings = load_settings(default_settings_file())
    batch_size = args.batch_size or settings.eval.batch_size
    layout = Layout(default_home())
    spec = load_base_models(default_base_models_file())[0]
    base_dir = materialize.materialize(spec, layout.model_cache_dir(spec.slug))
    task = load_task(REPO_ROOT / settings.eval.task_file)
    cases, train = _records(task, args.n, layout)
    base = loading.ModelSpec(base_dir=str(base_dir), chat_template=spec.chat_template)
    baseline = ("baseline", base, recipes.for_task("static_few_shot", task, _static_k(settings.eval.ladder)))
    if args.tuned_model:
        if not (args.tuned_model / "config.json").is_file():
            raise SystemExit(f"{args.tuned_model}: not a model folder (no config.json)")
        tuned_model = loading.ModelSpec(base_dir=str(args.tuned_model.resolve()))
        second = ("tuned", tuned_model, recipes.for_task("as_trained", task))
    else:
        second = ("tuned", base, recipes.for_task("as_trained", task))
        print("no --tuned-model: the second contender is the BASE model prompted as in training")
    runner = PromptfooRunner(timeout_s=settings.eval.timeout_s)
    totals = {"direct": 0.0, "promptfoo": 0.0}
    with tempfile.TemporaryDirectory(prefix="tunegate-bench-") as tmp_name:
        tmp = Path(tmp_name)
        suite = _suite(task, cases, tmp)
        for contender, model, recipe in (baseline, second):
            conversations, _ = recipes.build(recipe, suite.records, train)
            direct = _direct(model, conversations, suite.max_new_tokens, batch_size)
            through, card = _through_promptfoo(
                tmp / contender,
                suite,
                contender,
                conversations,
                model,
                runner,
                batch_size,
                settings.eval.max_concurrency,
            )
            totals["direct"] += direct
            totals["promptfoo"] += through
            print(
                f"{contender:9s} n={len(suite.cases)} direct {direct:7.1f}s  "
                f"promptfoo {through:7.1f}s  ratio {through / direct:.2f}x  "
                f"(pass rate {card.pass_rate:.1%})"
            )
    ratio = totals["promptfoo"] / totals["direct"]
    print(
        f"total     {args.n} cases x 2 contenders: direct {totals['direct']:.1f}s, "
        f"promptfoo {totals['promptfoo']:.1f}s, ratio {ratio:.2f}x (goal <= 1.30x) "
        f"batch {batch_size}"
    )


if __name__ == "__main__":
    main()
