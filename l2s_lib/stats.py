"""Uncertainty for the compendium's verdicts: intervals for accuracies and gaps, pass@k, three-valued verdicts.

A result here is a proportion or a mean over problems, often repeated over training seeds. Two sources of
variation matter and both go into the intervals:

- **problems**: a benchmark is a sample of problems (``org_hard`` has 30: a 95% interval of about +/-16 points);
- **training seeds**: organisms trained from different seeds give different merges (at TA 0.7 on the smallest
  organism the gap to System 2 varies by tens of points between seeds).

``bootstrap_ci`` resamples both (seeds, then problems within each drawn seed: the two-stage bootstrap for
clustered data); with one seed it is the ordinary bootstrap over problems. ``wilson`` is the interval of a
single proportion. ``decide`` turns an interval and a threshold into ``reproduced`` / ``not reproduced`` /
``inconclusive``: the interval, not the point estimate, must clear the threshold.

Deliberately numpy rather than ``scipy.stats.bootstrap``: scipy resamples one level only, and the two-stage
resampling over seeds and problems is what a seed-dimensioned result needs. Every draw is seeded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
N_BOOT = 2000
BOOT_SEED = 0


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n`` (as fractions in [0, 1]).

    The same as statsmodels' ``proportion_confint(method="wilson")``; not a dependency for one formula. Unlike
    the normal approximation it stays inside [0, 1] and is not degenerate at 0% or 100%.
    """
    if n <= 0:
        raise ValueError(f"a proportion needs n >= 1, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    p = successes / n
    # At 0% and 100% the bound is exact (rounding would leave 0.9999999999999999).
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% interval and what it was computed from."""

    value: float
    ci_low: float
    ci_high: float
    n_seeds: int
    n_problems: int  # problems per seed (the smallest when they differ)
    method: str  # "bootstrap over problems", "bootstrap over seeds and problems", "wilson"

    def as_dict(self) -> dict:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high, "n_seeds": self.n_seeds,
                "n_problems": self.n_problems, "ci_method": self.method}


def _as_groups(values: Sequence[float] | Mapping[object, Sequence[float]]) -> list[np.ndarray]:
    groups = list(values.values()) if isinstance(values, Mapping) else [values]
    out = [np.asarray(g, dtype=float) for g in groups]
    if not out or any(g.ndim != 1 or g.size == 0 for g in out):
        raise ValueError("every seed needs at least one per-problem value")
    if any(not np.isfinite(g).all() for g in out):
        raise ValueError("per-problem values must be finite")
    return out


def bootstrap_ci(values: Sequence[float] | Mapping[object, Sequence[float]], n_boot: int = N_BOOT,
                 seed: int = BOOT_SEED, level: float = 0.95) -> Estimate:
    """Mean of per-problem ``values`` with a percentile bootstrap interval.

    ``values`` is one sequence (one seed) or a mapping seed -> per-problem values (e.g. 1/0 correctness, or a
    paired difference merge - System 2 on the same problem). The estimate is the mean over seeds of each seed's
    mean; the bootstrap draws seeds with replacement, then problems with replacement within each drawn seed.
    """
    groups = _as_groups(values)
    rng = np.random.default_rng(seed)
    point = float(np.mean([g.mean() for g in groups]))
    k = len(groups)
    stats = np.empty(n_boot)
    for b in range(n_boot):
        picks = rng.integers(0, k, size=k) if k > 1 else np.zeros(1, dtype=int)
        stats[b] = np.mean([groups[i][rng.integers(0, groups[i].size, size=groups[i].size)].mean() for i in picks])
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    method = "bootstrap over seeds and problems" if k > 1 else "bootstrap over problems"
    return Estimate(point, float(low), float(high), k, min(g.size for g in groups), method)


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one question with ``c`` correct among ``n`` samples: 1 - C(n-c, k) / C(n, k).

    (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", eq. 1.) Computed as a running product,
    which is exact for any n and never forms the huge binomials.
    """
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@dataclass(frozen=True)
class Criterion:
    """One side of a claim: ``value`` must be ``>= threshold`` (``at_least``) or ``<= threshold`` (``at_most``)."""

    name: str
    threshold: float
    direction: str  # "at_least" or "at_most"

    def __post_init__(self):
        if self.direction not in ("at_least", "at_most"):
            raise ValueError(f"direction must be 'at_least' or 'at_most', got {self.direction!r}")

    def text(self) -> str:
        return f"{self.name} {'>=' if self.direction == 'at_least' else '<='} {self.threshold:g}"

    def decide(self, ci_low: float, ci_high: float) -> str:
        """``reproduced`` when the whole interval meets the threshold, ``not reproduced`` when none of it does."""
        if any(map(math.isnan, (ci_low, ci_high))):
            return INCONCLUSIVE
        if self.direction == "at_least":
            return REPRODUCED if ci_low >= self.threshold else NOT_REPRODUCED if ci_high < self.threshold else INCONCLUSIVE
        return REPRODUCED if ci_high <= self.threshold else NOT_REPRODUCED if ci_low > self.threshold else INCONCLUSIVE


def decide_all(decisions: Sequence[str]) -> str:
    """A claim made of several criteria: reproduced when all are, not reproduced when any clearly fails."""
    if not decisions:
        raise ValueError("a claim needs at least one criterion")
    if any(d not in VERDICTS for d in decisions):
        raise ValueError(f"unknown decision among {decisions}; allowed: {VERDICTS}")
    if NOT_REPRODUCED in decisions:
        return NOT_REPRODUCED
    return REPRODUCED if all(d == REPRODUCED for d in decisions) else INCONCLUSIVE
