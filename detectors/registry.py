"""Every detector driftstream offers, by name, with how to build and restore it.

This is the one place detectors are built from configuration: monitors ask it
for a feature's window tests and change detectors (``window_tests``,
``change_detectors``), with each line taken from the option named after it.
The conformance suite (tests/detectors/test_conformance.py) and the detection
benchmark (bench/detection.py) both run over this registry, so a detector
added here is checked and measured without further wiring.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from detectors.base import Detector, InputKind
from detectors.config import CHANGE_DETECTORS, MonitorConfig, named
from detectors.reference import Reference
from detectors.streaming import (
    AdwinDetector,
    DDMDetector,
    EDDMDetector,
    HDDMADetector,
    HDDMWDetector,
    PageHinkleyDetector,
    RiverDetector,
)
from detectors.two_sample import TESTS, WindowTest
from detectors.window import WindowedDetector


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    input_kinds: tuple[InputKind, ...]
    windowed: bool  # compares a window with a reference (built with one)
    build: Callable[..., Detector]  # (reference=None, **params) -> detector
    restore: Callable[[dict[str, Any]], Detector]
    params: tuple[str, ...]  # constructor parameters with their defaults


def _streaming(cls: type[RiverDetector] | type[PageHinkleyDetector]) -> DetectorSpec:
    def build(reference: Reference | None = None, **params: Any) -> Detector:
        return cls(**params)

    names = tuple(inspect.signature(cls.__init__).parameters)[1:]
    return DetectorSpec(cls.name, (cls.input_kind,), False, build, cls.restore, names)


def _windowed(name: str) -> DetectorSpec:
    test_cls = TESTS[name]

    def build(reference: Reference | None = None, size: int = 1000, step: int | None = None,
              **params: Any) -> Detector:  # fmt: skip
        if reference is None:
            raise ValueError(f"{name} needs a reference")
        return WindowedDetector(reference, [test_cls(**params)], size, step)

    names = tuple(inspect.signature(test_cls.__init__).parameters)[1:]
    kinds = tuple(sorted(test_cls.kinds))
    return DetectorSpec(name, kinds, True, build, WindowedDetector.restore, names)  # type: ignore[arg-type]


REGISTRY: dict[str, DetectorSpec] = {
    spec.name: spec
    for spec in (
        *(_streaming(cls) for cls in (AdwinDetector, PageHinkleyDetector, DDMDetector, EDDMDetector,
                                      HDDMADetector, HDDMWDetector)),
        *(_windowed(name) for name in TESTS),
    )
}  # fmt: skip


def window_test(config: MonitorConfig, name: str) -> WindowTest:
    """One window test; each of its lines is the option named after it (ks_alpha, psi_warning, ...)."""
    cls = TESTS[name]
    params = {param: f"{name}_{param}" for param in inspect.signature(cls.__init__).parameters if param != "self"}
    return named(params, lambda: cls(**{p: getattr(config, o) for p, o in params.items()}))


def window_tests(config: MonitorConfig, kind: str) -> list[WindowTest]:
    names = config.numeric_tests if kind == "numeric" else config.categorical_tests
    return [window_test(config, name) for name in names]


_CHANGE_OPTIONS = {
    "adwin": (AdwinDetector, {"delta": "adwin_delta"}),
    "page_hinkley": (PageHinkleyDetector, {"delta": "ph_delta", "threshold": "ph_threshold", "alpha": "ph_alpha",
                                           "min_instances": "ph_min_instances"}),
}  # fmt: skip
assert set(_CHANGE_OPTIONS) == set(CHANGE_DETECTORS)


def change_detectors(config: MonitorConfig, names: tuple[str, ...] | None = None) -> dict[str, RiverDetector]:
    """The change detectors a numeric feature runs (``config.change_detectors`` unless named)."""
    detectors: dict[str, RiverDetector] = {}
    for name in config.change_detectors if names is None else names:
        cls, options = _CHANGE_OPTIONS[name]
        detectors[name] = named(options, lambda c=cls, o=options: c(**{p: getattr(config, k) for p, k in o.items()}))
    return detectors
