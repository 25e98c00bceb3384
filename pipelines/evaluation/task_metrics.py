"""What a score card says beyond pass/fail, per output type, from its per-case outcomes.

The per-case pass rule (``TaskSpec.pass_rule``) is what the gate's paired test counts; these
figures explain a card without changing it:

- json: partial credit. Per field, the share of cases whose field equals the gold (the
  field's promptfoo check); over all (case, field) pairs the field accuracy and a micro F1
  where a field counts as predicted when the answer parses and holds it non-null, and as
  expected when the gold holds it non-null. An extraction task with several fields is then
  not all-or-nothing: "3 of 4 fields right" shows up here.
- label: accuracy per gold label, the share of answers that are any label of the closed
  set, and the most frequent confusions (gold -> predicted, "(not a label)" for the rest).
- text: the similarity metric's mean and quartiles next to its pass threshold.

Nothing here re-scores an answer: correctness comes from promptfoo's checks; the label
mapping uses the same normalisation as the check (``task.normalise_label``)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from statistics import quantiles
from typing import TYPE_CHECKING, Any

from pipelines.common.tables import markdown_table
from pipelines.evaluation.task import normalise_label

if TYPE_CHECKING:
    from pipelines.evaluation.scorecard import CaseResult, ScoreCard

NOT_A_LABEL = "(not a label)"


def summarise(scoring: dict[str, Any] | None, cases: list[CaseResult]) -> dict[str, Any] | None:
    """The task metrics of one card's cases (None for a suite without a task output type)."""
    if not scoring or not cases:
        return None
    kind = scoring["type"]
    body = {"json": _json_fields, "label": _labels, "text": _text}[kind](scoring, cases)
    return {"type": kind, "pass_rule": scoring["pass_rule"], **body}


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def _json_fields(scoring: dict, cases: list[CaseResult]) -> dict[str, Any]:
    fields = scoring["fields"]
    correct = {f: 0 for f in fields}
    true_pos = predicted = expected = 0
    per_case = []
    for case in cases:
        try:
            answer = json.loads(case.output or "")
        except ValueError:
            answer = None
        answer = answer if isinstance(answer, dict) else {}
        right = 0
        for field in fields:
            ok = bool(case.checks.get(field))
            correct[field] += ok
            right += ok
            gold_has, answer_has = _present(case.gold.get(field)), _present(answer.get(field))
            expected += gold_has
            predicted += answer_has
            true_pos += ok and gold_has and answer_has
        per_case.append(right / len(fields))
    n = len(cases)
    precision = true_pos / predicted if predicted else 0.0
    recall = true_pos / expected if expected else 0.0
    return {
        "field_accuracy": sum(correct.values()) / (n * len(fields)),
        "per_field_accuracy": {f: correct[f] / n for f in fields},
        "field_precision": precision,
        "field_recall": recall,
        "field_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "cases_with_some_fields_right": sum(0 < s < 1 for s in per_case),
    }


def _labels(scoring: dict, cases: list[CaseResult]) -> dict[str, Any]:
    labels = scoring["labels"]
    by_key = {normalise_label(label): label for label in labels}
    per_label: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # gold -> [n, correct]
    confusions: Counter = Counter()
    valid = 0
    for case in cases:
        gold = by_key.get(normalise_label(case.gold), case.gold)
        predicted = by_key.get(normalise_label(case.output or ""), NOT_A_LABEL)
        valid += predicted != NOT_A_LABEL
        per_label[gold][0] += 1
        per_label[gold][1] += bool(case.passed)
        if not case.passed:
            confusions[(gold, predicted)] += 1
    accuracies = {label: c / n for label, (n, c) in per_label.items()}
    return {
        "n_labels": len(labels),
        "accuracy": sum(case.passed for case in cases) / len(cases),
        "macro_accuracy": sum(accuracies.values()) / len(accuracies),
        "valid_label_rate": valid / len(cases),
        "per_label": {label: {"n": n, "correct": c} for label, (n, c) in sorted(per_label.items())},
        "top_confusions": [[gold, predicted, count] for (gold, predicted), count in confusions.most_common(10)],
        "labels_unseen_in_train": scoring.get("labels_unseen_in_train") or [],
    }


def _text(scoring: dict, cases: list[CaseResult]) -> dict[str, Any]:
    metric = scoring["metric"]
    scores = [float(case.scores.get(metric, 0.0)) for case in cases]
    quartiles = quantiles(scores, n=4, method="inclusive") if len(scores) > 1 else scores * 3
    return {
        "metric": metric,
        "threshold": scoring["threshold"],
        "mean_score": sum(scores) / len(scores),
        "score_quartiles": quartiles,
    }


# --------------------------------------------------------------------------- markdown
def summary_md(metrics: dict[str, Any]) -> str:
    """The headline figures of a card's task metrics."""
    rows: list[tuple[str, str]] = [("pass rule (what the gate counts)", metrics["pass_rule"])]
    if metrics["type"] == "json":
        rows += [
            ("field accuracy (all cases x fields)", f"{metrics['field_accuracy']:.1%}"),
            (
                "field F1 (micro; precision / recall)",
                f"{metrics['field_f1']:.3f} ({metrics['field_precision']:.3f} / {metrics['field_recall']:.3f})",
            ),
            ("cases with some but not all fields right", str(metrics["cases_with_some_fields_right"])),
        ]
        rows += [(f"field `{f}` accuracy", f"{v:.1%}") for f, v in metrics["per_field_accuracy"].items()]
    elif metrics["type"] == "label":
        rows += [
            ("labels in the closed set", str(metrics["n_labels"])),
            ("accuracy", f"{metrics['accuracy']:.1%}"),
            ("macro accuracy (mean over gold labels)", f"{metrics['macro_accuracy']:.1%}"),
            ("answers that are a label of the set", f"{metrics['valid_label_rate']:.1%}"),
        ]
        if metrics["labels_unseen_in_train"]:
            rows.append(("held-out labels never seen in train", ", ".join(metrics["labels_unseen_in_train"])))
    else:
        q = metrics["score_quartiles"]
        rows += [
            (f"mean {metrics['metric']}", f"{metrics['mean_score']:.3f} (threshold {metrics['threshold']})"),
            ("quartiles", " / ".join(f"{v:.3f}" for v in q)),
        ]
    return markdown_table(["figure", "value"], rows)


def per_label_md(metrics: dict[str, Any], limit: int = 100) -> str:
    """Per-label accuracy, worst first (the labels a prompt or a tune struggles with)."""
    rows = sorted(metrics["per_label"].items(), key=lambda kv: (kv[1]["correct"] / kv[1]["n"], kv[0]))
    table = markdown_table(
        ["gold label", "cases", "correct", "accuracy"],
        [(label, v["n"], v["correct"], f"{v['correct'] / v['n']:.0%}") for label, v in rows[:limit]],
    )
    return table + (f"\n\n_{len(rows) - limit} more labels in the card_" if len(rows) > limit else "")


def confusions_md(metrics: dict[str, Any]) -> str:
    if not metrics["top_confusions"]:
        return "_no confusions_"
    return markdown_table(["gold", "answered", "cases"], metrics["top_confusions"])


def contenders_md(cards: dict[str, ScoreCard]) -> str | None:
    """One row per contender with its type's figures beyond pass/fail (the gate report):
    None when the cards carry no task metrics (cards cached before output types)."""
    rows = []
    for name, card in cards.items():
        m = card.task_metrics
        if not m:
            return None
        if m["type"] == "json":
            figures = [
                f"{m['field_accuracy']:.1%}",
                f"{m['field_f1']:.3f}",
                ", ".join(f"{f} {v:.0%}" for f, v in m["per_field_accuracy"].items()),
            ]
        elif m["type"] == "label":
            worst = min(m["per_label"].items(), key=lambda kv: (kv[1]["correct"] / kv[1]["n"], kv[0]))
            figures = [
                f"{m['macro_accuracy']:.1%}",
                f"{m['valid_label_rate']:.1%}",
                f"{worst[0]} {worst[1]['correct']}/{worst[1]['n']}",
            ]
        else:
            figures = [
                f"{m['mean_score']:.3f}",
                " / ".join(f"{v:.3f}" for v in m["score_quartiles"]),
                str(m["threshold"]),
            ]
        rows.append([name, f"{card.pass_rate:.1%}", *figures])
    kind = next(iter(cards.values())).task_metrics["type"]
    headers = {
        "json": ["field accuracy", "field F1", "per field"],
        "label": ["macro accuracy", "answers in the label set", "worst label"],
        "text": ["mean score", "quartiles", "threshold"],
    }[kind]
    return markdown_table(["contender", "pass rate", *headers], rows, max_cell=120)
