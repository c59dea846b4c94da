"""A current window compared with a reference by one or more two-sample tests.

The window is a ring of the last ``size`` values. It is judged every ``step``
values once full: ``step == size`` gives tumbling windows (the default; the
windows do not overlap, so their false alarms add up simply), ``step < size``
sliding ones (more evaluations of overlapping data: more false alarms at the
same lines, see the detection benchmark). Categorical values are kept as
bucket codes of the reference, so memory is ``size`` integers whatever the
cardinality of the stream. A tumbling window holds exactly the values since
the last judgement, so the earliest time of its values is a running minimum;
only sliding windows keep a time per value.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from detectors import SnapshotError
from detectors.base import InputKind, Severity, Verdict, check_count, check_snapshot, require
from detectors.reference import (
    OTHER_CATEGORY,
    CategoricalReference,
    NumericReference,
    Reference,
    categorical_summary,
    numeric_summary,
    reference_from_plain,
)
from detectors.two_sample import TESTS, CategoricalWindow, NullLineTest, NumericWindow, Score, Window, WindowTest

_VERSION = 3  # 2: a tumbling window saves its earliest time, not a ring of times; 3: null-line alphas


@dataclass(frozen=True)
class Coded:
    """Categorical values as integer codes (-1 for missing) into ``names``."""

    codes: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, rows: slice) -> Coded:
        return Coded(self.codes[rows], self.names)

    def labels(self) -> list[str | None]:
        """The category name of each value, None where missing."""
        table = np.array([*self.names, None], dtype=object)  # code -1 picks the None at the end
        return table[self.codes].tolist()


@dataclass(frozen=True)
class Evaluation:
    """One judged window: the raw scores, the verdicts and (when asked) a summary."""

    position: int  # index in the batch of the value that closed the window
    scores: dict[str, Score]
    judged: list[tuple[str, Severity | None, float]]  # per test: its severity and line
    count: int  # values in the window
    start_time: float  # earliest time of the window's values (0 when no times were given)
    summarize: Callable[[], dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    @property
    def drift(self) -> bool:
        return any(severity is not None for _, severity, _ in self.judged)

    @cached_property
    def verdicts(self) -> list[Verdict]:
        """Each test's verdict; built on first read, as it reads the p-values (KS's are computed lazily)."""
        return [Verdict(self.position, self.scores[name].statistic, line, self.scores[name].p_value, severity,
                        test=name) for name, severity, line in self.judged]  # fmt: skip

    @cached_property
    def summary(self) -> dict[str, Any] | None:
        """Mean, quantiles or category shares of the window; computed on first use (alerts
        need it, most windows do not, and quantiles of every window cost more than the tests)."""
        return self.summarize() if self.summarize is not None else None


def _bin_counts(edges: np.ndarray, present_sorted: np.ndarray) -> np.ndarray:
    """``NumericReference.bin_counts`` of sorted values: the values under each edge, a search per edge
    rather than per value (bin ``i`` holds the values in ``[edges[i - 1], edges[i])``)."""
    bounds = np.empty(edges.size + 2, dtype=np.int64)
    bounds[0], bounds[-1] = 0, present_sorted.size
    bounds[1:-1] = np.searchsorted(present_sorted, edges, side="left")
    return bounds[1:] - bounds[:-1]


class WindowedDetector:
    """Ring window + two-sample tests against a fixed reference."""

    def __init__(self, reference: Reference, tests: Sequence[WindowTest], size: int = 1000,
                 step: int | None = None) -> None:  # fmt: skip
        check_count("size", size, 2)
        step = size if step is None else step
        check_count("step", step)
        require(step <= size, "step", step, f"<= size ({size})")
        require(bool(tests), "tests", list(tests), "at least one test")
        self.input_kind: InputKind = "numeric" if isinstance(reference, NumericReference) else "categorical"
        for test in tests:
            require(self.input_kind in test.kinds, "tests", test.name, f"a test for {self.input_kind} data")
        self.reference = reference
        self.tests = list(tests)
        self.name = tests[0].name if len(tests) == 1 else "windowed"
        self.size, self.step = size, step
        numeric = self.input_kind == "numeric"
        self._ring = np.full(size, np.nan) if numeric else np.full(size, -1, dtype=np.int64)
        # Sliding windows: the time of every value in the ring; tumbling: the earliest since the last judgement.
        self._times = np.zeros(size) if step < size else None
        self._earliest = math.inf
        self._next = 0  # ring position of the next value
        self._fill = 0
        self._until = size  # values until the next evaluation
        self._last_verdicts: list[Verdict] = []  # of the last judged window: the readable results
        self._last_evaluation: Evaluation | None = None  # ... until they are read
        self._drift = False  # whether the last update judged a window as drift

    # -- results -----------------------------------------------------------

    @property
    def _last(self) -> list[Verdict]:
        if self._last_evaluation is not None:
            self._last_verdicts, self._last_evaluation = self._last_evaluation.verdicts, None
        return self._last_verdicts

    @property
    def drift_detected(self) -> bool:
        return self._drift

    @property
    def statistic(self) -> float:
        return self._last[0].statistic if self._last else 0.0

    @property
    def threshold(self) -> float:
        return self._last[0].threshold if self._last else 0.0

    @property
    def p_value(self) -> float | None:
        return self._last[0].p_value if self._last else None

    @property
    def verdicts(self) -> list[Verdict]:
        """Every test's verdict on the last judged window (empty before the first): what status shows."""
        return list(self._last)

    @property
    def fill(self) -> int:
        return self._fill

    @property
    def until_next(self) -> int:
        """Values still to come before the next judgement."""
        return self._until

    def recent(self) -> np.ndarray:
        """The window's values (codes for categories), oldest first."""
        order = (self._next - self._fill + np.arange(self._fill)) % self.size
        return self._ring[order]

    # -- the stream --------------------------------------------------------

    def update(self, values: np.ndarray | Sequence[Any]) -> list[Verdict]:
        return [verdict for evaluation in self.evaluate(values) for verdict in evaluation.verdicts]

    def evaluate(self, values: np.ndarray | Sequence[Any] | Coded, times: np.ndarray | None = None,
                 summaries: bool = False) -> list[Evaluation]:  # fmt: skip
        """Feed values (NaN or None for missing); judge every window they complete."""
        column = self._encode(values)
        n = column.size
        if times is not None:
            times = np.asarray(times, dtype=np.float64)
            if times.shape != (n,) or not np.isfinite(times).all():
                raise ValueError(f"times must be {n} finite numbers, one per value")
        if n == 0:
            return []  # nothing happened: the last results stand
        found: list[Evaluation] = []
        start = 0
        while start < n:
            take = min(n - start, self._until, self.size)
            # Ring positions next..next+take, wrapping: a slice when they do not wrap (tumbling windows).
            where: slice | np.ndarray = slice(self._next, self._next + take)
            if self._next + take > self.size:
                where = (self._next + np.arange(take)) % self.size
            self._ring[where] = column[start : start + take]
            if self._times is not None:
                self._times[where] = times[start : start + take] if times is not None else 0.0
            else:
                earliest = float(times[start : start + take].min()) if times is not None else 0.0
                self._earliest = min(self._earliest, earliest)
            self._next = (self._next + take) % self.size
            self._fill = min(self.size, self._fill + take)
            self._until -= take
            start += take
            if self._until == 0:
                found.append(self._judge(start - 1, summaries))
                self._until = self.step
                self._earliest = math.inf  # a tumbling window starts empty
        if found:
            # Without its summary's closure, which holds the window's values: kept until read, not beyond.
            last = found[-1]
            self._last_evaluation = Evaluation(last.position, last.scores, last.judged, last.count, last.start_time)
        self._drift = any(evaluation.drift for evaluation in found)
        return found

    def _encode(self, values: np.ndarray | Sequence[Any] | Coded) -> np.ndarray:
        if isinstance(values, Coded):
            if not isinstance(self.reference, CategoricalReference):
                raise ValueError(f"{self.name} takes numbers, not category codes")
            # One lookup per distinct category, then one gather: the batch is already coded.
            buckets = np.append(self.reference.codes(values.names), -1)  # code -1 (missing) picks the last
            return buckets[values.codes]
        if isinstance(self.reference, NumericReference):
            column = np.asarray(values, dtype=np.float64)
            if column.ndim != 1:
                raise ValueError(f"{self.name} takes a 1-D array, got shape {column.shape}")
            if np.isinf(column).any():
                raise ValueError(f"{self.name} takes finite numbers or NaN for missing")
            return column
        if isinstance(values, (str, bytes)):
            raise ValueError(f"{self.name} takes a sequence of category strings, not one string")
        labels = list(values)
        if not set(map(type, labels)) <= {str, type(None)}:  # checked in C: this runs for every value
            raise ValueError(f"{self.name} takes category strings or None for missing")
        return self.reference.codes(labels)

    def _window(self) -> Window:
        ring = self._ring[: self._fill] if self._fill < self.size else self._ring
        if isinstance(self.reference, NumericReference):
            present = np.sort(ring[~np.isnan(ring)])
            return NumericWindow(present, int(ring.size - present.size), _bin_counts(self.reference.edges, present))
        present_codes = ring[ring >= 0]
        counts = np.bincount(present_codes, minlength=len(self.reference.categories) + 1)
        return CategoricalWindow(counts, int(ring.size - present_codes.size))

    def _judge(self, position: int, with_summary: bool) -> Evaluation:
        window = self._window()
        scores: dict[str, Score] = {}
        judged: list[tuple[str, Severity | None, float]] = []
        for test in self.tests:
            score = test.score(self.reference, window)
            severity, line = test.judge(score)
            scores[test.name] = score
            judged.append((test.name, severity, line))
        return Evaluation(
            position=position,
            scores=scores,
            judged=judged,
            count=self._fill,
            start_time=self._start_time(),
            summarize=(lambda: self._summary(window)) if with_summary else None,
        )

    def _start_time(self) -> float:
        if self._times is None:
            return self._earliest if self._earliest != math.inf else 0.0
        return float(self._times[: self._fill].min()) if self._fill else 0.0

    def _summary(self, window: Window) -> dict[str, Any]:
        if isinstance(window, NumericWindow):
            return numeric_summary(window.values, window.missing)
        assert isinstance(self.reference, CategoricalReference)
        names = [*self.reference.categories, OTHER_CATEGORY]
        counts = Counter({names[i]: int(c) for i, c in enumerate(window.counts) if c})
        return categorical_summary(counts, window.missing)

    # -- snapshots ---------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        numeric = isinstance(self.reference, NumericReference)
        return {
            "detector": "windowed",
            "v": _VERSION,
            "reference": self.reference.to_plain(),
            "tests": [[test.name, test.params] for test in self.tests],
            "size": self.size,
            "step": self.step,
            "ring": self._ring.astype("<f8" if numeric else "<i8").tobytes(),
            "times": None if self._times is None else self._times.astype("<f8").tobytes(),
            "earliest": None if self._earliest == math.inf else self._earliest,
            "next": self._next,
            "fill": self._fill,
            "until": self._until,
            # Positions and the drift flag tell of the last update call, not of the stream: left out
            # (positions saved as 0), so the same stream cut into other batches saves the same bytes.
            "last": [[0, v.statistic, v.threshold, v.p_value, v.severity, v.test] for v in self._last],
        }

    @classmethod
    def restore(cls, data: dict[str, Any]) -> WindowedDetector:
        data = _upgrade(data)
        try:
            reference = reference_from_plain(data["reference"])
            tests = [TESTS[name](**params) for name, params in data["tests"]]
            detector = cls(reference, tests, int(data["size"]), int(data["step"]))
            dtype = "<f8" if detector.input_kind == "numeric" else "<i8"
            ring = np.frombuffer(data["ring"], dtype=dtype)
            if ring.size != detector.size:
                raise ValueError("ring size does not match the window size")
            if detector._times is not None:
                times = np.frombuffer(data["times"], dtype="<f8")
                if times.size != detector.size:
                    raise ValueError("times size does not match the window size")
                if not np.isfinite(times).all():
                    raise ValueError("window times must be finite")
                detector._times = times.copy()
            elif data["times"] is not None:
                raise ValueError("a tumbling window keeps no times")
            earliest = data["earliest"]
            if earliest is not None and (type(earliest) not in (int, float) or not math.isfinite(earliest)):
                raise ValueError(f"the window's earliest time must be a finite number or None, got {earliest!r}")
            detector._earliest = math.inf if earliest is None else float(earliest)
            if detector.input_kind == "categorical":
                buckets = len(detector.reference.categories)  # type: ignore[union-attr]
                if ring.size and (ring.min() < -1 or ring.max() > buckets):
                    raise ValueError(f"ring codes must be in [-1, {buckets}]")
            elif np.isinf(ring).any():
                raise ValueError("ring values must be finite or NaN")
            detector._ring = ring.astype(detector._ring.dtype)
            detector._next, detector._fill, detector._until = int(data["next"]), int(data["fill"]), int(data["until"])
            if not (0 <= detector._next < detector.size and 0 <= detector._fill <= detector.size
                    and 1 <= detector._until <= detector.size):  # fmt: skip
                raise ValueError(f"ring position {detector._next}, fill {detector._fill} or countdown "
                                 f"{detector._until} out of range for a window of {detector.size}")  # fmt: skip
            for (name, params), test in zip(data["tests"], tests, strict=True):
                if set(params) != set(test.params):
                    raise ValueError(f"{name} parameters {sorted(params)} are not {sorted(test.params)}")
            detector._last_verdicts = [
                Verdict(int(p), float(s), float(t), None if pv is None else float(pv), sev, test=name)
                for p, s, t, pv, sev, name in data["last"]]  # fmt: skip
            if any(v.severity not in (None, "warning", "critical") or not isinstance(v.test, str)
                   for v in detector._last):  # fmt: skip
                raise ValueError("a last verdict has an unknown severity or test name")
        except SnapshotError:
            raise
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise SnapshotError(f"malformed windowed snapshot: {exc!r}") from exc
        return detector


def _upgrade(data: Any) -> dict[str, Any]:
    """An older snapshot as the current version: version 1 kept a ring of times for every window;
    version 2's distance tests had no null-line alpha (0: off)."""
    if isinstance(data, dict) and data.get("detector") == "windowed" and type(data.get("v")) is int and data["v"] == 1:
        try:
            data = dict(data, v=2, earliest=None)
            size, step = int(data["size"]), int(data["step"])
            if step >= size:  # tumbling: the earliest time of the values since the last judgement
                times = np.frombuffer(data.pop("times"), dtype="<f8")
                if times.size != size:
                    raise ValueError("times size does not match the window size")
                pending = size - int(data["until"])
                if pending:
                    data["earliest"] = float(times[(int(data["next"]) - 1 - np.arange(pending)) % size].min())
                data["times"] = None
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise SnapshotError(f"malformed windowed snapshot: {exc!r}") from exc
    if isinstance(data, dict) and data.get("detector") == "windowed" and type(data.get("v")) is int and data["v"] == 2:
        try:
            tests = [[name, {**params, "alpha": 0.0} if issubclass(TESTS[name], NullLineTest) else params]
                     for name, params in data["tests"]]  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"malformed windowed snapshot: {exc!r}") from exc
        data = dict(data, v=_VERSION, tests=tests)
    return check_snapshot(data, "windowed", _VERSION)
