"""Statistics the promotion gate decides on: pass-rate intervals, the paired McNemar test
and a confidence bound on a paired drop in pass rate.

Plain functions over counts, no Dagster. The binomial work is delegated to scipy
(``scipy.stats.binomtest``) rather than re-derived here, so the numbers come from a
maintained, tested implementation."""

from __future__ import annotations

import math
import operator

from scipy.stats import binomtest


def wilson_interval(passed: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Wilson score interval for a pass rate ``passed / n``.

    Why Wilson and not the normal approximation: eval sets here are small (tens of
    cases) and pass rates often sit near 0 or 1, where p +/- z*sqrt(p(1-p)/n) collapses
    to a zero-width interval or leaves [0, 1]. Wilson stays inside [0, 1], keeps a
    sensible width at 0/n and n/n, and has near-nominal coverage (Newcombe 1998, Stat
    Med 17:857-872). ``n == 0`` carries no information: the whole of [0, 1]."""
    passed, n = _count("passed", passed), _count("n", n)
    if passed > n:
        raise ValueError(f"need 0 <= passed <= n, got passed={passed}, n={n}")
    _check_confidence(confidence)
    if n == 0:
        return 0.0, 1.0
    ci = binomtest(passed, n).proportion_ci(confidence_level=confidence, method="wilson")
    low = 0.0 if passed == 0 else min(1.0, max(0.0, float(ci.low)))  # exact ends, no float dust
    high = 1.0 if passed == n else min(1.0, max(0.0, float(ci.high)))
    return low, high


def mcnemar_one_sided(b: int, c: int) -> float:
    """Exact one-sided McNemar p-value that the challenger is better.

    ``b`` = cases only the challenger gets right, ``c`` = cases only the reference gets
    right. Under H0 (no difference) each discordant case is a fair coin, so
    p = P(X >= b) with X ~ Bin(b + c, 1/2). Exact rather than the chi-square version
    because the discordant counts here are small, where the approximation is poor.
    Concordant cases carry no information about the difference and are ignored."""
    if not (_is_count(b) and _is_count(c)):
        raise ValueError(f"discordant counts must be whole numbers >= 0, got b={b!r}, c={c!r}")
    b, c = operator.index(b), operator.index(c)
    if b + c == 0:
        return 1.0
    return min(1.0, float(binomtest(b, b + c, 0.5, alternative="greater").pvalue))


def paired_difference_interval(
    both: int, only_first: int, only_second: int, neither: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Two-sided interval for p_first - p_second when both were scored on the same cases.

    Newcombe's (1998) hybrid score method 10 (Stat Med 17:2635-2650): the Wilson
    intervals of the two marginal pass rates, combined "square and add" with the phi
    correlation between the two outcomes. Why not the Wald interval d +/- z*se on paired
    data: with few discordant cases it degenerates (zero width when there are none),
    can leave [-1, 1], and undercovers badly; method 10 keeps good coverage at the
    small n of our eval sets and needs no iteration.

    phi is Newcombe's: (AD - BC) / sqrt((A+B)(C+D)(A+C)(B+D)), 0 when a margin is empty,
    with a positive AD - BC first reduced to max(AD - BC - n/2, 0). That reduction is
    part of method 10 as published: it reproduces the paper's worked examples (e.g.
    18/12/2/18 -> 0.0562 to 0.3290), whereas the raw phi does not and gives a
    zero-width interval when the two outcomes agree on every case. It only ever widens
    the interval, i.e. errs on the side of caution for the gate.
    ``n == 0`` carries no information: the whole of [-1, 1]."""
    a = _count("both", both)
    b = _count("only_first", only_first)
    c = _count("only_second", only_second)
    d = _count("neither", neither)
    _check_confidence(confidence)
    n = a + b + c + d
    if n == 0:
        return -1.0, 1.0
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, confidence)
    l2, u2 = wilson_interval(a + c, n, confidence)
    phi = _newcombe_phi(a, b, c, d)
    diff = p1 - p2
    lower = diff - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = diff + math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return max(-1.0, lower), min(1.0, upper)


def drop_upper_bound(
    both: int, only_reference: int, only_candidate: int, neither: int, confidence: float = 0.95
) -> float:
    """One-sided upper ``confidence`` bound on the drop p_reference - p_candidate.

    For non-inferiority on general skills: the candidate passes when even this
    pessimistic drop is within the allowed regression. A one-sided bound at level
    ``confidence`` is the upper end of the two-sided interval at 1 - 2*(1 - confidence);
    hence ``confidence`` must lie in (0.5, 1)."""
    if not 0.5 < confidence < 1:
        raise ValueError(f"one-sided confidence must be in (0.5, 1), got confidence={confidence!r}")
    two_sided = 1 - 2 * (1 - confidence)
    return paired_difference_interval(both, only_reference, only_candidate, neither, two_sided)[1]


# --------------------------------------------------------------------------- helpers
def _newcombe_phi(a: int, b: int, c: int, d: int) -> float:
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    if denom == 0:
        return 0.0
    num = a * d - b * c
    if num > 0:
        num = max(num - (a + b + c + d) / 2, 0.0)
    return num / math.sqrt(denom)


def _is_count(value: object) -> bool:
    try:
        return operator.index(value) >= 0  # type: ignore[arg-type]
    except TypeError:
        return False


def _count(name: str, value: object) -> int:
    if not _is_count(value):
        raise ValueError(f"{name} must be a whole number >= 0, got {name}={value!r}")
    return operator.index(value)  # type: ignore[arg-type]


def _check_confidence(confidence: float) -> None:
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise ValueError(f"confidence must be in (0, 1), got confidence={confidence!r}")
