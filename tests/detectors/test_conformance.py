"""Every registered detector keeps the detector contract (``detectors.base``).

The cases are generated from ``detectors.registry.REGISTRY``: one per
(detector, input kind), so a detector added there is checked here without
further wiring. Each gets a seeded stream of its input kind that changes at
``SHIFT`` (numeric: N(0, 1) -> N(1.5, 1); binary: error rate 0.1 -> 0.4;
categorical: a new mix with unseen labels), and windowed detectors a seeded
reference.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np
import pytest

from detectors import SnapshotError
from detectors.base import Verdict
from detectors.reference import CategoricalReference, NumericReference
from detectors.registry import REGISTRY, DetectorSpec

N = 2000
SHIFT = 1000
SIZE, STEP = 200, 100  # windowed detectors: sliding windows, so verdicts come often
LABELS = np.array(["a", "b", "c", "d"], dtype=object)

NUMERIC_REFERENCE = NumericReference.build(np.random.default_rng(1).normal(size=3000), 10)
CATEGORICAL_REFERENCE = CategoricalReference.build(
    list(np.random.default_rng(2).choice(LABELS, size=3000, p=[0.4, 0.3, 0.2, 0.1])), 10
)

CASES = [(name, kind) for name, spec in REGISTRY.items() for kind in spec.input_kinds]
IDS = [f"{name}-{kind}" for name, kind in CASES]
case = pytest.mark.parametrize(("name", "kind"), CASES, ids=IDS)


def stream(kind: str, windowed: bool) -> np.ndarray:
    rng = np.random.default_rng(7)
    if kind == "numeric":
        values = np.concatenate([rng.normal(size=SHIFT), rng.normal(1.5, 1.0, size=N - SHIFT)])
        if windowed:  # windowed tests take NaN as missing; more go missing after the shift
            values[SHIFT:][rng.random(N - SHIFT) < 0.25] = np.nan
        return values
    if kind == "binary":
        return np.concatenate([rng.random(SHIFT) < 0.1, rng.random(N - SHIFT) < 0.4]).astype(np.float64)
    before = rng.choice(LABELS, size=SHIFT, p=[0.4, 0.3, 0.2, 0.1])
    after = rng.choice(np.array(["a", "b", "c", "d", "y", "z"], dtype=object), size=N - SHIFT,
                       p=[0.1, 0.2, 0.2, 0.2, 0.15, 0.15])  # fmt: skip
    after[rng.random(N - SHIFT) < 0.25] = None
    return np.concatenate([before, after])


#: Parameters a detector is built with here unless a test names others: out_of_range judges a range,
#: so the stream's mean shift must move values past it (its 5% quantiles, no margin).
CASE_PARAMS: dict[str, dict[str, Any]] = {"out_of_range": {"quantile": 0.05, "margin": 0.0, "warning": 0.25,
                                                           "critical": 0.4}}


def build(spec: DetectorSpec, kind: str, **params: Any) -> Any:
    params = {**CASE_PARAMS.get(spec.name, {}), **params}
    if spec.windowed:
        reference = NUMERIC_REFERENCE if kind == "numeric" else CATEGORICAL_REFERENCE
        return spec.build(reference=reference, **{"size": SIZE, "step": STEP, **params})
    return spec.build(**params)


Row = tuple[int, float, float, float | None, str | None, float | None, str]


def feed(detector: Any, values: np.ndarray, batch: int, offset: int = 0) -> list[Row]:
    """Feed ``values`` in batches; every verdict as (global index, statistic, threshold, p, severity, shift, test)."""
    rows: list[Row] = []
    for start in range(0, len(values), batch):
        chunk = values[start : start + batch]
        verdicts = detector.update(chunk)
        assert isinstance(verdicts, list)
        for verdict in verdicts:
            assert isinstance(verdict, Verdict)
            assert 0 <= verdict.position < len(chunk)
            rows.append((offset + start + verdict.position, verdict.statistic, verdict.threshold, verdict.p_value,
                         verdict.severity, verdict.shift, verdict.test))  # fmt: skip
    return rows


def packed(detector: Any) -> bytes:
    return msgpack.packb(detector.snapshot(), use_bin_type=True)


def results(detector: Any) -> tuple[Any, ...]:
    return detector.drift_detected, detector.statistic, detector.threshold, detector.p_value


@pytest.fixture(scope="module")
def straight() -> dict[tuple[str, str], tuple[list[Row], bytes]]:
    """Verdicts and final snapshot of each detector fed its whole stream at once."""
    out = {}
    for name, kind in CASES:
        spec = REGISTRY[name]
        detector = build(spec, kind)
        out[name, kind] = feed(detector, stream(kind, spec.windowed), N), packed(detector)
    return out


# -- update -------------------------------------------------------------------


@case
def test_verdicts_do_not_depend_on_the_batch_size(name: str, kind: str, straight) -> None:
    spec = REGISTRY[name]
    values = stream(kind, spec.windowed)
    expected, final = straight[name, kind]
    drifts = [row[0] for row in expected if row[4] is not None]
    assert any(index >= SHIFT for index in drifts), "the change in the stream goes unnoticed"
    if spec.windowed:
        # one verdict per window, every STEP values once the first window is full
        assert [row[0] for row in expected] == list(range(SIZE - 1, N, STEP))
        # every window wholly after the change is flagged
        assert {row[0] for row in expected if row[0] >= SHIFT + SIZE - 1} <= set(drifts)
    else:
        assert drifts and drifts[0] >= SHIFT, "a change detector fired on the stable part"
    for batch in (1, 7, 500):
        detector = build(spec, kind)
        assert feed(detector, values, batch) == expected, f"batch size {batch}"
        assert packed(detector) == final, f"batch size {batch}"


@case
def test_readable_results_are_the_last_verdicts_and_read_only(name: str, kind: str) -> None:
    spec = REGISTRY[name]
    detector = build(spec, kind)

    def check_types() -> None:
        drift, statistic, threshold, p_value = results(detector)
        assert type(drift) is bool
        assert type(statistic) is float and type(threshold) is float
        assert p_value is None or type(p_value) is float

    check_types()  # before any value
    seen = 0
    for value in stream(kind, spec.windowed):
        verdicts = detector.update(np.array([value], dtype=object if kind == "categorical" else np.float64))
        check_types()
        if verdicts:
            seen += 1
            last = verdicts[-1]
            assert detector.drift_detected == any(v.drift for v in verdicts)
            assert (detector.statistic, detector.threshold, detector.p_value) == (
                last.statistic, last.threshold, last.p_value)  # fmt: skip
        elif not spec.windowed:
            assert detector.drift_detected is False  # change detectors: drift is the event of one update
    assert seen
    for attribute in ("drift_detected", "statistic", "threshold", "p_value"):
        with pytest.raises(AttributeError):
            setattr(detector, attribute, 1.0)


# -- parameters ---------------------------------------------------------------

_COUNT = [0, -1, 2.5, "10", None, True]
_PROBABILITY = [0, 0.0, 1, 1.0, -0.5, 2.0, float("nan"), float("inf"), "0.01", None, True]
_POSITIVE = [0, 0.0, -1.0, float("nan"), "1.0", None, True]
_BOOL = [0, 1, "true", None]
#: Invalid values per parameter kind; every value in a list is invalid for every parameter of that kind.
DOMAINS = {"count": _COUNT, "probability": _PROBABILITY, "positive": _POSITIVE, "bool": _BOOL,
           "non_negative": [-0.1, -1, float("nan"), "0.1", None, True],
           "unit_interval_closed": [0, 0.0, -0.5, 1.5, 2.0, float("nan"), "1", None, True],
           "unit_interval_open_above": [-0.1, 1, 1.5, float("nan"), "0.1", None, True],
           "below_half": [-0.1, 0.5, 0.7, float("nan"), "0.1", None, True]}  # fmt: skip
#: Parameter kinds by (detector, parameter), then by parameter name alone.
PARAMETER_DOMAINS = {
    ("page_hinkley", "delta"): "non_negative",  # 0 is a valid tolerance
    ("page_hinkley", "alpha"): "unit_interval_closed",  # 1 means no forgetting
    ("page_hinkley", "threshold"): "positive",
    # the null line's alpha of the distance tests: 0 turns it off
    **{(test, "alpha"): "unit_interval_open_above" for test in ("psi", "jensen_shannon", "unseen_rate", "null_rate",
                                                                "out_of_range")},
    ("out_of_range", "quantile"): "below_half",
    ("out_of_range", "margin"): "non_negative",
    "delta": "probability",
    "alpha": "probability",
    "beta": "probability",
    "drift_confidence": "probability",
    "warning_confidence": "probability",
    "lambda_val": "probability",
    "clock": "count",
    "min_window_length": "count",
    "grace_period": "count",
    "min_instances": "count",
    "warm_start": "count",
    "two_sided_test": "bool",
    "warning_threshold": "positive",
    "drift_threshold": "positive",
    "warning": "positive",
    "critical": "positive",
    "critical_effect": "positive",
}
GENERIC_BAD = [-1, "not a number", None]  # for a parameter this table does not know yet


def bad_values(name: str, parameter: str) -> list[Any]:
    domain = PARAMETER_DOMAINS.get((name, parameter), PARAMETER_DOMAINS.get(parameter))
    return DOMAINS[domain] if domain else GENERIC_BAD


def unrefused(spec: DetectorSpec, kind: str, parameter: str, values: list[Any]) -> list[str]:
    """The values of ``parameter`` that do not raise a ValueError naming it."""
    wrong = []
    for value in values:
        try:
            build(spec, kind, **{parameter: value})
        except ValueError as exc:
            if not re.search(rf"\b{re.escape(parameter)}\b", str(exc)):
                wrong.append(f"{value!r}: {exc}")
        else:
            wrong.append(f"{value!r} accepted")
    return wrong


PARAMETER_CASES = [
    pytest.param(name, kind, parameter, id=f"{name}-{parameter}")
    for name, kind in dict((name, kind) for name, kind in CASES).items()  # one input kind is enough
    for parameter in REGISTRY[name].params
]


@pytest.mark.parametrize(("name", "kind", "parameter"), PARAMETER_CASES)
def test_a_bad_parameter_is_refused_by_name(name: str, kind: str, parameter: str) -> None:
    assert unrefused(REGISTRY[name], kind, parameter, bad_values(name, parameter)) == []


@pytest.mark.parametrize(("name", "kind"), [(n, k) for n, k in CASES if REGISTRY[n].windowed],
                         ids=[i for (n, _), i in zip(CASES, IDS, strict=True) if REGISTRY[n].windowed])  # fmt: skip
def test_a_bad_window_is_refused_by_name(name: str, kind: str) -> None:
    spec = REGISTRY[name]
    assert unrefused(spec, kind, "size", [1, 0, -5, 2.5, "100", None, True]) == []
    assert unrefused(spec, kind, "step", [0, -1, SIZE + 1, 2.5, "10", True]) == []


def test_every_parameter_has_known_bad_values() -> None:
    unknown = [(name, p) for name, spec in REGISTRY.items() for p in spec.params
               if (name, p) not in PARAMETER_DOMAINS and p not in PARAMETER_DOMAINS]  # fmt: skip
    assert not unknown, f"add these parameters to PARAMETER_DOMAINS: {unknown}"


@pytest.mark.parametrize(("name", "params"), [
    ("page_hinkley", {"delta": 0}), ("page_hinkley", {"alpha": 1.0}), ("page_hinkley", {"min_instances": 1}),
    ("adwin", {"clock": 1, "grace_period": 1, "min_window_length": 1}), ("ddm", {"warm_start": 1}),
    ("ddm", {"warning_threshold": 3.0, "drift_threshold": 3.0}), ("hddm_a", {"two_sided_test": True}),
    ("psi", {"warning": 0.2, "critical": 0.2}), ("ks", {"alpha": 0.5, "critical_effect": 1.0}),
])  # fmt: skip
def test_boundary_parameters_are_valid(name: str, params: dict[str, Any]) -> None:
    """The bad-value lists above stop where the valid values begin."""
    spec = REGISTRY[name]
    detector = build(spec, spec.input_kinds[0], **params)
    kept = detector.snapshot()["tests"][0][1] if spec.windowed else detector.snapshot()["params"]
    assert {key: kept[key] for key in params} == params


# -- snapshots ----------------------------------------------------------------

PLAIN = (dict, list, str, bytes, int, float, bool, type(None))


def non_plain(data: Any, path: str = "") -> Iterator[str]:
    if type(data) not in PLAIN:
        yield f"{path or '<root>'}: {type(data).__name__}"
    elif isinstance(data, dict):
        for key, value in data.items():
            if type(key) is not str:
                yield f"{path}: key {key!r}"
            yield from non_plain(value, f"{path}.{key}")
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from non_plain(value, f"{path}[{i}]")


@case
def test_snapshot_is_versioned_plain_data(name: str, kind: str) -> None:
    spec = REGISTRY[name]
    detector = build(spec, kind)
    values = stream(kind, spec.windowed)
    done = 0
    for cut in (0, SHIFT + 100, N):
        feed(detector, values[done:cut], 100)
        done = cut
        snapshot = detector.snapshot()
        assert list(non_plain(snapshot)) == []
        assert msgpack.unpackb(msgpack.packb(snapshot, use_bin_type=True), raw=False) == snapshot
        assert type(snapshot["v"]) is int
        if spec.windowed:
            assert snapshot["detector"] == "windowed"
            assert [test for test, _ in snapshot["tests"]] == [name]
        else:
            assert snapshot["detector"] == name


def cuts(expected: list[Row]) -> list[int]:
    """Where to interrupt a stream: early, mid-way, at the change, right after the first drift, at the end."""
    first_drift = next(row[0] for row in expected if row[4] is not None)
    return sorted({1, 450, SHIFT, first_drift + 1, N - 1})


@case
def test_restore_continues_exactly(name: str, kind: str, straight) -> None:
    spec = REGISTRY[name]
    values = stream(kind, spec.windowed)
    expected, final = straight[name, kind]
    for cut in cuts(expected):
        first = build(spec, kind)
        found = feed(first, values[:cut], 100)
        blob = packed(first)
        second = spec.restore(msgpack.unpackb(blob, raw=False))
        assert packed(second) == blob, f"restore changed the snapshot taken at {cut}"
        # drift_detected tells of the last update call; a restored detector has had none.
        assert results(second) == (False, *results(first)[1:]), f"restore changed the results at {cut}"
        found += feed(second, values[cut:], 100, offset=cut)
        assert found == expected, f"cut at {cut}"
        assert packed(second) == final, f"cut at {cut}"


@case
def test_snapshot_of_another_version_or_detector_is_refused(name: str, kind: str) -> None:
    spec = REGISTRY[name]
    detector = build(spec, kind)
    feed(detector, stream(kind, spec.windowed)[:700], 100)
    snapshot = detector.snapshot()
    others = {"adwin", "ddm", "windowed", "psi", name, "", None, 1} - {snapshot["detector"]}
    bad: list[Any] = [
        *(snapshot | {"v": v} for v in (0, snapshot["v"] + 1, 99, str(snapshot["v"]), 1.5, None, True)),
        *(snapshot | {"detector": other} for other in others),
        {k: v for k, v in snapshot.items() if k != "v"},
        {k: v for k, v in snapshot.items() if k != "detector"},
        None,
        [],
        "snapshot",
        b"\x00",
        1,
        list(snapshot.items()),
    ]
    # every other registered detector's snapshot (windowed detectors share one format)
    for other, other_spec in REGISTRY.items():
        if other != name and not (spec.windowed and other_spec.windowed):
            other_kind = other_spec.input_kinds[0]
            bad.append(build(other_spec, other_kind).snapshot())
    for data in bad:
        with pytest.raises(SnapshotError):
            spec.restore(data)


def tamperings(snapshot: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Copies of ``snapshot`` with one entry of the wrong type, truncated or missing.

    Every entry of the detector's own state is tampered with; the reference a
    windowed detector carries is replaced whole only (its own checks belong
    to tests/detectors/test_reference.py).
    """

    def paths(data: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any]]:
        if path:
            yield path, data
        if path[-1:] == ("reference",):
            return
        if isinstance(data, dict):
            for key, value in data.items():
                yield from paths(value, (*path, key))
        elif isinstance(data, list):
            for i, value in enumerate(data):
                yield from paths(value, (*path, i))

    def replaced(path: tuple[Any, ...], new: Any = None, delete: bool = False) -> dict[str, Any]:
        data = copy.deepcopy(snapshot)
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        if delete:
            del parent[path[-1]]
        else:
            parent[path[-1]] = new
        return data

    for path, value in paths(snapshot, ()):
        if path in (("v",), ("detector",)):
            continue  # test_snapshot_of_another_version_or_detector_is_refused
        where = ".".join(map(str, path))
        yield f"{where} = 12345" if isinstance(value, str) else f"{where} = 'tampered'", replaced(
            path, 12345 if isinstance(value, str) else "tampered")  # fmt: skip
        if isinstance(value, bytes) and value:
            yield f"{where} truncated", replaced(path, value[:-1])
        if isinstance(path[-1], str):
            yield f"del {where}", replaced(path, delete=True)


@case
def test_tampered_snapshot_is_refused(name: str, kind: str) -> None:
    spec = REGISTRY[name]
    detector = build(spec, kind)
    feed(detector, stream(kind, spec.windowed)[: SHIFT + 300], 100)
    snapshot = msgpack.unpackb(packed(detector), raw=False)
    accepted, other_errors, tried = [], [], 0
    for label, data in tamperings(snapshot):
        tried += 1
        try:
            spec.restore(data)
        except SnapshotError:
            continue
        except BaseException as exc:  # noqa: B036 - river's Rust side panics with a BaseException
            other_errors.append(f"{label}: {type(exc).__name__}: {exc}")
        else:
            accepted.append(label)
    assert tried > 10
    assert not accepted, f"tampered snapshots accepted: {accepted}"
    assert not other_errors, f"tampered snapshots raised other errors: {other_errors}"


@pytest.mark.parametrize(("name", "kind"), [(n, k) for n, k in CASES if REGISTRY[n].windowed],
                         ids=[i for (n, _), i in zip(CASES, IDS, strict=True) if REGISTRY[n].windowed])  # fmt: skip
def test_tampered_reference_or_window_position_is_refused(name: str, kind: str) -> None:
    spec = REGISTRY[name]
    detector = build(spec, kind)
    feed(detector, stream(kind, spec.windowed)[:450], 100)
    snapshot = detector.snapshot()
    reference = snapshot["reference"]
    bad = [
        {"next": -1},
        {"next": SIZE},
        {"fill": -1},
        {"fill": SIZE + 1},
        {"until": 0},
        {"until": SIZE + 1},
        {"size": SIZE + 1},
        {"ring": snapshot["ring"][:-8]},
        {"times": snapshot["times"] + b"\x00" * 8},
        {"reference": reference | {"kind": "other"}},
        {"reference": {}},
        {"last": [[0, 1.0, 1.0, None, "fatal", name]]},
    ]
    if kind == "numeric":
        bad += [{"reference": reference | {"items": reference["items"][:-1]}},
                {"reference": reference | {"weights": reference["weights"][:-8]}},
                {"reference": reference | {"bins": 1}}]  # fmt: skip
    else:
        bad += [{"reference": reference | {"proportions": reference["proportions"][:-1]}}]
    for change in bad:
        with pytest.raises(SnapshotError):
            spec.restore(snapshot | change)


# -- wrong input --------------------------------------------------------------


def wrong_batches(spec: DetectorSpec, kind: str) -> list[Any]:
    two_d = np.zeros((3, 2))
    if kind == "categorical":
        return [np.array([1, 2], dtype=object), np.array(["a", 3.5], dtype=object),
                np.array(["a", float("nan")], dtype=object), np.array([["a", "b"], ["c", "d"]], dtype=object),
                np.array([b"a"], dtype=object)]  # fmt: skip
    if kind == "binary":
        return [np.array([0.0, 0.5]), np.array([1.0, 2.0]), np.array([0.0, -1.0]), np.array([1.0, np.nan]),
                np.array([0.0, np.inf]), two_d, np.array(["x"])]  # fmt: skip
    bad = [np.array([0.1, np.inf]), np.array([-np.inf]), two_d, np.array(["x"])]
    if not spec.windowed:  # windowed tests take NaN as a missing value
        bad.append(np.array([0.2, np.nan]))
    return bad


@case
def test_wrong_input_is_refused_without_changing_the_state(name: str, kind: str) -> None:
    spec = REGISTRY[name]
    values = stream(kind, spec.windowed)
    detector = build(spec, kind)
    feed(detector, values[: SHIFT + 250], 250)
    before, readable = packed(detector), results(detector)
    for batch in wrong_batches(spec, kind):
        good_then_bad = np.concatenate([values[:5], batch]) if batch.ndim == 1 else batch
        with pytest.raises(ValueError):
            detector.update(good_then_bad)
        assert packed(detector) == before, repr(batch)
        assert results(detector) == readable, repr(batch)
    # and it carries on as if nothing had happened
    twin = build(spec, kind)
    feed(twin, values[: SHIFT + 250], 250)
    assert feed(detector, values[SHIFT + 250 :], 250) == feed(twin, values[SHIFT + 250 :], 250)


@case
def test_empty_batch_changes_nothing(name: str, kind: str, straight) -> None:
    spec = REGISTRY[name]
    values = stream(kind, spec.windowed)
    expected, _ = straight[name, kind]
    first_drift = next(row[0] for row in expected if row[4] is not None)
    empty = np.array([], dtype=object if kind == "categorical" else np.float64)
    detector = build(spec, kind)
    done = 0
    for cut in (0, first_drift + 1, N):  # fresh, right after a detection, at the end
        feed(detector, values[done:cut], N)
        done = cut
        before, readable = packed(detector), results(detector)
        assert detector.update(empty) == []
        assert detector.update([]) == []
        assert packed(detector) == before and results(detector) == readable
