"""Benchmark: what does scoring through promptfoo cost over calling the model directly?

For each of two contenders, N eval cases are answered (a) by the same batched greedy
generation called directly in Python (pipelines.generation: load + generate), and (b)
through `promptfoo eval` with the shipped provider (CLI start, worker start, model load,
the same batched generation, built-in assertions, results.json). Both sides load the model
once per contender, so the ratio measures promptfoo's overhead. Goal: <= 1.3x.

Contenders: the prompt-only baseline (strong system prompt + few-shot from train) and the
tuned model when an adapter is given (--adapter: the `qlora_adapter` asset's JSON); without
one, the second contender is the base model prompted as in training (the records' own
system prompt), which exercises the same code path with different prompts.

    .venv/bin/python bench/eval_overhead.py [--n 200] [--batch-size 16] [--adapter adapter.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines import base_models, generation  # noqa: E402
from pipelines import promptfoo as pf  # noqa: E402
from pipelines.config import REPO_ROOT, Layout, default_home, load_base_models, load_settings  # noqa: E402
from pipelines.config import default_base_models_file, default_settings_file  # noqa: E402


def _usable(task: pf.TaskSpec, lines: list[str]) -> list[dict]:
    """Records with a user turn and a gold JSON answer (the raw demo file also holds the
    deliberately broken rows the data stage quarantines: skip those here)."""
    out = []
    for line in lines:
        try:
            record = json.loads(line)
            pf.gold_answer(record, Path("bench"), task)
        except (ValueError, TypeError, AttributeError, KeyError):
            continue
        if isinstance(record.get("messages"), list) and pf._turn(record, "user"):
            out.append(record)
    return out


def _records(task: pf.TaskSpec, n: int, layout: Layout) -> tuple[list[dict], list[dict]]:
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


def _suite(task: pf.TaskSpec, cases: list[dict], train: list[dict], contender: str, k: int, tmp: Path) -> pf.Suite:
    path = tmp / "cases.jsonl"
    path.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases), encoding="utf-8")
    train_path = tmp / "train.jsonl"
    train_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in train), encoding="utf-8")
    return pf.task_suite(task, path, contender, train_path, few_shot_k=k if contender == "baseline" else 0)


def _direct(model: generation.ModelSpec, suite: pf.Suite, batch_size: int) -> float:
    started = time.perf_counter()
    loaded = generation.load(model)
    generation.generate(loaded, [c["messages"] for c in suite.cases], suite.max_new_tokens, batch_size)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--adapter", type=Path, help="JSON of the qlora_adapter asset's value")
    args = parser.parse_args()

    settings = load_settings(default_settings_file())
    batch_size = args.batch_size or settings.eval.batch_size
    layout = Layout(default_home())
    spec = load_base_models(default_base_models_file())[0]
    base_dir = base_models.materialize(spec, layout.model_cache_dir(spec.slug))
    task = pf.load_task(REPO_ROOT / settings.eval.task_file)
    cases, train = _records(task, args.n, layout)
    base = generation.ModelSpec(base_dir=str(base_dir), chat_template=spec.chat_template)
    if args.adapter:
        second = ("tuned", generation.ModelSpec.tuned(json.loads(args.adapter.read_text())))
    else:
        second = ("tuned", base)
        print("no --adapter: the second contender is the BASE model prompted as in training")
    runner = pf.PromptfooRunner(timeout_s=settings.eval.timeout_s)
    totals = {"direct": 0.0, "promptfoo": 0.0}
    with tempfile.TemporaryDirectory(prefix="tunegate-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for contender, model in (("baseline", base), second):
            work = tmp / contender
            work.mkdir()
            suite = _suite(task, cases, train, contender, settings.eval.few_shot_k, work)
            direct = _direct(model, suite, batch_size)
            started = time.perf_counter()
            card = pf.evaluate(work / "run", suite, contender, model, runner, batch_size,
                               settings.eval.max_concurrency)  # fmt: skip
            through = time.perf_counter() - started
            totals["direct"] += direct
            totals["promptfoo"] += through
            print(
                f"{contender:9s} n={len(suite.cases)} direct {direct:7.1f}s  "
                f"promptfoo {through:7.1f}s  ratio {through / direct:.2f}x  "
                f"(pass rate {card['pass_rate']:.1%})"
            )
    ratio = totals["promptfoo"] / totals["direct"]
    print(
        f"total     {args.n} cases x 2 contenders: direct {totals['direct']:.1f}s, "
        f"promptfoo {totals['promptfoo']:.1f}s, ratio {ratio:.2f}x (goal <= 1.30x) "
        f"batch {batch_size}"
    )


if __name__ == "__main__":
    main()
