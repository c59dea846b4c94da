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
import math

import numpy as np
from scipy import stats

from detectors import calibration
from detectors.config import MonitorConfig

SECONDS_PER_WEEK = 7 * 24 * 3600
_SMALLER_IS_STRICTER = frozenset({"ks_alpha", "chi_square_alpha", "adwin_delta"})


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


def budgeted(config: MonitorConfig, slices: int, kind: str) -> MonitorConfig:
    """``config`` with each line of a ``kind`` column's detectors the stricter of its option and the budget's."""
    rate = rate_per_value(config, slices)
    if rate is None:
        return config
    return budget_lines(config, rate, kind)


def budget_lines(config: MonitorConfig, rate: float, kind: str) -> MonitorConfig:
    """The config whose lines are the stricter of its options and those that meet ``rate``."""
    own = detector_lines(config, rate, kind)
    stricter = {name: (min if name in _SMALLER_IS_STRICTER else max)(getattr(config, name), line)
                for name, line in own.items()}  # fmt: skip
    for test in ("psi", "jensen_shannon", "null_rate"):  # a raised warning line lifts the critical one with it
        stricter[f"{test}_critical"] = max(getattr(config, f"{test}_critical"), stricter[f"{test}_warning"])
    return dataclasses.replace(config, **stricter)


def detector_lines(config: MonitorConfig, rate: float, kind: str, bins: int | None = None) -> dict[str, float]:
    """The line of each calibrated detector that meets ``rate`` false alarms per value, by option name.

    ``kind``: numeric, or categorical for the rest. ``bins``: the bins (categories) PSI and
    Jensen-Shannon compare; by default the most a reference has (``psi_bins``, or
    ``max_categories`` + 1). ``unseen_rate`` and ``wasserstein`` are not here: the null of the
    first depends on how much mass the categories the reference never saw carry, the second
    has no tractable tail, so both keep their configured lines (far in the tail: the
    detection benchmark saw neither fire on a stable stream).
    """
    window_alpha = min(rate * config.step, 0.5)  # per judged window
    # Past the calibrated range (a budget of thousands of false alarms a week) the stricter rate:
    # the options' own lines are stricter there anyway.
    change_rate = min(rate, calibration.MAX_RATE)
    if bins is None:
        bins = config.psi_bins if kind == "numeric" else config.max_categories + 1
    chi2 = chi_square_null_quantile(window_alpha, bins - 1)
    scale = 1.0 / config.window_size + 1.0 / config.reference_size
    lines = {
        "ks_alpha": window_alpha,
        "chi_square_alpha": window_alpha,
        "psi_warning": psi_null_line(chi2, scale),
        "jensen_shannon_warning": jensen_shannon_null_line(chi2, scale),
        "null_rate_warning": null_rate_null_line(window_alpha, config.window_size, config.reference_size),
        "ph_threshold": calibration.page_hinkley_threshold(change_rate, config.ph_delta, config.ph_min_instances,
                                                           config.reference_size),
        "adwin_delta": calibration.adwin_delta(change_rate, reference_size=config.reference_size),
    }  # fmt: skip
    # Three significant digits, rounded the strict way: another scipy's last bits never move a line.
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


def chi_square_null_quantile(alpha: float, dof: int) -> float:
    return float(stats.chi2.isf(alpha, max(dof, 1)))


PSI_SKEW_MARGIN = 1.03


def psi_null_line(chi2: float, scale: float) -> float:
    """PSI a stable window crosses with the chi-square quantile's probability.

    To second order PSI is Pearson's chi-square statistic of the window against the
    reference shares, ``sum((a - e)^2 / e)``; with both samples drawn from one
    distribution that is ``(1/n + 1/m) chi2(bins - 1)`` (window n, reference m). Its third-
    order term skews the tail up: simulated quantiles of 1.6 x 10^7 stable windows (10 bins,
    1000 against 5000) sat 1.0-1.5% above the chi-square's from 10^-2 to 10^-5, so the line
    takes a 3% margin (Jensen-Shannon's divergence too: 10% over its target at 10^-2 without).
    """
    return chi2 * scale * PSI_SKEW_MARGIN


def jensen_shannon_null_line(chi2: float, scale: float) -> float:
    """Jensen-Shannon distance (base 2) with the same null: the divergence is
    ``sum((a - e)^2 / m) / 8`` nats to second order (m the mid shares); the same margin."""
    return math.sqrt(chi2 * scale * PSI_SKEW_MARGIN / (8.0 * math.log(2.0)))


def null_rate_null_line(alpha: float, window: int, reference: int) -> float:
    """Rise of the missing share a stable window crosses with probability ``alpha``.

    The window's share of ``window`` rows and the reference's (``reference`` present values, so
    ``reference / (1 - p)`` rows) are both binomial: the rise has variance
    ``p (1 - p) (1 / window + (1 - p) / reference)``, taken at its largest over the missing
    share ``p`` (near one half), since the line is fixed before the data is seen.
    """
    p = np.linspace(0.0, 1.0, 1001)
    variance = float(np.max(p * (1 - p) * (1.0 / window + (1 - p) / reference)))
    return float(stats.norm.isf(alpha)) * math.sqrt(variance)
