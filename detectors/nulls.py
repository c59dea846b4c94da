"""Where a stable window crosses a distance test with a given probability.

The tests without a p-value (PSI, Jensen-Shannon, the missing-value and unseen-category
rises) get, under a false-alarm budget, a second line beside their option: the value a
window of these sizes crosses with probability ``alpha`` when nothing changed. It depends
on the window's and the reference's counts, so it is computed per judged window (cached:
the counts repeat).
"""

from __future__ import annotations

import functools
import math

from scipy import stats

#: Simulated quantiles of 1.6 x 10^7 stable PSI windows (10 bins, 1000 against 5000) sat
#: 1.0-1.5% above the chi-square approximation's from 10^-2 to 10^-5: PSI's third-order term
#: skews its tail up. The lines take a 3% margin (Jensen-Shannon's divergence too: 10% over
#: its target at 10^-2 without it).
SKEW_MARGIN = 1.03


@functools.lru_cache(maxsize=1024)
def chi_square_quantile(alpha: float, dof: int) -> float:
    return float(stats.chi2.isf(alpha, max(dof, 1)))


def psi_line(alpha: float, bins: int, window: int, reference: int) -> float:
    """PSI of ``window`` values against ``reference`` values in ``bins`` bins, crossed with probability ``alpha``.

    To second order PSI is Pearson's chi-square statistic of the window against the
    reference shares, ``sum((a - e)^2 / e)``; with both samples drawn from one distribution
    it is ``(1/n + 1/m) chi2(bins - 1)``.
    """
    if window <= 0 or reference <= 0:
        return math.inf
    return chi_square_quantile(alpha, bins - 1) * (1.0 / window + 1.0 / reference) * SKEW_MARGIN


def jensen_shannon_line(alpha: float, bins: int, window: int, reference: int) -> float:
    """Jensen-Shannon distance (base 2) with the same null: its divergence is to second order
    ``sum((a - e)^2 / mid) / 8`` nats, an eighth of PSI's."""
    return math.sqrt(psi_line(alpha, bins, window, reference) / (8.0 * math.log(2.0)))


@functools.lru_cache(maxsize=4096)
def share_rise_line(alpha: float, reference_hits: int, reference: int, window: int) -> float:
    """Rise of a share (missing values, unseen categories) over the reference's that a stable
    window crosses with probability at most ``alpha``.

    The reference saw ``reference_hits`` of ``reference``; the true share ``p`` is at most the
    one-sided Clopper-Pearson bound ``p*`` but with probability ``alpha / 2``, and a window of
    ``window`` rows at ``p*`` reaches past its exact binomial ``1 - alpha / 2`` quantile with at
    most that probability: the line is that quantile's share minus the reference's. A union
    bound, so conservative; exact binomial tails, not the normal's, because shares near 0
    are the usual case.
    """
    if window <= 0 or reference <= 0:
        return math.inf
    half = alpha / 2.0
    upper = 1.0 if reference_hits >= reference else float(stats.beta.isf(half, reference_hits + 1,
                                                                            reference - reference_hits))
    crossing = float(stats.binom.isf(half, window, upper)) + 1  # P(hits >= crossing) <= alpha / 2
    return crossing / window - reference_hits / reference
