"""The decision: pure functions over score cards, no I/O. Every rule yields a check row
(value, threshold, pass/fail, and what to do about a failure).

The rules, all of which must hold to promote:
1. margin: tuned pass rate - the strongest prompt-only rung's >= ``gate.min_margin``.
   The strongest rung is chosen on the same held-out set it is compared on, which can only
   flatter the prompt (a lucky rung stays lucky), never the tune: a conservative baseline.
2. significance: one-sided exact McNemar on the paired cases (tuned vs that rung) < alpha.
3. general skills: the upper one-sided (1 - alpha) bound of the paired drop from the model
   that serves today without tuning (the fp32 base) to the shipped artefact is at most
   ``gate.max_general_regression``: a non-inferiority test, so "no evidence of a drop" is
   not enough, the data must rule a large drop out. The drop is decomposed into
   quantisation (fp32 base -> the base as 4-bit training saw it) and the adapter's own
   effect (that base -> the merged tuned model), each with its paired counts.
4. champion: the current champion, re-scored on the same suite, must be beaten by the same
   paired rule as the baseline (margin and McNemar). A champion that is the candidate
   itself (same content hash) passes; one whose files are gone cannot be re-scored and is
   named in the report, and the check passes: it can no longer serve, so it defends nothing.

Cards are comparable only with equal suite fingerprints: a missing or different
fingerprint is an error naming both values, never a skipped check.

The records: ``Check`` (one rule's row), ``Pairing`` (two cards' paired outcomes),
``Forgetting`` (the general-skills drop, decomposed), ``ChampionInput`` (the champion as
the gate sees it: the ``champion_scores`` asset's value) and ``Decision`` (the verdict)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines.common import stats
from pipelines.common.metadata import Metadata
from pipelines.config.gate import GateSettings
from pipelines.evaluation.scorecard import ScoreCard

if TYPE_CHECKING:  # the registry reads decisions: a runtime import would be circular
    from pipelines.gate.registry.entries import RegistryEntry


class IncomparableCards(ValueError):
    """Two score cards were not scored on the same suite (or say nothing about it)."""


@dataclass(frozen=True)
class Check:
    """One rule's row in the report: its value against its threshold, and what to do when it fails."""

    name: str
    passed: bool
    value: float | None
    threshold: float | None
    detail: str
    action: str = ""  # what a user can do when it fails


@dataclass(frozen=True)
class Pairing:
    """Per-case outcomes of two cards on the same cases, paired by id."""

    first: str
    second: str
    n: int
    both: int
    only_first: int
    only_second: int
    neither: int

    @property
    def difference(self) -> float:
        """first's pass rate - second's."""
        return (self.only_first - self.only_second) / self.n


def require_same_suite(cards: dict[str, ScoreCard]) -> str:
    """The suite fingerprint every card shares; an error naming the values otherwise."""
    prints = {name: card.suite_fingerprint for name, card in cards.items()}
    missing = [name for name, fp in prints.items() if not fp]
    if missing:
        raise IncomparableCards(f"score card(s) {missing} carry no suite fingerprint: re-score them")
    if len(set(prints.values())) > 1:
        shown = ", ".join(f"{name}={fp[:16]}" for name, fp in prints.items())
        raise IncomparableCards(f"score cards come from different suites ({shown}): re-score them on the same suite")
    return next(iter(prints.values()))


def pair(first: ScoreCard, second: ScoreCard) -> Pairing:
    """Pair two cards' cases by id: the paired tests need the same cases on both sides."""
    require_same_suite({first.contender: first, second.contender: second})
    a, b = _outcomes(first), _outcomes(second)
    if a.keys() != b.keys():
        only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        raise IncomparableCards(
            f"cannot pair {first.contender!r} with {second.contender!r}: case ids differ "
            f"({len(only_a)} only in the first, e.g. {only_a[:3]}; {len(only_b)} only in the second, e.g. {only_b[:3]})"
        )
    counts = {(True, True): 0, (True, False): 0, (False, True): 0, (False, False): 0}
    for case_id, ok in a.items():
        counts[(ok, b[case_id])] += 1
    return Pairing(
        first.contender,
        second.contender,
        len(a),
        counts[(True, True)],
        counts[(True, False)],
        counts[(False, True)],
        counts[(False, False)],
    )


def _outcomes(card: ScoreCard) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for index, case in enumerate(card.cases):
        case_id = case.id
        if case_id is None:
            raise IncomparableCards(f"score card {card.contender!r}: case #{index} has no id")
        if str(case_id) in out:
            raise IncomparableCards(f"score card {card.contender!r}: duplicate case id {case_id!r}")
        out[str(case_id)] = bool(case.passed)
    if not out:
        raise IncomparableCards(f"score card {card.contender!r} has no cases to compare")
    return out


def strongest_rung(rungs: dict[str, ScoreCard]) -> str:
    """The prompt-only rung to beat: highest pass rate; a tie goes to the cheaper prompt
    (fewer prompt tokens per call), then to the name, so the choice is deterministic."""
    if not rungs:
        raise ValueError("the prompt ladder has no rungs: configure eval.ladder in tunegate.yaml")
    require_same_suite(rungs)
    return min(rungs, key=lambda n: (-rungs[n].pass_rate, rungs[n].mean_prompt_tokens, n))


def meets_target(rungs: dict[str, ScoreCard]) -> str | None:
    """If any prompt-only rung already reaches the task's ``target_pass_rate``, training is
    not worth paying for: the reason to skip it, else None."""
    for name in sorted(rungs, key=lambda n: -rungs[n].pass_rate):
        card = rungs[name]
        target = card.target_pass_rate
        if target is not None and card.pass_rate >= target:
            return (
                f"the prompt-only rung {name!r} already passes {card.pass_rate:.1%} of held-out cases "
                f"(target {target:.1%}): no fine-tune needed"
            )
    return None


@dataclass(frozen=True)
class Forgetting:
    """General skills: the model serving today -> base as trained -> the shipped artefact."""

    total: Pairing  # reference vs candidate
    quantisation: Pairing | None  # reference vs base as trained (None: no quantisation)
    adapter: Pairing  # base as trained vs candidate
    drop_upper: float  # one-sided upper bound of total's drop
    confidence: float

    def recommendation(self, allowed: float) -> str:
        q = self.quantisation.difference if self.quantisation else 0.0
        a = self.adapter.difference
        if self.drop_upper <= allowed:
            return ""
        if self.quantisation and q >= max(a, allowed / 2):
            return (
                f"the 4-bit base alone loses {q * 100:.1f} pts of general skills on this model: train a plain "
                "LoRA instead (base_models.yaml `axolotl_overrides: {adapter: lora, load_in_4bit: false}`), "
                "or use a larger base that quantises better"
            )
        return (
            f"the adapter itself costs {a * 100:.1f} pts of general skills: adapt fewer layers "
            "(`peft_layers_to_transform`), train less (epochs, learning rate), or mix general examples into training"
        )


def forgetting(general: dict[str, ScoreCard | None], confidence: float) -> Forgetting:
    """``general`` holds the cards ``reference`` (fp32 base), ``base_as_trained`` (None or
    absent without quantisation) and ``candidate``."""
    cards = {k: v for k, v in general.items() if v is not None}
    require_same_suite(cards)
    total = pair(cards["reference"], cards["candidate"])
    quant = pair(cards["reference"], cards["base_as_trained"]) if "base_as_trained" in cards else None
    adapter = pair(cards.get("base_as_trained", cards["reference"]), cards["candidate"])
    upper = stats.drop_upper_bound(total.both, total.only_first, total.only_second, total.neither, confidence)
    return Forgetting(total, quant, adapter, upper, confidence)


@dataclass(frozen=True)
class ChampionInput:
    """What the gate knows about the current champion: ``status`` is none (no champion),
    missing (its files or base model are gone: ``why``), same (the candidate is the
    champion) or scored (``card``: re-scored on this suite). ``entry``: its registry entry."""

    status: str
    entry: RegistryEntry | None = None
    card: ScoreCard | None = None
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "entry": self.entry.to_dict() if self.entry else None,
            "card": self.card.to_dict() if self.card else None,
            "why": self.why,
        }

    def metadata(self) -> Metadata:
        """The champion as the UI shows it; a re-scored champion's card too."""
        metadata: Metadata = {
            "status": self.status,
            "champion": self.entry.partition if self.entry else "none",
            "champion_version": str(self.entry.version) if self.entry else "none",
            "why": self.why,
        }
        if self.card:
            metadata.update(self.card.metadata())
        return metadata


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    checks: list[Check]
    baseline_rung: str
    versus_baseline: Pairing
    p_value: float
    margin: float
    forgetting: Forgetting
    champion: ChampionInput
    versus_champion: Pairing | None = None
    champion_p_value: float | None = None
    actions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["champion"] = self.champion.to_dict()
        out["general_drop"] = self.forgetting.total.difference
        out["general_drop_upper"] = self.forgetting.drop_upper
        return out


def _paired_rule(
    name: str, tuned: ScoreCard, other: ScoreCard, settings: GateSettings, other_label: str
) -> tuple[list[Check], Pairing, float, float]:
    pairing = pair(tuned, other)
    margin = tuned.pass_rate - other.pass_rate
    p = stats.mcnemar_one_sided(pairing.only_first, pairing.only_second)
    checks = [
        Check(
            f"{name}_margin",
            margin >= settings.min_margin - 1e-12,
            margin,
            settings.min_margin,
            f"tuned {tuned.pass_rate:.1%} - {other_label} {other.pass_rate:.1%} = {_pts(margin)} "
            f"(need >= {_pts(settings.min_margin)})",
            f"the tune does not beat {other_label} by enough: improve the training data or keep {other_label}",
        ),
        Check(
            f"{name}_significance",
            p < settings.alpha,
            p,
            settings.alpha,
            f"one-sided exact McNemar on {pairing.n} paired cases: {pairing.only_first} only tuned right, "
            f"{pairing.only_second} only {other_label} right, p = {p:.4g} (need < {settings.alpha:g})",
            "the gain could be chance: add held-out cases (more data) or get a larger gain",
        ),
    ]
    return checks, pairing, margin, p


def decide(
    rungs: dict[str, ScoreCard],
    tuned: ScoreCard,
    general: dict[str, ScoreCard | None],
    champion: ChampionInput,
    settings: GateSettings,
) -> Decision:
    """Apply every rule; promote only when all of them pass."""
    baseline_rung = strongest_rung(rungs)
    baseline = rungs[baseline_rung]
    task_cards = {**rungs, "tuned": tuned, **({"champion": champion.card} if champion.card else {})}
    require_same_suite(task_cards)
    checks, versus_baseline, margin, p_value = _paired_rule(
        "baseline", tuned, baseline, settings, f"the best prompt ({baseline_rung})"
    )

    confidence = 1 - settings.alpha
    forgot = forgetting(general, confidence)
    allowed = settings.max_general_regression
    total = forgot.total
    checks.append(
        Check(
            "general_skills",
            forgot.drop_upper <= allowed + 1e-12,
            forgot.drop_upper,
            allowed,
            f"general skills {general['reference'].pass_rate:.1%} -> {general['candidate'].pass_rate:.1%} "
            f"on {total.n} paired items ({total.only_first} lost, {total.only_second} gained): drop "
            f"{_pts(total.difference)}, upper {confidence:.0%} bound {_pts(forgot.drop_upper)} (allowed <= {_pts(allowed)})",
            forgot.recommendation(allowed),
        )
    )

    versus_champion, champion_p = None, None
    if champion.status == "scored":
        champ_checks, versus_champion, _, champion_p = _paired_rule(
            "champion", tuned, champion.card, settings, "the champion"
        )
        checks += champ_checks
    else:
        detail = {
            "none": "no model promoted for this task yet",
            "same": "the candidate IS the champion (same content hash): nothing to beat",
            "missing": f"the champion cannot be re-scored ({champion.why}): it can no longer serve, so it defends nothing",
        }[champion.status]
        checks.append(Check("champion", True, None, None, detail))

    failed = [c for c in checks if not c.passed]
    actions = [c.action for c in failed if c.action]
    if failed:
        reason = "Not promoted: " + "; ".join(f"{c.name} fails ({c.detail})" for c in failed) + "."
    else:
        reason = (
            f"Promoted: the tuned model passes {tuned.pass_rate:.1%} vs the best prompt's "
            f"{baseline.pass_rate:.1%} ({baseline_rung}; {_pts(margin)}, McNemar p = {p_value:.3g}) and keeps "
            f"its general skills (drop at most {_pts(forgot.drop_upper)} at {confidence:.0%})"
            + (" and beats the champion" if versus_champion else "")
            + "."
        )
    return Decision(
        not failed,
        reason,
        checks,
        baseline_rung,
        versus_baseline,
        p_value,
        margin,
        forgot,
        champion,
        versus_champion,
        champion_p,
        actions,
    )


def _pts(x: float) -> str:
    return f"{x * 100:+.1f} pts"
