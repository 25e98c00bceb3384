"""Benchmark: what does the prompt ladder add to the demo's wall time?

Before the ladder, the baseline was ONE contender: the strong system prompt plus the static
few-shot examples. Now `prompt_ladder` scores every rung of `eval.ladder` in one promptfoo
run (one CLI start, one model load). Both are scored here exactly as the assets score them
(`pipelines.evaluation.scorecard.score`: write the run, promptfoo, parse the cards), on the
materialised held-out split and TRAIN pool, with an empty card cache each, back to back on
the same machine. Issue 11's bound: the ladder adds at most 60 s to `make demo`.

Run `make demo` (or `make data`) first so `.tunegate/data/{train,eval}.jsonl` exist.

    .venv/bin/python bench/ladder_cost.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.common.jsonl import read_jsonl  # noqa: E402
from pipelines.config.base_models import load_base_models
from pipelines.config.paths import REPO_ROOT, Layout, default_base_models_file, default_home, default_settings_file  # noqa: E402
from pipelines.config.settings import load_settings  # noqa: E402
from pipelines.evaluation import recipes  # noqa: E402
from pipelines.evaluation.runner import PromptfooRunner  # noqa: E402
from pipelines.evaluation.scorecard import Contender, score  # noqa: E402
from pipelines.evaluation.suite import task_suite  # noqa: E402
from pipelines.evaluation.task import load_task  # noqa: E402
from pipelines.models import artefacts, materialize
from pipelines.models.loading import ModelSpec  # noqa: E402


def main() -> None:
    settings = load_settings(default_settings_file())
    layout = Layout(default_home())
    if not (layout.train_file.is_file() and layout.eval_file.is_file()):
        raise SystemExit(f"no {layout.train_file} / {layout.eval_file}: run `make demo` or `make data` first")
    spec = load_base_models(default_base_models_file())[0]
    base_dir = materialize.materialize(spec, layout.model_cache_dir(spec.slug))
    task = load_task(REPO_ROOT / settings.eval.task_file)
    suite = task_suite(task, layout.eval_file)
    train = list(read_jsonl(layout.train_file))
    model = ModelSpec(base_dir=str(base_dir), chat_template=spec.chat_template)
    artefact = artefacts.identity(base_dir, spec.chat_template, {"dtype": "float32"})
    ladder = [Contender(r.name, artefact, recipes.for_task(r.recipe, task, r.k)) for r in settings.eval.ladder]
    static = [c for c in ladder if c.recipe.kind == "static_few_shot"][:1]
    if not static:
        raise SystemExit("eval.ladder has no static_few_shot rung: nothing is the old baseline")
    runner = PromptfooRunner(timeout_s=settings.eval.timeout_s)

    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="tunegate-ladder-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for name, contenders in (("old baseline (static few-shot only)", static), ("ladder (all rungs)", ladder)):
            started = time.perf_counter()
            cards = score(
                tmp / name.split()[0],
                suite,
                contenders,
                model,
                runner,
                tmp / f"cards-{len(contenders)}",
                train=train,
                batch_size=settings.eval.batch_size,
                max_concurrency=settings.eval.max_concurrency,
                log=lambda _: None,
            )
            seconds[name] = time.perf_counter() - started
            rates = ", ".join(
                f"{c}: {card.passed}/{card.n}, {card.mean_latency_ms:.0f} ms/call" for c, card in cards.items()
            )
            print(f"{name}: {seconds[name]:.1f} s  ({rates})", flush=True)
    old, new = seconds.values()
    print(f"\n{len(suite.cases)} held-out cases, batch {settings.eval.batch_size}")
    print(f"ladder / old baseline = {new / old:.2f}x; added wall time {new - old:+.1f} s (bound: +60 s)")


if __name__ == "__main__":
    main()
