"""Score cards: one contender on one suite, parsed from promptfoo's results, cached.

A card holds the per-case outcomes (pass/fail, the output, each check's pass and score,
tokens in and out, latency), the pass rate with a 95 % Wilson interval, the task's own
figures (``task_metrics``: field partial credit, per-label accuracy, similarity), the
suite's fingerprint and the contender's identity (artefact content hash + prompt recipe). Cards are cached under
(artefact identity, recipe, suite fingerprint, decoding settings): re-running the chain
never scores an unchanged contender twice, which is what keeps re-tunes cheap.

Batch size is not part of the key: left padding can move a float in the last place, and
greedy decoding then very rarely picks another token. A changed batch size reuses cards.

The records: ``ScoreCard`` (one contender on one suite), ``CaseResult`` (one case's outcome
on it) and ``CardSummary`` (a card's numbers without the cases, kept in the gate record and
the registry entry). A cached card file that does not parse as a ``ScoreCard`` (damaged, or
written by a version that lacked a field) is a cache miss: the contender is scored again."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pipelines.common import stats
from pipelines.common.files import atomic_write_json
from pipelines.common.hashing import sha256_json
from pipelines.common.metadata import Markdown, Metadata, PathValue
from pipelines.common.typed_records import RecordError, from_fields
from pipelines.evaluation import recipes, task_metrics
from pipelines.evaluation.runner import PromptfooError, PromptfooRunner, view_command, write_run
from pipelines.evaluation.suite import Suite
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


@dataclass(frozen=True)
class CaseResult:
    """One held-out case as one contender answered it."""

    id: str
    passed: bool  # the task's pass rule (what the gate's paired tests count)
    output: str | None
    gold: Any  # the gold answer: a text, a label, or a JSON object
    latency_ms: float
    output_tokens: int
    prompt_tokens: int = 0
    failed_assertions: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)  # each check's pass (json: per field: partial credit)
    scores: dict[str, float] = field(default_factory=dict)  # each check's score (text: the similarity)
    examples: list[str] | None = None  # ids of the train examples the prompt showed (few-shot rungs)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.examples is None:
            del out["examples"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseResult:
        return from_fields(cls, data)


@dataclass(frozen=True)
class CardSummary:
    """The numbers of a card worth keeping in a decision (no per-case rows)."""

    contender: str
    n: int
    passed: int
    pass_rate: float
    ci_low: float | None = None
    ci_high: float | None = None
    mean_latency_ms: float | None = None
    mean_output_tokens: float | None = None
    mean_prompt_tokens: float | None = None
    suite_fingerprint: str | None = None
    artefact: dict[str, Any] | None = None
    recipe: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CardSummary:
        return from_fields(cls, data)


CARD_NOT_CACHED = ("cache_hit", "mlflow_run_id")  # this materialisation's, not the card's


@dataclass(frozen=True)
class ScoreCard:
    """One contender on one suite: its per-case outcomes, the pass rate with a 95 % Wilson
    interval, the task's own figures and, once ``score`` ran it, what was scored and how."""

    contender: str
    suite: str
    suite_fingerprint: str | None
    n: int
    passed: int
    pass_rate: float
    ci_low: float
    ci_high: float
    target_pass_rate: float | None
    assertion_pass_rates: dict[str, float]
    mean_latency_ms: float
    mean_output_tokens: float
    cases: list[CaseResult]
    mean_prompt_tokens: float = 0.0  # 0: a card cached before prompt tokens were counted
    task_metrics: dict[str, Any] | None = None  # task_metrics.summarise (None: cached before output types)
    results_path: str = ""  # promptfoo's results.json the card was parsed from
    # the scoring run (``score``)
    artefact: dict[str, Any] | None = None  # pipelines.models.artefacts.identity(...)
    recipe: dict[str, Any] | None = None  # Recipe.to_dict(); None: the suite's own plain user turn
    recipe_text: str = ""
    run_seconds: float = 0.0
    run_contenders: int = 0
    config_path: str = ""
    promptfoo_dir: str = ""
    view_command: str = ""
    model: dict[str, Any] | None = None  # ModelSpec.to_dict()
    # this materialisation, never cached (CARD_NOT_CACHED)
    cache_hit: bool = False
    mlflow_run_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["cases"] = [case.to_dict() for case in self.cases]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreCard:
        """A card from its ``to_dict()``; RecordError when it does not parse."""

        def cases(rows: Any) -> list[CaseResult]:
            if not isinstance(rows, list):
                raise RecordError(f"expected a list of cases, got {type(rows).__name__}")
            return [CaseResult.from_dict(row) for row in rows]

        return from_fields(cls, data, cases=cases)

    def summary(self) -> CardSummary:
        return CardSummary(
            self.contender,
            self.n,
            self.passed,
            self.pass_rate,
            self.ci_low,
            self.ci_high,
            self.mean_latency_ms,
            self.mean_output_tokens,
            self.mean_prompt_tokens,
            self.suite_fingerprint,
            self.artefact,
            self.recipe,
        )

    def metadata(self) -> Metadata:
        """The score card as the UI shows it."""
        metadata: Metadata = {
            "pass_rate": float(round(self.pass_rate, 4)),
            "ci_95": f"[{self.ci_low:.3f}, {self.ci_high:.3f}]",
            "passed": int(self.passed),
            "n": int(self.n),
            "checks": Markdown(assertion_table_md(self)),
            "worst_failures": Markdown(worst_failures_md(self)),
            "mean_prompt_tokens": float(round(self.mean_prompt_tokens, 1)),
            "mean_output_tokens": float(round(self.mean_output_tokens, 2)),
            "mean_latency_ms": float(round(self.mean_latency_ms, 1)),
            "prompt": self.recipe_text,
            "artefact_id": self.artefact["id"],
            "suite_fingerprint": self.suite_fingerprint,
            "cache_hit": self.cache_hit,
            "promptfoo_seconds": float(round(self.run_seconds, 1)),
            "results_path": PathValue(self.results_path),
            "mlflow_run_id": self.mlflow_run_id,
            "open_in_promptfoo": Markdown(f"```\n{self.view_command}\n```"),
        }
        metrics = self.task_metrics
        if metrics:
            metadata["task_metrics"] = Markdown(task_metrics.summary_md(metrics))
            if metrics["type"] == "label":
                metadata["per_label_accuracy"] = Markdown(task_metrics.per_label_md(metrics))
                metadata["confusions"] = Markdown(task_metrics.confusions_md(metrics))
        if self.target_pass_rate is not None:
            metadata["target_pass_rate"] = float(self.target_pass_rate)
        return metadata


def parse_results(results_path: Path, suite: Suite, contenders: list[str]) -> dict[str, ScoreCard]:
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
                CaseResult(
                    id=case["id"],
                    passed=bool(entry.get("success")),
                    output=response.get("output"),
                    gold=case["gold"],
                    latency_ms=float(meta.get("latency_ms", entry.get("latencyMs") or 0.0)),
                    output_tokens=int(meta.get("output_tokens", usage.get("completion") or 0)),
                    prompt_tokens=int(usage.get("prompt") or 0),
                    failed_assertions=failed,
                    checks=checks,
                    scores=scores,
                )
            )
        rates = {k: sum(v) / len(v) for k, v in metric_pass.items()}
        cards[contender] = summarise(contender, suite, cases, rates, results_path=str(results_path))
    return cards


def summarise(
    contender: str,
    suite: Suite,
    cases: list[CaseResult],
    assertion_pass_rates: dict[str, float],
    results_path: str = "",
) -> ScoreCard:
    """The card's numbers from its per-case outcomes."""
    n = len(cases)
    passed = sum(c.passed for c in cases)
    low, high = stats.wilson_interval(passed, n)
    return ScoreCard(
        contender=contender,
        suite=suite.name,
        suite_fingerprint=suite.fingerprint,
        n=n,
        passed=passed,
        pass_rate=passed / n,
        ci_low=low,
        ci_high=high,
        target_pass_rate=suite.target_pass_rate,
        assertion_pass_rates=assertion_pass_rates,
        mean_latency_ms=sum(c.latency_ms for c in cases) / n,
        mean_output_tokens=sum(c.output_tokens for c in cases) / n,
        mean_prompt_tokens=sum(c.prompt_tokens for c in cases) / n,
        task_metrics=task_metrics.summarise(suite.scoring, cases),
        cases=cases,
        results_path=results_path,
    )


def read_cached(path: Path, log=print) -> ScoreCard | None:
    """The card cached at ``path``; None when there is none, or when it does not parse
    (damaged, or written by a version that lacked a field): a cache miss, scored again."""
    if not path.is_file():
        return None
    try:
        return ScoreCard.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:  # json.JSONDecodeError and RecordError are ValueErrors
        log(f"{path}: not a usable score card, scoring again ({exc})")
        return None


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
) -> dict[str, ScoreCard]:
    """Score every contender (all on ``model``) on ``suite``: cached cards are reused, the
    rest are scored together in ONE promptfoo run (one model load)."""
    cards: dict[str, ScoreCard] = {}
    todo: list[Contender] = []
    for contender in contenders:
        cached = cache_dir / f"{contender.key(suite)}.json"
        card = read_cached(cached, log)
        if card is not None:
            cards[contender.name] = replace(card, contender=contender.name, cache_hit=True)
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
        card = replace(
            card,
            cases=[
                replace(case, examples=ids) if ids else case for case, ids in zip(card.cases, shown[contender.name])
            ],
            artefact=contender.artefact,
            recipe=contender.recipe.to_dict() if contender.recipe else None,
            recipe_text=contender.recipe.describe() if contender.recipe else "the item's own user turn",
            run_seconds=seconds,
            run_contenders=len(todo),
            config_path=str(config_path),
            promptfoo_dir=str(run_dir / "promptfoo"),
            view_command=view_command(str(run_dir / "promptfoo")),
            model=model.to_dict(),
        )
        cached = {k: v for k, v in card.to_dict().items() if k not in CARD_NOT_CACHED}
        atomic_write_json(cache_dir / f"{contender.key(suite)}.json", cached)
        cards[contender.name] = card
    return cards


# --------------------------------------------------------------------------- markdown
def worst_failures_md(card: ScoreCard, limit: int = 10) -> str:
    """Failing cases, most failed checks first (invalid JSON fails every check)."""
    from pipelines.common.tables import markdown_table

    failing = sorted((c for c in card.cases if not c.passed), key=lambda c: (-len(c.failed_assertions), c.id))
    if not failing:
        return "_no failing cases_"
    rows = [
        (c.id, ", ".join(c.failed_assertions), c.output, c.gold if isinstance(c.gold, str) else json.dumps(c.gold))
        for c in failing[:limit]
    ]
    table = markdown_table(["id", "failed checks", "output", "gold"], rows)
    more = f"\n\n_{len(failing) - limit} more failing cases in the results file_" if len(failing) > limit else ""
    return table + more


def assertion_table_md(card: ScoreCard) -> str:
    from pipelines.common.tables import markdown_table

    return markdown_table(
        ["check", "pass rate"], [(k, f"{v:.1%}") for k, v in sorted(card.assertion_pass_rates.items())]
    )
