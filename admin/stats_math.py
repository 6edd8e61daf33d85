"""The statistics behind the stats endpoint, sans-I/O (no scipy).

* Latency histograms: bucket numbers as computed by the SQL function
  ``abgate_stats_bucket`` (sql/0006): 0-15 ms exact, then eight buckets per
  doubling. A percentile is the nearest-rank bucket's geometric centre, within
  4.4% of the true value.
* Sample ratio mismatch: Pearson's chi-square of observed unique subjects per
  variant against the counts the weights predict, with the survival function
  of the chi-square distribution computed from the regularized upper
  incomplete gamma function (series / continued fraction, as in Numerical
  Recipes ``gammq``).
* Differences of two proportions: Newcombe's hybrid score interval (method 10
  of Newcombe 1998), built from the two Wilson score intervals. Unlike the Wald
  interval it stays inside [-1, 1] and behaves at rates near 0 or 1, which is
  where error rates live.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "EXACT_BELOW_MS",
    "MAX_BUCKET",
    "SRM_THRESHOLD",
    "Difference",
    "Srm",
    "bucket_of",
    "bucket_value",
    "chi2_sf",
    "newcombe_difference",
    "percentile",
    "regularized_gamma_q",
    "sample_ratio_mismatch",
    "wilson_interval",
]

EXACT_BELOW_MS = 16
BUCKETS_PER_DOUBLING = 8
MAX_BUCKET = 191
SRM_THRESHOLD = 0.001
Z_95 = 1.959963984540054  # the 97.5th percentile of the standard normal

_EPS = 1e-15
_MAX_ITERATIONS = 10_000
_TINY = 1e-300


# -- histograms -------------------------------------------------------------------


def bucket_of(ms: int) -> int:
    """The histogram bucket of a duration (mirrors ``abgate_stats_bucket``)."""
    if ms < EXACT_BELOW_MS:
        return max(ms, 0)
    doublings = math.log(ms / EXACT_BELOW_MS) / math.log(2.0)
    return min(EXACT_BELOW_MS + math.floor(BUCKETS_PER_DOUBLING * doublings), MAX_BUCKET)


def bucket_value(bucket: int) -> int:
    """The value reported for a bucket: exact below 16 ms, else its geometric centre."""
    if bucket < EXACT_BELOW_MS:
        return bucket
    exponent = (bucket - EXACT_BELOW_MS + 0.5) / BUCKETS_PER_DOUBLING
    return round(EXACT_BELOW_MS * 2.0**exponent)


def percentile(histogram: Mapping[int, int], q: float) -> int | None:
    """Nearest-rank ``q``-quantile (0 < q <= 1) of a bucket -> count histogram."""
    if not 0 < q <= 1:
        raise ValueError("q must be in (0, 1]")
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank = math.ceil(q * total)
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return bucket_value(bucket)
    return bucket_value(max(histogram))  # unreachable: seen ends at total >= rank


# -- chi-square ---------------------------------------------------------------------


def _gamma_series(a: float, x: float) -> float:
    """P(a, x) by its power series; converges fast for x < a + 1."""
    term = total = 1.0 / a
    denominator = a
    for _ in range(_MAX_ITERATIONS):
        denominator += 1.0
        term *= x / denominator
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_continued_fraction(a: float, x: float) -> float:
    """Q(a, x) by Lentz's continued fraction; converges fast for x >= a + 1."""
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITERATIONS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < _TINY:
            d = _TINY
        c = b + an / c
        if abs(c) < _TINY:
            c = _TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h * math.exp(-x + a * math.log(x) - math.lgamma(a))


def regularized_gamma_q(a: float, x: float) -> float:
    """Q(a, x) = Γ(a, x) / Γ(a), the regularized upper incomplete gamma function."""
    if a <= 0:
        raise ValueError("a must be > 0")
    if x < 0:
        raise ValueError("x must be >= 0")
    if x == 0:
        return 1.0
    if x < a + 1.0:
        return max(0.0, 1.0 - _gamma_series(a, x))
    return min(1.0, _gamma_continued_fraction(a, x))


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X chi-square distributed with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError("df must be >= 1")
    if x <= 0:
        return 1.0
    return regularized_gamma_q(df / 2.0, x / 2.0)


@dataclass(frozen=True)
class Srm:
    """Sample ratio mismatch check; ``p_value`` is None when there is nothing to test."""

    ok: bool
    p_value: float | None
    chi2: float | None
    expected: list[float]
    observed: list[int]

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "p_value": self.p_value,
            "chi2": self.chi2,
            "expected": self.expected,
            "observed": self.observed,
            "threshold": SRM_THRESHOLD,
        }


def sample_ratio_mismatch(observed: Sequence[int], weights: Sequence[int]) -> Srm:
    """Chi-square goodness of fit of ``observed`` counts to ``weights``' shares.

    ``ok`` is False when p < :data:`SRM_THRESHOLD`. With fewer than two variants
    or no subjects at all there is no test: ``ok`` is True and p is None.
    """
    if len(observed) != len(weights):
        raise ValueError("observed and weights differ in length")
    if any(w <= 0 for w in weights):
        raise ValueError("weights must be positive")
    total = sum(observed)
    weight_sum = sum(weights)
    expected = [total * w / weight_sum for w in weights] if weights else []
    if len(observed) < 2 or total == 0:
        return Srm(True, None, None, expected, list(observed))
    chi2 = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    p_value = chi2_sf(chi2, len(observed) - 1)
    return Srm(p_value >= SRM_THRESHOLD, p_value, chi2, expected, list(observed))


# -- proportions --------------------------------------------------------------------


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of successes / n (n > 0)."""
    if n <= 0:
        raise ValueError("n must be > 0")
    if not 0 <= successes <= n:
        raise ValueError("successes must be between 0 and n")
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Difference:
    """``rate`` of a variant minus the baseline's, with a 95% interval."""

    difference: float
    low: float
    high: float

    def to_json(self) -> dict[str, object]:
        return {"difference": self.difference, "ci95": [self.low, self.high]}


def newcombe_difference(
    successes: int, n: int, baseline_successes: int, baseline_n: int
) -> Difference | None:
    """p - p_baseline with Newcombe's hybrid score 95% interval; None if an n is 0."""
    if n <= 0 or baseline_n <= 0:
        return None
    p1, p2 = successes / n, baseline_successes / baseline_n
    l1, u1 = wilson_interval(successes, n)
    l2, u2 = wilson_interval(baseline_successes, baseline_n)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Difference(d, max(-1.0, low), min(1.0, high))
