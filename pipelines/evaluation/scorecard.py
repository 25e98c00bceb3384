"""Score cards: one contender on one suite, parsed from promptfoo's results, cached.

A card holds the per-case outcomes (pass/fail, the output, each check's pass and score,
tokens in and out, latency), the pass rate with a 95 % Wilson interval, the task's own
figures (``task_metrics``: field partial credit, per-label accuracy, similarity), the
suite's fingerprint and the contender's identity (artefact content hash + prompt recipe). Cards are cached under
(artefact identity, recipe, suite fingerprint, decoding settings): re-running the chain
never scores an unchanged contender twice, which is what keeps re-tunes cheap.

Batch size is not part of the key: left padding can move a float in the last place, and
greedy decoding then very rarely picks another token. A changed batch size reuses cards."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.common import stats
from pipelines.common.hashing import sha256_json
from pipelines.evaluation import recipes, task_metrics
from pipelines.evaluation.runner import PromptfooError, PromptfooRunner, view_command, write_run
from pipelines.evaluation.suite import Suite
from pipelines.common.files import atomic_write_json
from pipelines.models.loading import ModelSpec


@dataclass(frozen=True)
class Contender:
    """An artefact plus a prompt recipe (None: the suite's own plain user turn)."""

    name: str
    artefact: dict[str, Any]  # pipelines.models.artefacts.identity(...)
    recipe: recipes.Recipe | None = None

    def key(self, suite: Suite) -> str:
        return sha256_json(
            {
                "artefact": self.artefact["id"],
                "recipe": self.recipe.to_dict() if self.recipe else "plain",
                "suite": suite.fingerprint,
                "decoding": {"greedy": True, "max_new_tokens": suite.max_new_tokens},
            }
        )


def parse_results(results_path: Path, suite: Suite, contenders: list[str]) -> dict[str, dict[str, Any]]:
    """promptfoo's results.json -> one card per contender (test ``i`` is contender
    ``i // n``, case ``i % n``, as ``write_run`` laid them out; ids are checked). A provider
    error in any case fails the run: a score with errors is no score."""
    doc = json.loads(results_path.read_text(encoding="utf-8"))
    entries = doc["results"]["results"]
    errors = [e for e in entries if e.get("failureReason") == 2 or not e.get("gradingResult")]
    if errors:
        raise PromptfooError(
            f"{results_path}: {len(errors)} of {len(entries)} cases errored; first error:\n"
            f"{str(errors[0].get('error'))[-3000:]}"
        )
    by_index = {int(e["testIdx"]): e for e in entries}
    n = len(suite.cases)
    if sorted(by_index) != list(range(n * len(contenders))):
        raise PromptfooError(
            f"{results_path}: expected results for {n * len(contenders)} tests "
            f"({len(contenders)} contenders x {n} cases), got test indexes {sorted(by_index)[:10]}..."
        )
    cards = {}
    for c_index, contender in enumerate(contenders):
        cases, metric_pass = [], defaultdict(list)
        for index, case in enumerate(suite.cases):
            entry = by_index[c_index * n + index]
            returned = (entry.get("vars") or {}).get("case") or {}
            if (returned.get("id"), returned.get("contender")) != (case["id"], contender):
                raise PromptfooError(
                    f"{results_path}: test {c_index * n + index} is {returned.get('contender')}/{returned.get('id')}, "
                    f"expected {contender}/{case['id']}"
                )
            response = entry.get("response") or {}
            meta = response.get("metadata") or {}
            usage = response.get("tokenUsage") or {}
            failed, checks, scores = [], {}, {}
            for component in (entry.get("gradingResult") or {}).get("componentResults") or []:
                assertion = component.get("assertion") or {}
                name = assertion.get("metric") or assertion.get("type") or "assertion"
                metric_pass[name].append(bool(component.get("pass")))
                checks[name] = bool(component.get("pass"))
                scores[name] = float(component.get("score") or 0.0)
                if not component.get("pass"):
                    failed.append(name)
            cases.append(
                {
                    "id": case["id"],
                    "passed": bool(entry.get("success")),
                    "output": response.get("output"),
                    "gold": case["gold"],
                    "latency_ms": float(meta.get("latency_ms", entry.get("latencyMs") or 0.0)),
                    "output_tokens": int(meta.get("output_tokens", usage.get("completion") or 0)),
                    "prompt_tokens": int(usage.get("prompt") or 0),
                    "failed_assertions": failed,
                    "checks": checks,  # each check's pass (json: per field: partial credit)
                    "scores": scores,  # each check's score (text: the similarity)
                }
            )
        cards[contender] = summarise(contender, suite, cases, {k: sum(v) / len(v) for k, v in metric_pass.items()})
        cards[contender]["results_path"] = str(results_path)
    return cards


def summarise(contender: str, suite: Suite, cases: list[dict], assertion_pass_rates: dict[str, float]) -> dict[str, Any]:
    """The card's numbers from its per-case outcomes."""
    n = len(cases)
    passed = sum(c["passed"] for c in cases)
    low, high = stats.wilson_interval(passed, n)
    return {
        "contender": contender,
        "suite": suite.name,
        "suite_fingerprint": suite.fingerprint,
        "n": n,
        "passed": passed,
        "pass_rate": passed / n,
        "ci_low": low,
        "ci_high": high,
        "target_pass_rate": suite.target_pass_rate,
        "assertion_pass_rates": assertion_pass_rates,
        "mean_latency_ms": sum(c["latency_ms"] for c in cases) / n,
        "mean_output_tokens": sum(c["output_tokens"] for c in cases) / n,
        "mean_prompt_tokens": sum(c.get("prompt_tokens", 0) for c in cases) / n,
        "task_metrics": task_metrics.summarise(suite.scoring, cases),
        "cases": cases,
    }


def score(
    run_dir: Path,
    suite: Suite,
    contenders: list[Contender],
    model: ModelSpec,
    runner: PromptfooRunner,
    cache_dir: Path,
    train: list[dict] | None = None,
    batch_size: int = 16,
    max_concurrency: int = 4,
    log=print,
) -> dict[str, dict[str, Any]]:
    """Score every contender (all on ``model``) on ``suite``: cached cards are reused, the
    rest are scored together in ONE promptfoo run (one model load)."""
    cards: dict[str, dict[str, Any]] = {}
    todo: list[Contender] = []
    for contender in contenders:
        cached = cache_dir / f"{contender.key(suite)}.json"
        if cached.is_file():
            card = json.loads(cached.read_text(encoding="utf-8"))
            cards[contender.name] = {**card, "contender": contender.name, "cache_hit": True}
            log(f"{contender.name}: unchanged artefact, recipe and suite: reusing {cached}")
        else:
            todo.append(contender)
    if not todo:
        return cards
    conversations, shown = {}, {}
    for contender in todo:
        recipe = contender.recipe or recipes.Recipe("as_trained")  # plain: the case's own turns, never the answer
        conversations[contender.name], shown[contender.name] = recipes.build(recipe, suite.records, train)
    config_path = write_run(run_dir, suite, conversations, model, batch_size, runner.timeout_s, max_concurrency)
    log(f"promptfoo: {', '.join(conversations)} x {len(suite.cases)} cases -> {run_dir}")
    results_path = run_dir / "results.json"
    seconds = runner.run(config_path, results_path)
    parsed = parse_results(results_path, suite, list(conversations))
    for contender in todo:
        card = parsed[contender.name]
        for case, ids in zip(card["cases"], shown[contender.name]):
            if ids:
                case["examples"] = ids
        card.update(
            {
                "artefact": contender.artefact,
                "recipe": contender.recipe.to_dict() if contender.recipe else None,
                "recipe_text": contender.recipe.describe() if contender.recipe else "the item's own user turn",
                "run_seconds": seconds,
                "run_contenders": len(todo),
                "config_path": str(config_path),
                "promptfoo_dir": str(run_dir / "promptfoo"),
                "view_command": view_command(str(run_dir / "promptfoo")),
                "model": model.to_dict(),
            }
        )
        atomic_write_json(cache_dir / f"{contender.key(suite)}.json", card)
        cards[contender.name] = {**card, "cache_hit": False}
    return cards


# --------------------------------------------------------------------------- markdown
def worst_failures_md(card: dict[str, Any], limit: int = 10) -> str:
    """Failing cases, most failed checks first (invalid JSON fails every check)."""
    from pipelines.common.tables import markdown_table

    failing = sorted((c for c in card["cases"] if not c["passed"]), key=lambda c: (-len(c.get("failed_assertions") or []), c["id"]))
    if not failing:
        return "_no failing cases_"
    rows = [
        (c["id"], ", ".join(c.get("failed_assertions") or []), c["output"], c["gold"] if isinstance(c["gold"], str) else json.dumps(c["gold"]))
        for c in failing[:limit]
    ]
    table = markdown_table(["id", "failed checks", "output", "gold"], rows)
    more = f"\n\n_{len(failing) - limit} more failing cases in the results file_" if len(failing) > limit else ""
    return table + more


def assertion_table_md(card: dict[str, Any]) -> str:
    from pipelines.common.tables import markdown_table

    return markdown_table(["check", "pass rate"], [(k, f"{v:.1%}") for k, v in sorted(card["assertion_pass_rates"].items())])
