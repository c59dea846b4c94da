"""A model's false-alarm budget, turned into the line of every detector it runs.

``FALSE_ALARM_BUDGET`` is the expected number of false alarms per model per week
at ``EVENT_RATE`` events per second. It is split evenly over the model's family of
detectors, as a false-alarm probability per value a detector judges:

    rate = budget / (event_rate x 1 week x columns x tests x (1 + slices))

* ``columns`` is ``max_features + 1`` (the features a model may ever have, and its
  prediction): the configured bound, so a feature that appears later never moves the
  line of a running detector, and the budget holds however many appear.
* ``tests`` is the most detectors one column runs (numeric: its window tests and
  change detectors; categorical: its window tests).
* Segments and versions do not multiply the family by their number of values: the
  values of one slice (``region``, or ``region`` x ``device``) split the model's events
  between them, and so do versions, so together a slice's monitors judge at most
  ``event_rate`` values per second, as the whole model's do. Each slice the model is
  cut by adds one such share (``1 + slices``).

A detector that judges at most ``event_rate`` values per second at ``rate`` false
alarms per value spends at most its share, so the family spends at most the budget.
Each detector's line is then the stricter of its own option and the one its share
needs: a windowed test judged every ``step`` values may cross its line with
probability ``rate x step`` per window (from its null distribution); a change
detector's line is the one whose run length under no change is ``1 / rate`` values
(``detectors.calibration``). A budget of 0 turns this off: every detector keeps its
configured line.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

from detectors import calibration
from detectors.config import MonitorConfig, named

SECONDS_PER_WEEK = 7 * 24 * 3600
_NULL_ALPHAS = ("psi_alpha", "jensen_shannon_alpha", "unseen_rate_alpha", "null_rate_alpha")
_SMALLER_IS_STRICTER = frozenset({"ks_alpha", "chi_square_alpha", "adwin_delta", *_NULL_ALPHAS})


def family_size(config: MonitorConfig, slices: int) -> int:
    """How many shares the model's budget is split into."""
    numeric = len(config.numeric_tests) + len(config.change_detectors)
    tests = max(numeric, len(config.categorical_tests), 1)
    return (config.max_features + 1) * tests * (1 + slices)


def rate_per_value(config: MonitorConfig, slices: int) -> float | None:
    """The false-alarm probability per judged value of each detector; None when the budget is off."""
    if config.false_alarm_budget == 0:
        return None
    events = config.event_rate * SECONDS_PER_WEEK
    return config.false_alarm_budget / (events * family_size(config, slices))


@functools.lru_cache(maxsize=256)  # one per model config, slices and kind: every model monitor asks
def budgeted(config: MonitorConfig, slices: int, kind: str) -> MonitorConfig:
    """``config`` with each line of a ``kind`` column's detectors the stricter of its option and the budget's."""
    rate = rate_per_value(config, slices)
    if rate is None:
        return config
    return budget_lines(config, rate, kind)


def budget_lines(config: MonitorConfig, rate: float, kind: str) -> MonitorConfig:
    """The config whose lines are the stricter of its options and those that meet ``rate``."""
    stricter: dict[str, Any] = {}
    for name, line in detector_lines(config, rate, kind).items():
        option = getattr(config, name)
        if name in _NULL_ALPHAS:  # 0: no null line of its own
            stricter[name] = min(option, line) if option else line
        else:
            stricter[name] = (min if name in _SMALLER_IS_STRICTER else max)(option, line)
    return dataclasses.replace(config, **stricter)


def detector_lines(config: MonitorConfig, rate: float, kind: str) -> dict[str, float]:
    """What each calibrated detector of a ``kind`` column needs to meet ``rate`` false alarms per
    value, by option name (``kind``: numeric, or categorical for the rest).

    Windowed tests are judged every ``step`` values, so a window may cross its line with
    probability ``rate x step``: the alpha of the p-value tests, and of the distance tests'
    null lines (``detectors.nulls``, computed per window from its counts). The change
    detectors' lines come from ``detectors.calibration``, for those the config runs.
    ``wasserstein`` has no tractable null: it keeps its option.
    """
    window_alpha = min(rate * config.step, 0.5)
    lines = {name: window_alpha for name in ("ks_alpha", "chi_square_alpha", *_NULL_ALPHAS)}
    if kind == "numeric":
        # Past the calibrated range (a budget of thousands of false alarms a week) the stricter
        # rate: the options' own lines are stricter there anyway.
        change_rate = min(rate, calibration.MAX_RATE)
        if "page_hinkley" in config.change_detectors:
            lines["ph_threshold"] = named(
                {"delta": "ph_delta", "min_instances": "ph_min_instances"},
                lambda: calibration.page_hinkley_threshold(change_rate, config.ph_delta, config.ph_min_instances,
                                                           config.reference_size))  # fmt: skip
        if "adwin" in config.change_detectors:
            lines["adwin_delta"] = calibration.adwin_delta(change_rate, reference_size=config.reference_size)
    # Three significant digits, rounded the strict way: the last bits of another scipy do not
    # move a line (but at a rounding boundary).
    return {name: _three_digits(line, up=name not in _SMALLER_IS_STRICTER) for name, line in lines.items()}


def _three_digits(value: float, up: bool) -> float:
    """``value`` rounded to three significant digits, up or down.

    >>> _three_digits(118.91, up=True), _three_digits(8.2268e-09, up=False)
    (119.0, 8.22e-09)
    """
    if value <= 0:  # a line at zero (alpha 0.5 for the missing share): nothing to round
        return 0.0
    unit = 10.0 ** (math.floor(math.log10(value)) - 2)
    steps = math.ceil(value / unit - 1e-9) if up else math.floor(value / unit + 1e-9)
    return float(f"{steps * unit:.3g}")
