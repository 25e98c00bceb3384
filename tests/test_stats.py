"""pipelines.common.stats against routes independent of its own code.

The implementation delegates to scipy; the checks here use published worked values and
binomial tails summed by hand with math.comb, never the same formula re-typed.

Where every reference figure comes from:

* Wilson: Newcombe RG (1998) "Two-sided confidence intervals for the single proportion:
  comparison of seven methods", Stat Med 17:857-872, Table I, method 3 (score, no
  continuity correction). 81/263 and 15/148 are also the values the R package propint
  (github.com/m-Py/propint, tests/testthat/test_Single_Proportion_CI.R) asserts "as
  reported in Newcombe 1998".
* McNemar: tails summed with math.comb below; the exact conditional McNemar P = 0.052479
  (two-sided) for the Cavo et al. (2012) table [[59, 6], [16, 80]] from Fagerland,
  Lydersen & Laake, "Statistical Analysis of Contingency Tables" (2017), ch. 8, as
  asserted by their R package contingencytables (github.com/ocbe-uio/contingencytables,
  tests/testthat/test-ch8 and test-ch2 files); Bland's exact sign test P = 0.006 for 11
  vs 1 signed differences (M. Bland, York MSc stats exercise "transformex10",
  www-users.york.ac.uk/~mb55/msc/ytustats/transformex10.htm).
* Newcombe method 10 (paired): Newcombe RG (1998) "Improved confidence intervals for the
  difference between binomial proportions based on paired data", Stat Med
  17:2635-2650, examples (a)-(d), as asserted by propint
  (tests/testthat/test_Two_Dependent_Props_CI.R, "produces the results reported in
  Newcombe1998"); and the Cavo et al. table again, Newcombe square-and-add 95 % CI
  -0.1186 to -0.0046 (contingencytables, tests/testthat/test-ch8.R).
"""

from __future__ import annotations

import math
from math import comb

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.common import stats

PROPS = settings(max_examples=150, deadline=None)
counts = st.integers(min_value=0, max_value=60)


def _tail(b: int, c: int) -> float:
    """P(X >= b), X ~ Bin(b + c, 1/2), summed exactly with integers."""
    n = b + c
    return sum(comb(n, k) for k in range(b, n + 1)) / 2**n


# --------------------------------------------------------------------------- Wilson
@pytest.mark.parametrize(
    ("passed", "n", "low", "high"),
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_newcombe_1998_table_i(passed, n, low, high):
    """Published to 4 decimals, so agree within rounding."""
    got_low, got_high = stats.wilson_interval(passed, n)
    assert got_low == pytest.approx(low, abs=6e-5)
    assert got_high == pytest.approx(high, abs=6e-5)


def test_wilson_ends_are_exact_and_empty_set_is_uninformative():
    assert stats.wilson_interval(0, 20)[0] == 0.0
    assert stats.wilson_interval(20, 20)[1] == 1.0
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((3, 2), "passed=3, n=2"),
        ((-1, 5), "passed=-1"),
        ((1, -5), "n=-5"),
        ((1.5, 5), "passed=1.5"),
        ((1, 5, 1.0), "confidence=1.0"),
        ((1, 5, 0), "confidence=0"),
    ],
)
def test_wilson_rejects_bad_input_naming_the_values(args, fragment):
    with pytest.raises(ValueError, match=fragment.replace(".", r"\.")):
        stats.wilson_interval(*args)


@PROPS
@given(n=st.integers(1, 500), data=st.data())
def test_wilson_contains_the_rate_and_stays_in_unit_interval(n, data):
    passed = data.draw(st.integers(0, n))
    low, high = stats.wilson_interval(passed, n)
    assert 0.0 <= low <= passed / n <= high <= 1.0


@PROPS
@given(n=st.integers(1, 200), data=st.data(), k=st.integers(2, 5))
def test_wilson_narrows_with_n_and_widens_with_confidence(n, data, k):
    passed = data.draw(st.integers(0, n))
    low, high = stats.wilson_interval(passed, n)
    low_k, high_k = stats.wilson_interval(k * passed, k * n)
    assert high_k - low_k < high - low
    low99, high99 = stats.wilson_interval(passed, n, 0.99)
    assert low99 <= low and high <= high99


# --------------------------------------------------------------------------- McNemar
def test_mcnemar_matches_binomial_tails_summed_by_hand():
    for n in range(0, 31):
        for b in range(n + 1):
            expected = 1.0 if n == 0 else _tail(b, n - b)
            assert stats.mcnemar_one_sided(b, n - b) == pytest.approx(expected, rel=1e-12, abs=1e-300)


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (5, 0, 1 / 32),  # 0.5**5
        (9, 1, 11 / 1024),  # (C(10,9) + C(10,10)) / 2**10
        (8, 2, 56 / 1024),  # 0.0546875: just not significant at 0.05
        (3, 3, 42 / 64),
        (0, 4, 1.0),
        (0, 0, 1.0),
    ],
)
def test_mcnemar_small_cases(b, c, expected):
    assert stats.mcnemar_one_sided(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_matches_published_exact_p_values():
    # Cavo et al. (2012) table [[59, 6], [16, 80]]: exact conditional two-sided P = 0.052479
    # (Fagerland, Lydersen & Laake 2017). 16 vs 6 is off-centre, so two-sided = 2 x one tail.
    assert 2 * stats.mcnemar_one_sided(16, 6) == pytest.approx(0.052479, abs=5e-7)
    # Bland's sign test, 11 positive vs 1 negative difference: "exactly ... P = 0.006".
    assert 2 * stats.mcnemar_one_sided(11, 1) == pytest.approx(0.006, abs=5e-4)


@pytest.mark.parametrize(("b", "c", "fragment"), [(-1, 2, "b=-1"), (2, -3, "c=-3"), (1.5, 2, "b=1.5")])
def test_mcnemar_rejects_bad_counts(b, c, fragment):
    with pytest.raises(ValueError, match=fragment.replace(".", r"\.")):
        stats.mcnemar_one_sided(b, c)


# --------------------------------------------------------------------------- Newcombe 10
@pytest.mark.parametrize(
    ("table", "low", "high"),
    [
        ((36, 12, 2, 0), 0.0569, 0.3404),  # Newcombe 1998 paired, example (a)
        ((18, 12, 2, 18), 0.0562, 0.3290),  # (b): pins phi's n/2 reduction (raw phi: 0.0618-0.3239)
        ((53, 0, 0, 1), -0.0729, 0.0729),  # (c): no discordant pairs, still a real interval
        ((0, 30, 0, 0), 0.8395, 1.0),  # (d): boundary case
        ((59, 6, 16, 80), -0.1186, -0.0046),  # Cavo et al. 2012, Fagerland et al. 2017 ch. 8
    ],
)
def test_newcombe_method_10_matches_published_examples(table, low, high):
    got_low, got_high = stats.paired_difference_interval(*table)
    assert got_low == pytest.approx(low, abs=6e-5)
    assert got_high == pytest.approx(high, abs=6e-5)


def test_perfect_agreement_is_not_a_zero_width_interval():
    """Where the Wald interval (and method 10 with an uncorrected phi) collapse to [0, 0]:
    20 cases scored identically do not prove the two pass rates are equal."""
    low, high = stats.paired_difference_interval(10, 0, 0, 10)
    assert low < -0.05 and high > 0.05


def test_empty_table_is_uninformative_and_bad_input_is_named():
    assert stats.paired_difference_interval(0, 0, 0, 0) == (-1.0, 1.0)
    with pytest.raises(ValueError, match="only_second=-1"):
        stats.paired_difference_interval(1, 2, -1, 3)
    with pytest.raises(ValueError, match="confidence=1.5"):
        stats.paired_difference_interval(1, 2, 3, 4, 1.5)


tables = st.tuples(counts, counts, counts, counts).filter(lambda t: sum(t) > 0)


@PROPS
@given(t=tables)
def test_interval_contains_the_estimate_and_stays_in_range(t):
    a, b, c, d = t
    low, high = stats.paired_difference_interval(a, b, c, d)
    diff = (b - c) / (a + b + c + d)
    assert -1.0 <= low <= diff <= high <= 1.0


@PROPS
@given(t=tables, k=st.integers(2, 4))
def test_interval_narrows_with_n(t, k):
    low, high = stats.paired_difference_interval(*t)
    low_k, high_k = stats.paired_difference_interval(*(k * x for x in t))
    assert high_k - low_k <= high - low + 1e-12


@PROPS
@given(t=tables)
def test_swapping_the_contenders_mirrors_the_interval(t):
    a, b, c, d = t
    low, high = stats.paired_difference_interval(a, b, c, d)
    low_s, high_s = stats.paired_difference_interval(a, c, b, d)
    assert low_s == pytest.approx(-high, abs=1e-12) and high_s == pytest.approx(-low, abs=1e-12)


@PROPS
@given(t=tables)
def test_higher_confidence_gives_a_wider_interval(t):
    low90, high90 = stats.paired_difference_interval(*t, confidence=0.90)
    low99, high99 = stats.paired_difference_interval(*t, confidence=0.99)
    assert low99 <= low90 + 1e-12 and high90 <= high99 + 1e-12


# --------------------------------------------------------------------------- drop bound
def test_drop_bound_is_the_upper_end_of_the_matching_two_sided_interval():
    # one-sided 95 % == upper end of the two-sided 90 % interval
    assert stats.drop_upper_bound(36, 12, 2, 0) == stats.paired_difference_interval(36, 12, 2, 0, 0.90)[1]
    assert stats.drop_upper_bound(36, 12, 2, 0, 0.975) == pytest.approx(0.3404, abs=6e-5)  # two-sided 95 %


def test_drop_bound_reads_reference_first():
    # reference lost 10 cases the candidate kept: the drop is negative, so is its bound's centre
    assert stats.drop_upper_bound(40, 0, 10, 0) < 0 < stats.drop_upper_bound(40, 10, 0, 0)


def test_drop_bound_shrinks_with_more_evidence_of_no_drop():
    small = stats.drop_upper_bound(18, 1, 1, 0)  # 20 cases, one swap each way
    large = stats.drop_upper_bound(1800, 100, 100, 0)
    assert small > 0.1 and large < 0.03


@pytest.mark.parametrize("confidence", [0.5, 0.3, 1.0])
def test_drop_bound_rejects_confidence_outside_half_to_one(confidence):
    with pytest.raises(ValueError, match="confidence"):
        stats.drop_upper_bound(1, 1, 1, 1, confidence)


@PROPS
@given(t=tables)
def test_drop_bound_is_monotone_in_the_discordant_counts(t):
    a, ref, cand, d = t
    bound = stats.drop_upper_bound(a, ref, cand, d)
    assert stats.drop_upper_bound(a, ref + 1, cand, d) >= bound - 1e-12  # one more case lost
    assert stats.drop_upper_bound(a, ref, cand + 1, d) <= bound + 1e-12  # one more case gained
    if cand:  # same cases, one gain turned into a loss
        assert stats.drop_upper_bound(a, ref + 1, cand - 1, d) >= bound - 1e-12


def test_drop_bound_monotone_exhaustively_on_small_tables():
    """The property test above, on every table with cells up to 4 (kept small: 2 shared cores)."""
    rng = range(5)
    for a in rng:
        for ref in rng:
            for cand in rng:
                for d in rng:
                    if a + ref + cand + d == 0:
                        continue
                    bound = stats.drop_upper_bound(a, ref, cand, d)
                    assert stats.drop_upper_bound(a, ref + 1, cand, d) >= bound - 1e-12
                    assert stats.drop_upper_bound(a, ref, cand + 1, d) <= bound + 1e-12
                    assert math.isfinite(bound)
