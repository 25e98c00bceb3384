"""Small statistics for scores. Plain Python, no dependencies."""

from __future__ import annotations

import math


def wilson_interval(passed: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a pass rate.

    Why Wilson and not the normal approximation: eval sets here are small (tens of
    cases) and pass rates often sit near 0 or 1, where p +/- z*sqrt(p(1-p)/n) collapses
    to a zero-width interval or leaves [0, 1]. Wilson stays inside [0, 1] and keeps a
    sensible width at 0/n and n/n."""
    if n < 0 or passed < 0 or passed > n:
        raise ValueError(f"need 0 <= passed <= n, got passed={passed}, n={n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0
    z = _normal_quantile(0.5 + confidence / 2)
    p = passed / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if passed == 0 else max(0.0, centre - half)  # exact ends, no float dust
    high = 1.0 if passed == n else min(1.0, centre + half)
    return low, high


def _normal_quantile(q: float) -> float:
    """Inverse standard normal CDF by bisection on erf (exact enough, no scipy)."""
    lo, hi = -10.0, 10.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
