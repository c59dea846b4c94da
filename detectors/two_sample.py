"""Two-sample tests of a current window against a reference.

Each test scores a window (``NumericWindow`` or ``CategoricalWindow``) against
a reference and judges the score. Tests hold parameters only, no state; the
window lives in ``detectors.window.WindowedDetector``. Statistics grow with
drift. Tests with a p-value (KS, chi-square) warn when ``p < alpha`` and turn
critical when the effect is also large; the others compare their statistic
with a warning and a critical line.

The numbers come from scipy where scipy has the test (``kstwo`` for the KS
p-value, ``wasserstein_distance``, ``jensenshannon``, ``chdtrc`` for the
chi-square p-value; the chi-square sum is the one ``chi2_contingency`` makes).
The KS statistic is computed here because the reference is a weighted sample
(a KLL sketch), which ``ks_2samp`` does not take; on an exact reference it
equals ``ks_2samp`` (tests/detectors/test_two_sample.py).
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy import special, stats
from scipy.spatial import distance

from detectors import nulls
from detectors.base import Severity, check_positive, check_probability, require
from detectors.reference import CategoricalReference, NumericReference, Reference, psi


@dataclass(frozen=True)
class NumericWindow:
    values: np.ndarray  # sorted, no missing values
    missing: int
    bin_counts: np.ndarray  # in the reference's PSI bins


@dataclass(frozen=True)
class CategoricalWindow:
    counts: np.ndarray  # per reference bucket: its categories, then "other"
    missing: int


Window = NumericWindow | CategoricalWindow


@dataclass(frozen=True)
class Score:
    statistic: float
    p_value: float | None = None
    effect: float | None = None  # effect size of a p-value test (KS D, Cramér's V)
    size: int = 0  # observations the p-value rests on (for the line at alpha)
    floor: float = 0.0  # the line a stable window of these sizes crosses with probability alpha (0: none)

    @property
    def has_p_value(self) -> bool:
        return self.p_value is not None


class LazyScore(Score):
    """A score whose p-value or effect, given as a function, is computed on first read: KS's p-value
    costs ~190 us and Cramér's V ~20 us, and most windows are judged without them (a statistic far
    under its line needs no p-value; the effect only matters past the line: ``PValueTest.judge``)."""

    def __init__(self, statistic: float, p_value: float | Callable[[], float] | None,
                 effect: float | Callable[[], float] | None = None, size: int = 0,
                 floor: float = 0.0) -> None:  # fmt: skip
        lazy = {name: value for name, value in (("p_value", p_value), ("effect", effect)) if callable(value)}
        object.__setattr__(self, "_lazy", lazy)
        super().__init__(statistic, None if callable(p_value) else p_value, None if callable(effect) else effect,
                         size, floor)  # fmt: skip

    def __getattribute__(self, name: str) -> Any:
        if name in ("p_value", "effect"):
            lazy = object.__getattribute__(self, "_lazy")
            if name in lazy:
                value = lazy.pop(name)()
                object.__setattr__(self, name, value)
                return value
        return object.__getattribute__(self, name)

    @property
    def has_p_value(self) -> bool:
        lazy = object.__getattribute__(self, "_lazy")
        return "p_value" in lazy or object.__getattribute__(self, "p_value") is not None


class WindowTest:
    """Base of every two-sample test."""

    name: ClassVar[str]
    kinds: ClassVar[frozenset[str]]  # reference kinds it applies to
    has_p_value: ClassVar[bool] = False

    def __init__(self, warning: float, critical: float) -> None:
        check_positive("warning", warning)
        check_positive("critical", critical)
        require(critical >= warning, "critical", critical, f">= warning ({warning})")
        self.warning, self.critical = float(warning), float(critical)

    @property
    def params(self) -> dict[str, Any]:
        return {"warning": self.warning, "critical": self.critical}

    def score(self, reference: Reference, window: Window) -> Score:
        raise NotImplementedError

    def judge(self, score: Score, alpha: float | None = None) -> tuple[Severity | None, float]:
        """Severity of a score and the line it was judged against (its null line when that is higher)."""
        warning, critical = max(self.warning, score.floor), max(self.critical, score.floor)
        if score.statistic >= critical:
            return "critical", critical
        if score.statistic >= warning:
            return "warning", warning
        return None, warning


class NullLineTest(WindowTest):
    """A distance test that, given ``alpha`` > 0, also judges against its null line per window
    (``detectors.nulls``): the false-alarm budget's line, which moves with the counts."""

    def __init__(self, warning: float, critical: float, alpha: float = 0.0) -> None:
        super().__init__(warning, critical)
        require(isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0 <= alpha < 1, "alpha", alpha,
                "in [0, 1)")  # fmt: skip
        self.alpha = float(alpha)

    @property
    def params(self) -> dict[str, Any]:
        return {**super().params, "alpha": self.alpha}


# What the tests derive from a reference, by its identity: references are immutable and every window
# of a feature is judged against the same one, so each is computed once, not per window.
_DERIVED: dict[int, tuple[weakref.ref[Any], dict[Any, Any]]] = {}


def derived(reference: Reference, key: Any, compute: Callable[[], Any]) -> Any:
    """``compute()`` of ``reference``, computed once while the reference lives. For a few numbers
    (a count, a range): an array per reference would cost memory on every monitored column."""
    ident = id(reference)
    entry = _DERIVED.get(ident)
    if entry is None or entry[0]() is not reference:
        entry = _DERIVED[ident] = (weakref.ref(reference, lambda _: _DERIVED.pop(ident, None)), {})
    values = entry[1]
    if key not in values:
        values[key] = compute()
    return values[key]


def _present(reference: Reference) -> int:
    if isinstance(reference, NumericReference):
        return int(derived(reference, "count", lambda: reference.count))
    return reference.present


def _bins(reference: Reference) -> int:
    """Bins a stable window can fill: those the reference has values in."""
    return int(derived(reference, "bins", lambda: int(np.count_nonzero(reference.proportions))))


class PValueTest(WindowTest):
    """Warn when ``p < alpha``; critical when the effect size also reaches ``critical_effect``."""

    has_p_value = True

    def __init__(self, alpha: float, critical_effect: float) -> None:
        check_probability("alpha", alpha)
        check_positive("critical_effect", critical_effect)
        self.alpha, self.critical_effect = float(alpha), float(critical_effect)

    @property
    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "critical_effect": self.critical_effect}

    def line_at(self, alpha: float, score: Score) -> float:
        """The statistic whose p-value is ``alpha`` for this score's sample sizes."""
        raise NotImplementedError

    def judge(self, score: Score, alpha: float | None = None) -> tuple[Severity | None, float]:
        alpha = self.alpha if alpha is None else alpha
        line = self.line_at(alpha, score)
        if isinstance(score, LazyScore) and score.statistic < _SURELY_UNDER * line:
            return None, line  # the p-value is far above alpha: not computed
        if score.p_value is None or score.p_value >= alpha:
            return None, line
        if score.effect is not None and score.effect >= self.critical_effect:
            return "critical", line
        return "warning", line


class PSITest(NullLineTest):
    """Population stability index over the reference's bins or categories."""

    name = "psi"
    kinds = frozenset({"numeric", "categorical"})

    def __init__(self, warning: float = 0.1, critical: float = 0.25, alpha: float = 0.0) -> None:
        super().__init__(warning, critical, alpha)

    def score(self, reference: Reference, window: Window) -> Score:
        counts = window.bin_counts if isinstance(window, NumericWindow) else window.counts
        present = int(counts.sum())
        floor = nulls.psi_line(self.alpha, _bins(reference), present, _present(reference)) if self.alpha else 0.0
        return Score(psi(reference.proportions, counts), floor=floor)


class JensenShannonTest(NullLineTest):
    """Jensen-Shannon distance (base 2, in [0, 1]) over bins or categories."""

    name = "jensen_shannon"
    kinds = frozenset({"numeric", "categorical"})

    def __init__(self, warning: float = 0.1, critical: float = 0.2, alpha: float = 0.0) -> None:
        super().__init__(warning, critical, alpha)

    def score(self, reference: Reference, window: Window) -> Score:
        counts = window.bin_counts if isinstance(window, NumericWindow) else window.counts
        if counts.sum() == 0:
            return Score(0.0)
        floor = (nulls.jensen_shannon_line(self.alpha, _bins(reference), int(counts.sum()), _present(reference))
                 if self.alpha else 0.0)  # fmt: skip
        distance_ = float(distance.jensenshannon(reference.proportions, counts / counts.sum(), base=2))
        return Score(distance_, floor=floor)


class WassersteinTest(WindowTest):
    """Wasserstein-1 distance between window and reference, in reference standard deviations."""

    name = "wasserstein"
    kinds = frozenset({"numeric"})

    def __init__(self, warning: float = 0.15, critical: float = 0.5) -> None:
        super().__init__(warning, critical)

    def score(self, reference: Reference, window: Window) -> Score:
        assert isinstance(reference, NumericReference) and isinstance(window, NumericWindow)
        if not window.values.size:
            return Score(0.0)
        w1 = stats.wasserstein_distance(window.values, reference.items, None, reference.weights)
        return Score(float(w1) / reference.std)


class KSTest(PValueTest):
    """Two-sample Kolmogorov-Smirnov test; critical when D >= ``critical_effect``.

    The p-value is Smirnov's asymptotic distribution at the effective sample
    size, as ``scipy.stats.ks_2samp(method="asymp")`` computes it (scipy's
    exact method is O(n*m) per window). Against a sketched reference D is off
    by at most the sketch's rank error (``NumericReference.rank_error``).
    """

    name = "ks"
    kinds = frozenset({"numeric"})

    def __init__(self, alpha: float = 1e-4, critical_effect: float = 0.2) -> None:
        super().__init__(alpha, critical_effect)

    def score(self, reference: Reference, window: Window) -> Score:
        assert isinstance(reference, NumericReference) and isinstance(window, NumericWindow)
        if not window.values.size:
            return Score(0.0, 1.0, 0.0, 0)
        d = ks_statistic(reference.items, reference.weights, window.values)
        n, m = sorted((float(_present(reference)), float(window.values.size)), reverse=True)
        size = round(n * m / (n + m))
        # kstwo._sf is the distribution's own sf; the public kstwo.sf wraps it in ~100 us of
        # argument handling, paid by every numeric window (tests/detectors: equal to kstwo.sf).
        return LazyScore(d, functools.partial(_ks_p_value, d, size), d, size)

    def line_at(self, alpha: float, score: Score) -> float:
        return _ks_line(alpha, score.size) if score.size else 1.0


def _ks_p_value(d: float, size: int) -> float:
    return float(np.clip(stats.kstwo._sf(d, size), 0.0, 1.0))


# A statistic under this share of its line at alpha has a p-value far above alpha: the line is
# kstwo's inverse survival function, accurate to far better than half of it, and sf decreases.
_SURELY_UNDER = 0.5


@functools.lru_cache(maxsize=256)
def _ks_line(alpha: float, size: int) -> float:
    # A root search (~1 ms); windows mostly share their size, so it is cached.
    return float(stats.kstwo.isf(alpha, size))


def ks_statistic(items: np.ndarray, weights: np.ndarray, window_sorted: np.ndarray) -> float:
    """sup |F_ref - F_window| with F_ref the weighted empirical CDF of ``items`` (sorted).

    The supremum is taken at every point of either sample, each CDF counting the values <= it.
    Both samples are sorted, so each is searched in the other with ascending keys (numpy's fast
    case), and a window value's own count is the position after its last tie.
    """
    n = window_sorted.size
    if not n:
        return 0.0
    last_tie = np.empty(n, dtype=bool)
    np.not_equal(window_sorted[1:], window_sorted[:-1], out=last_tie[:-1])
    last_tie[-1] = True
    cdf = np.concatenate(([0.0], np.cumsum(weights))) / weights.sum()
    window_counts = np.flatnonzero(last_tie) + 1
    at_window = cdf[np.searchsorted(items, window_sorted[last_tie], side="right")] - window_counts / n
    window_at_items = np.searchsorted(window_sorted, items, side="right") / n
    at_items = cdf[np.searchsorted(items, items, side="right")] - window_at_items
    return float(max(np.abs(at_window).max(), np.abs(at_items).max()))


class ChiSquareTest(PValueTest):
    """Chi-square test of homogeneity, reference counts vs window counts per category.

    Critical when Cramér's V reaches ``critical_effect``, computed with the
    reference scaled to the window's size (``cramers_v``) so the same change is
    as critical against any reference size. Buckets empty in both are left out.
    """

    name = "chi_square"
    kinds = frozenset({"categorical"})

    def __init__(self, alpha: float = 1e-4, critical_effect: float = 0.2) -> None:
        super().__init__(alpha, critical_effect)

    def score(self, reference: Reference, window: Window) -> Score:
        assert isinstance(reference, CategoricalReference) and isinstance(window, CategoricalWindow)
        table = np.vstack([reference.proportions * reference.present, window.counts]).astype(np.float64)
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] < 2 or window.counts.sum() == 0:
            return Score(0.0, 1.0, 0.0, table.shape[1])
        chi2, dof = pearson_chi2(table)
        effect = functools.partial(cramers_v, reference.proportions, window.counts)
        return LazyScore(chi2, float(special.chdtrc(dof, chi2)), effect, dof)

    def line_at(self, alpha: float, score: Score) -> float:
        return _chi2_line(alpha, score.size) if score.size else math.inf


def cramers_v(reference_shares: np.ndarray, counts: np.ndarray) -> float:
    """Cramér's V of the window against the reference scaled to the window's size.

    Scaling makes the effect size a property of the two distributions, not of
    how many rows the reference happened to have.
    """
    n = float(counts.sum())
    table = np.vstack([reference_shares * n, counts]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or n == 0:
        return 0.0
    return math.sqrt(pearson_chi2(table)[0] / (2.0 * n))


def pearson_chi2(table: np.ndarray) -> tuple[float, int]:
    """Pearson's chi-square of a 2 x k contingency table (no empty column) and its degrees of freedom.

    The sum ``stats.chi2_contingency(table, correction=False)`` computes, written out: scipy's
    wrapper costs ~350 us a call against ~10 us for the sum, and every categorical window pays it
    twice (the test and Cramér's V).
    """
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    return float(((table - expected) ** 2 / expected).sum()), table.shape[1] - 1


@functools.lru_cache(maxsize=256)
def _chi2_line(alpha: float, dof: int) -> float:
    return float(stats.chi2.isf(alpha, dof))


class UnseenRateTest(NullLineTest):
    """Rise of the share of categories the reference does not know (its "other" bucket)."""

    name = "unseen_rate"
    kinds = frozenset({"categorical"})

    def __init__(self, warning: float = 0.05, critical: float = 0.2, alpha: float = 0.0) -> None:
        super().__init__(warning, critical, alpha)

    def score(self, reference: Reference, window: Window) -> Score:
        assert isinstance(reference, CategoricalReference) and isinstance(window, CategoricalWindow)
        present = int(window.counts.sum())
        unseen = float(window.counts[-1] / present) if present else 0.0
        floor = 0.0
        if self.alpha:
            hits = int(round(reference.other_share * reference.present))
            floor = nulls.share_rise_line(self.alpha, hits, reference.present, present)
        return Score(unseen - reference.other_share, floor=floor)


class NullRateTest(NullLineTest):
    """Rise of the missing-value share over the reference's."""

    name = "null_rate"
    kinds = frozenset({"numeric", "categorical"})

    def __init__(self, warning: float = 0.1, critical: float = 0.3, alpha: float = 0.0) -> None:
        super().__init__(warning, critical, alpha)

    def score(self, reference: Reference, window: Window) -> Score:
        present = window.values.size if isinstance(window, NumericWindow) else int(window.counts.sum())
        rows = present + window.missing
        floor = 0.0
        if self.alpha:
            floor = nulls.share_rise_line(self.alpha, reference.missing, _present(reference) + reference.missing, rows)
        return Score(window.missing / rows - float(reference.summary.get("null_rate", 0.0)) if rows else 0.0,
                     floor=floor)  # fmt: skip


class OutOfRangeTest(NullLineTest):
    """Share of a window's values outside the reference's range.

    The range is the reference's quantiles at ``quantile`` and ``1 - quantile``, widened on
    each side by ``margin`` times the span between them (``NumericReference.value_range``):
    a unit change, a sentinel such as -999 or a wave of garbage lands outside it while the
    distribution tests may still call the bulk of the window stable. Under a budget its null
    line is the share a stable window reaches with probability ``alpha`` given how many
    reference values lie beyond the quantiles (``nulls.share_rise_line``); the margin only
    makes a stable window's share smaller, so the line is conservative.
    """

    name = "out_of_range"
    kinds = frozenset({"numeric"})

    def __init__(self, warning: float = 0.01, critical: float = 0.1, alpha: float = 0.0, quantile: float = 0.001,
                 margin: float = 0.1) -> None:  # fmt: skip
        super().__init__(warning, critical, alpha)
        for name, value in (("quantile", quantile), ("margin", margin)):
            require(isinstance(value, (int, float)) and not isinstance(value, bool), name, value, "a number")
        require(0 <= quantile < 0.5, "quantile", quantile, "in [0, 0.5)")
        require(margin >= 0, "margin", margin, ">= 0")
        self.quantile, self.margin = float(quantile), float(margin)

    @property
    def params(self) -> dict[str, Any]:
        return {**super().params, "quantile": self.quantile, "margin": self.margin}

    def score(self, reference: Reference, window: Window) -> Score:
        assert isinstance(reference, NumericReference) and isinstance(window, NumericWindow)
        values = window.values
        if not values.size:
            return Score(0.0)
        low, high, beyond = derived(reference, ("range", self.quantile, self.margin),
                                    lambda: reference.value_range(self.quantile, self.margin))
        outside = int(np.searchsorted(values, low, side="left") + values.size - np.searchsorted(values, high, "right"))
        floor = 0.0
        if self.alpha:
            count = _present(reference)
            floor = beyond / count + nulls.share_rise_line(self.alpha, beyond, count, values.size)
        return Score(outside / values.size, floor=floor)


TESTS: dict[str, type[WindowTest]] = {
    test.name: test
    for test in (PSITest, KSTest, WassersteinTest, JensenShannonTest, ChiSquareTest, UnseenRateTest, NullRateTest,
                 OutOfRangeTest)
}  # fmt: skip
