"""The detectors' fast paths give the results of the plain computations they replace, value for value."""

from __future__ import annotations

import gc
from collections import Counter

import numpy as np
import pytest
from river.drift import ADWIN
from scipy import stats

from detectors import two_sample
from detectors import window as window_module
from detectors.reference import CategoricalReference, NumericReference
from detectors.streaming import AdwinDetector
from detectors.two_sample import CategoricalWindow, ChiSquareTest, KSTest, NumericWindow, OutOfRangeTest, Score
from detectors.window import WindowedDetector


def _stream_with_changes(rng: np.random.Generator, size: int) -> np.ndarray:
    """Normal values whose mean and spread jump every few thousand values."""
    values, made = [], 0
    while made < size:
        run = int(rng.integers(500, 6000))
        values.append(rng.normal(rng.normal(0, 0.6), rng.uniform(0.5, 2.0), run))
        made += run
    return np.concatenate(values)[:size]


def test_ks_judges_as_with_its_p_value_computed() -> None:
    """A KS score's p-value is computed only when read; a window judged without it (its D far
    under the line) gets the verdict the p-value gives, and every read p-value is kstwo's."""
    rng = np.random.default_rng(5)
    reference = NumericReference.build(rng.standard_normal(5000), 10)
    test = KSTest()
    skipped = 0
    for shift in np.linspace(0.0, 0.4, 81):
        for alpha in (1e-4, 1e-7):
            values = np.sort(rng.normal(shift, 1.0, 1000))
            score = test.score(reference, NumericWindow(values, 0, reference.bin_counts(values)))
            assert "p_value" in score.__dict__["_lazy"]
            severity, line = test.judge(score, alpha)
            skipped += "p_value" in score.__dict__["_lazy"]
            p_value = float(np.clip(stats.kstwo.sf(score.statistic, score.size), 0.0, 1.0))
            eager = Score(score.statistic, p_value, score.effect, score.size)
            assert (severity, line) == test.judge(eager, alpha)
            assert score.p_value == pytest.approx(p_value, rel=1e-12, abs=1e-300)
    assert 0 < skipped < 162  # both paths ran


def test_chi_square_judges_as_with_its_effect_computed() -> None:
    """Cramér's V is computed only when read (past the p-value line): the verdicts are those of the
    eager score, and the effect read is ``cramers_v``'s."""
    rng = np.random.default_rng(10)
    shares = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
    reference = CategoricalReference.from_counts(Counter(dict(zip("abcde", (shares * 5000).astype(int), strict=True))),
                                                 0, 50)  # fmt: skip
    test = ChiSquareTest()
    computed = 0
    for mix in np.linspace(0.0, 1.0, 41):
        counts = np.append(rng.multinomial(1000, (1 - mix) * shares + mix * shares[::-1]), 0)
        score = test.score(reference, CategoricalWindow(counts, 0))
        severity, line = test.judge(score)
        computed += "effect" not in score.__dict__["_lazy"]
        eager = Score(score.statistic, score.p_value, two_sample.cramers_v(reference.proportions, counts), score.size)
        assert (severity, line) == test.judge(eager)
        assert score.effect == eager.effect
    assert 0 < computed < 41  # both paths ran


def _plain_ks(items: np.ndarray, weights: np.ndarray, window_sorted: np.ndarray) -> float:
    """KS D as it was computed before: both CDFs at the union of the points, searched unsorted."""
    points = np.concatenate([items, window_sorted])
    reference_cdf = np.concatenate(([0.0], np.cumsum(weights))) / weights.sum()
    f_ref = reference_cdf[np.searchsorted(items, points, side="right")]
    f_win = np.searchsorted(window_sorted, points, side="right") / window_sorted.size
    return float(np.max(np.abs(f_ref - f_win)))


@pytest.mark.parametrize("decimals", [None, 1, 0])  # continuous values, then many ties
def test_ks_statistic_is_the_plain_supremum_to_the_bit(decimals: int | None) -> None:
    rng = np.random.default_rng(8)
    for size in (50, 5000, 20_000):  # exact and compacted references
        values = rng.standard_normal(size)
        if decimals is not None:
            values = values.round(decimals)
        reference = NumericReference.build(values, 10)
        for shift in (0.0, 0.1, 0.5, 3.0):
            for n in (1, 2, 7, 1000):
                window = np.sort(rng.normal(shift, 1.0, n))
                if decimals is not None:
                    window = window.round(decimals)
                plain = _plain_ks(reference.items, reference.weights, window)
                assert two_sample.ks_statistic(reference.items, reference.weights, window) == plain


@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_bin_counts_of_a_sorted_window_are_the_reference_s(decimals: int | None) -> None:
    rng = np.random.default_rng(9)
    for size in (30, 5000):
        values = rng.standard_normal(size)
        reference = NumericReference.build(values if decimals is None else values.round(decimals), 10)
        for n in (0, 1, 9, 1000):
            window = np.sort(rng.normal(0.3, 1.2, n))
            window = window if decimals is None else window.round(decimals)  # values on the edges
            counts = window_module._bin_counts(reference.edges, window)
            assert counts.dtype == np.int64 and counts.tolist() == reference.bin_counts(window).tolist()


def test_window_keeps_the_last_p_value_for_its_snapshot() -> None:
    rng = np.random.default_rng(6)
    reference = NumericReference.build(rng.standard_normal(5000), 10)
    window = WindowedDetector(reference, [KSTest()], 1000)
    values = rng.normal(0.05, 1.0, 3000)
    window.update(values)
    (verdict,) = window.verdicts
    d = two_sample.ks_statistic(reference.items, reference.weights, np.sort(values[-1000:]))
    assert verdict.statistic == d
    size = round(5000 * 1000 / 6000)
    assert verdict.p_value == float(np.clip(stats.kstwo._sf(d, size), 0.0, 1.0))
    assert window.snapshot()["last"][0][3] == verdict.p_value
    window.update(values)
    assert window._last_evaluation is not None and window._last_evaluation.summarize is None  # no window values held


def test_reference_derivations_are_kept_per_reference_and_dropped_with_it() -> None:
    rng = np.random.default_rng(7)
    reference = NumericReference.build(rng.standard_normal(5000), 10)
    test = OutOfRangeTest(alpha=1e-4)
    values = np.sort(rng.normal(0.0, 3.0, 1000))
    score = test.score(reference, NumericWindow(values, 0, reference.bin_counts(values)))
    low, high, beyond = reference.value_range(test.quantile, test.margin)
    outside = int(((values < low) | (values > high)).sum())
    assert score.statistic == outside / values.size
    assert id(reference) in two_sample._DERIVED
    ident = id(reference)
    del reference
    gc.collect()
    assert ident not in two_sample._DERIVED


class _ListBlocksAdwin(AdwinDetector):
    """The block bookkeeping as it was before numpy arrays held it: lists, appended one block at a time."""

    def __init__(self, **params: float) -> None:
        super().__init__(**params)  # type: ignore[arg-type]
        self._blocks = []  # type: ignore[assignment]

    def update(self, values: np.ndarray) -> list:  # type: ignore[override]
        x = np.asarray(values, dtype=np.float64)
        found = []
        start = 0
        while start < x.size:
            if self._river.drift_detected:
                self._river._reset()
                self._blocks = []  # type: ignore[assignment]
                self._open = [0.0, 0.0, 0.0]
            taken, changed = self._feed_river(x[start:])
            if changed:
                self._old_add_to_blocks(taken[:-1])
                self._add_to_open(taken[-1:])
                self._cut = self._old_best_split()
                found.append((start + taken.size - 1, *self._cut))
                self._old_close_full_block()
            else:
                self._old_add_to_blocks(taken)
            start += taken.size
        return found

    def _old_close_full_block(self) -> None:
        if self._open[0] >= self.clock:
            full, self._open = self._open, [0.0, 0.0, 0.0]
            self._old_append_full([full])

    def _old_append_full(self, full: list[list[float]]) -> None:
        blocks = self._blocks
        for block in full:
            blocks.append(block)  # type: ignore[attr-defined]
            if len(blocks) > self._MAX_BLOCKS:
                pairs = zip(blocks[0::2], blocks[1::2], strict=False)
                merged = [[a[0] + b[0], a[1] + b[1], a[2] + b[2]] for a, b in pairs]
                blocks = self._blocks = merged + [blocks[-1]] if len(blocks) % 2 else merged  # type: ignore[assignment]

    def _old_add_to_blocks(self, x: np.ndarray) -> None:
        clock = self.clock
        fill = min(x.size, clock - int(self._open[0]))
        self._add_to_open(x[:fill])
        self._old_close_full_block()
        rest = x[fill:]
        full = rest.size // clock
        if full:
            rows = rest[: full * clock].reshape(full, clock)
            sums = np.cumsum(rows, axis=1)[:, -1].tolist()
            squares = np.cumsum(rows * rows, axis=1)[:, -1].tolist()
            self._old_append_full([[float(clock), t, s] for t, s in zip(sums, squares, strict=True)])
        self._add_to_open(rest[full * clock :])

    def _old_best_split(self) -> tuple[float, float, float]:
        self._blocks, saved = np.asarray(self._blocks, dtype=np.float64).reshape(-1, 3), self._blocks
        try:
            return self._best_split()
        finally:
            self._blocks = saved


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_adwin_blocks_in_arrays_match_the_list_bookkeeping(seed: int) -> None:
    """Long streams with changes, cut into batches of random sizes: the same change points, cuts
    and blocks as block-by-block lists (blocks merge past 256 of them, so merges are covered)."""
    rng = np.random.default_rng(seed)
    values = np.concatenate((_stream_with_changes(rng, 100_000), rng.standard_normal(60_000)))  # a stable end: merges
    fast, plain = AdwinDetector(), _ListBlocksAdwin()
    start, changes = 0, 0
    while start < values.size:
        stop = min(values.size, start + int(rng.integers(1, 12_000)))
        verdicts = fast.update(values[start:stop])
        assert [(v.position, v.statistic, v.threshold, v.shift) for v in verdicts] == plain.update(values[start:stop])
        assert fast._blocks.tolist() == plain._blocks and fast._open == plain._open
        changes += len(verdicts)
        start = stop
    assert changes >= 10
    assert fast.snapshot() == {**plain.snapshot(), "blocks": np.asarray(plain._blocks, "<f8").tobytes()}


@pytest.mark.parametrize("seed", [4, 5])
def test_adwin_feeds_river_as_value_by_value_does(seed: int) -> None:
    """river's ADWIN is fed up to a change and no further: its state (bytes) at each batch's end and
    the changes are those of river fed one value at a time."""
    rng = np.random.default_rng(seed)
    values = _stream_with_changes(rng, 60_000)
    fast, river = AdwinDetector(), ADWIN(delta=AdwinDetector().delta)
    start, found, expected = 0, [], []
    while start < values.size:
        stop = min(values.size, start + int(rng.integers(1, 5000)))
        found += [start + v.position for v in fast.update(values[start:stop])]
        for i in range(start, stop):
            river.update(float(values[i]))
            if river.drift_detected:
                expected.append(i)
        assert fast._river._helper.__getstate__() == river._helper.__getstate__()
        start = stop
    assert found == expected and len(found) >= 5
