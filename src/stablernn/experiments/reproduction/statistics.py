"""The rule that decides a claim, stated before any run (printed in the report's header).

Every compared arm has at least 5 seeds (``reduced`` and ``full``). A check compares two arms
with a two-sided Welch t-test (unequal variances) and reports Hedges' g (the standardized
difference of means, small-sample corrected). It *agrees* with the paper only when the
difference has the paper's sign and p < 0.05, *disagrees* when it has the opposite sign and
p < 0.05, and shows *no detectable effect* otherwise; equal arms (a tie) are never an agreement.
Where a claim picks a best setting, the pick is made on separate selection seeds by validation
accuracy, and the seeds that test it are others. A claim with several parts checks every part.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from scipy import stats as scipy_stats

SIGNIFICANCE = 0.05
MIN_SEEDS = 5
AGREES, DISAGREES, NO_EFFECT = "agrees", "disagrees", "no detectable effect"

RULE = (
    f"Decision rule, fixed before the runs: every compared arm has at least {MIN_SEEDS} seeds "
    "(fewer only in quick mode, where nothing is tested). Each check is a two-sided Welch "
    "t-test of the two arms, with Hedges' g as the effect size; it *agrees* only when the "
    f"difference has the paper's sign and p < {SIGNIFICANCE}, *disagrees* when it has the "
    f"opposite sign and p < {SIGNIFICANCE}, and is *no detectable effect* otherwise (a tie is "
    "never an agreement). A best setting is picked by mean validation accuracy on separate "
    "selection seeds, then tested on other seeds. A claim agrees when all its checks agree, "
    "disagrees when all disagree, and otherwise is reported part by part.")


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, standard deviation (0 for one seed), min, max and n over seeds."""
    values = [float(v) for v in values]
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1
            else 0.0, "min": min(values), "max": max(values), "n": len(values)}


def fmt(summary: dict[str, float], digits: int = 3, percent: bool = False) -> str:
    """``mean +- std [min, max]`` (just the mean for one seed)."""
    scale, unit = (100.0, "%") if percent else (1.0, "")
    if summary["n"] == 1:
        return f"{summary['mean'] * scale:.{digits}g}{unit}"
    return (f"{summary['mean'] * scale:.{digits}g}{unit} +- {summary['std'] * scale:.2g} "
            f"[{summary['min'] * scale:.{digits}g}, {summary['max'] * scale:.{digits}g}]")


@dataclass(frozen=True)
class Comparison:
    """Welch's test of ``first - second`` against the paper's expected sign."""

    difference: float  # mean(first) - mean(second)
    p_value: float  # two-sided; nan when it cannot be computed (a single seed, no variance)
    effect_size: float  # Hedges' g; nan when undefined
    n_first: int
    n_second: int
    verdict: str

    def __str__(self) -> str:
        p = "n/a" if math.isnan(self.p_value) else f"{self.p_value:.2g}"
        g = "n/a" if math.isnan(self.effect_size) else f"{self.effect_size:+.2f}"
        return (f"{self.verdict} (difference {self.difference:+.4g}, Welch p = {p}, Hedges' g = "
                f"{g}, n = {self.n_first}/{self.n_second})")

    def to_dict(self) -> dict:
        return asdict(self)


def hedges_g(first: Sequence[float], second: Sequence[float]) -> float:
    """Standardized mean difference with the pooled standard deviation, bias-corrected."""
    n1, n2 = len(first), len(second)
    if n1 < 2 or n2 < 2:
        return math.nan
    pooled = math.sqrt(((n1 - 1) * statistics.variance(first) + (n2 - 1) *
                        statistics.variance(second)) / (n1 + n2 - 2))
    if pooled == 0:
        return math.nan
    correction = 1 - 3 / (4 * (n1 + n2) - 9)
    return correction * (statistics.fmean(first) - statistics.fmean(second)) / pooled


def compare(first: Sequence[float], second: Sequence[float], expected: int = 1) -> Comparison:
    """Does ``first`` exceed ``second`` (``expected = 1``) or fall below it (``-1``), as the paper
    says? The verdict follows :data:`RULE`."""
    if expected not in (1, -1):
        raise ValueError(f"expected must be 1 or -1, got {expected!r}")
    first, second = [float(v) for v in first], [float(v) for v in second]
    difference = statistics.fmean(first) - statistics.fmean(second)
    p_value = math.nan
    if len(first) >= 2 and len(second) >= 2:
        if statistics.variance(first) == 0 and statistics.variance(second) == 0:
            p_value = 1.0 if difference == 0 else 0.0  # no noise: the difference is exact
        else:
            p_value = float(scipy_stats.ttest_ind(first, second, equal_var=False).pvalue)
    if math.isnan(p_value) or p_value >= SIGNIFICANCE or difference == 0:
        verdict = NO_EFFECT
    else:
        verdict = AGREES if math.copysign(1, difference) == expected else DISAGREES
    return Comparison(difference, p_value, hedges_g(first, second), len(first), len(second),
                      verdict)


def overall(verdicts: Sequence[str]) -> str:
    """A claim's verdict from its checks' verdicts."""
    verdicts = [str(v).split(" (")[0] for v in verdicts]
    if not verdicts:
        return "not tested"
    if all(v == AGREES for v in verdicts):
        return AGREES
    if all(v == DISAGREES for v in verdicts):
        return DISAGREES
    if all(v == NO_EFFECT for v in verdicts):
        return NO_EFFECT
    counts = {v: verdicts.count(v) for v in (AGREES, NO_EFFECT, DISAGREES) if v in verdicts}
    return "mixed: " + ", ".join(f"{count} {verdict}" for verdict, count in counts.items())
