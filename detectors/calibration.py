"""Lines for the change detectors from a false-alarm budget: a rate per value in, a line out.

A detector's share of a model's false-alarm budget is ``rate``, the long-run false-alarm
probability per value it sees (1 / ARL0, the expected run length between false alarms of a
stable stream, counting from each restart). ``page_hinkley_threshold`` and ``adwin_delta`` give
the line that keeps the rate at or under ``rate``; ``page_hinkley_rate`` and ``adwin_rate`` are
the forward models. All are pure and deterministic (closed forms, a fixed quadrature, ``brentq``),
and take well under 5 ms. The constants below were fitted by ``python -m bench.calibrate``, which
also prints the check of every model against simulation of the real detector classes with fresh
references.

What is calibrated is what the monitor does: a feature's reference is its first
``reference_size`` values; the detectors get ``z = (x - ref_mean) / ref_std`` (population std) of
the later values and restart after each detection.

**Page-Hinkley** (``PageHinkleyDetector`` with ``alpha = 1``). Its statistic is a two-sided
CUSUM of the deviations from the running mean since the restart, ``x_i - mean_i``. Their sum
``D_t = sum_j x_j (1 - sum_{i=j..t} 1/i)`` has, up to terms of order ``1/i``, the covariance of a
random walk (``Cov(D_u, D_t) = u`` in the continuum), so it runs like a CUSUM with a known mean,
and the reference mean cancels exactly. The one-sided run length is Siegmund's approximation,
``ARL(h, delta) = (exp(b) - b - 1) / (2 delta^2)`` with ``b = 2 delta (h + c)``, where Siegmund's
``c = 1.166`` for N(0, 1) increments is refitted (``PH_C``) to simulations of the real class on exact
N(0, 1) values (``delta`` 0.05, 0.1, 0.2, 0.5 at ARL0 1e3, 1e4, 1e5, 1e6: 1.211 +- 0.025, so
Siegmund's own constant is within 2 standard errors and the running mean changes nothing that
matters). The run also fits ``c`` on the ARL0 <= 1e4 points only and predicts the 1e5 and 1e6
ones with it, which shows how the log-linear tail extrapolates. Two-sided:
``1/ARL = 2/ARL(h, delta)``. No detection before ``min_instances`` values: the run length is at
least ``max(min_instances, T)``, taken as
``min_instances + A exp(-min_instances / A)`` (exponential ``T`` of mean ``A``; a lower bound on
the run length, so an upper bound on the rate; it matters only when ``A`` is near
``min_instances``). Reference error: a reference std ``sigma_hat`` from ``n`` values makes the
input N(0, s^2) with ``s = sigma / sigma_hat``, ``n sigma_hat^2 / sigma^2 ~ chi^2_{n-1}``, and
a CUSUM of N(0, s^2) with ``(delta, h)`` is one of N(0, 1) with ``(delta / s, h / s)``; the rate is
averaged over ``s`` by 32-point Gauss-Hermite quadrature through the chi-square quantiles. The
run length is convex in ``s``, so this raises the rate: by about 10% at 1e-11 for delta 0.1 and
n = 5000, by under 1% at 1e-4. What is extrapolated: the refitted ``c`` is used at ARL0 up to
1e11 and more, five decades past the simulated 1e6; the error of ``c`` moves the rate by the
factor ``exp(2 delta dc)``, the same at every ARL0, which is what the held-out points check.

**ADWIN** (river's, through ``AdwinDetector``; the window empties after a detection). No
closed form: each check (every ``clock`` values) tests every bucket boundary with
``|mean_0 - mean_1| > sqrt(2 m v d) + 2/3 m d``, ``d = ln(2 ln W / delta)``, each cut failing
with probability about ``2 Phi_bar(sqrt(2 d))``, i.e. of order ``delta / sqrt(d)``; the cuts and
checks are correlated and the ``2/3 m d`` term mutes short sub-windows. The fitted model is
``rate = ADWIN_A * delta * d^(-ADWIN_GAMMA)`` with ``W = 1 / rate`` (the window of a stable
stream grows to about the run length; the forward model solves this fixed point). It was fitted
to simulations at ``delta`` 0.5 down to 0.01 (rates 4e-4 to 3e-6) and predicts the held-out
delta 0.005 and 0.002 (rates 1.2e-6, 4.2e-7) within their Poisson bounds (+6%, +6%). At rate
1e-11 ``delta`` is about 1e-7: the model extrapolates ``delta`` four to five decades past the
smallest simulated one (``d`` goes from about 10 to 20 over that range, and the per-check tail
``exp(-d)`` stays proportional to ``delta``, which is the part that carries it); a plain power
law through the last simulated points gives a ``delta`` within about 15% of it. Only river's defaults of ``clock``,
``min_window_length`` and ``grace_period`` are calibrated (other values raise a ValueError).
Reference error: ADWIN estimates the variance inside its window, so a reference std that is off
by the factor ``s`` only moves the ``2/3 m d`` term; in the simulation, s = 0.95 and 1.05 (five
standard errors of the std of 5000 values) moved the rate by about -10% and +10%, i.e.
``d ln(rate) / ds`` about 2; averaged over ``s`` (sd 0.01) that is a change of order
``2^2 * 0.01^2 / 2 = 2e-4``, so ``reference_size`` is validated but does not enter the ADWIN
model.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import optimize, special, stats

from detectors.base import check_count, check_positive, require

# Page-Hinkley: the overshoot constant c of Siegmund's approximation (his value for N(0, 1): 1.166).
# Fitted by `python -m bench.calibrate` (full run, seed 20240601): Poisson likelihood over exact-scale
# simulations, 1.211 +- 0.025.
PH_C = 1.2107
# ADWIN: rate = ADWIN_A * delta * d ** -ADWIN_GAMMA, d = ln(2 ln(1 / rate) / delta), at clock 32,
# min_window_length 5, grace_period 10. Fitted by `python -m bench.calibrate` (full run).
ADWIN_A = 0.00341
ADWIN_GAMMA = 1.2088
ADWIN_CALIBRATED = {"clock": 32, "min_window_length": 5, "grace_period": 10}

MIN_RATE, MAX_RATE = 1e-300, 1e-2  # the models are fitted at ARL0 of 1e3 and more; higher rates are not calibrated
_NODES = 32  # Gauss-Hermite nodes for the reference's std


def _check_rate(rate: float) -> None:
    require(isinstance(rate, (int, float)) and not isinstance(rate, bool) and MIN_RATE <= rate <= MAX_RATE, "rate",
            rate, f"in [{MIN_RATE}, {MAX_RATE}]")  # fmt: skip


def _check_delta_ph(delta: float) -> None:
    require(isinstance(delta, (int, float)) and not isinstance(delta, bool) and 0 <= delta <= 5, "delta", delta,
            "in [0, 5]")  # fmt: skip


@lru_cache(maxsize=64)
def _scale_nodes(reference_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``s = sigma / sigma_hat`` and weights of the expectation over the reference's std."""
    z, w = special.roots_hermitenorm(_NODES)
    k = reference_size - 1  # n sigma_hat^2 / sigma^2 ~ chi^2_k; each tail from its own side, to keep precision
    lower = stats.chi2.ppf(special.ndtr(np.minimum(z, 0.0)), k)
    upper = stats.chi2.isf(special.ndtr(-np.maximum(z, 0.0)), k)
    q = np.where(z < 0, lower, upper)
    scale = np.sqrt(reference_size / q)
    scale.setflags(write=False)
    weights = w / w.sum()
    weights.setflags(write=False)
    return scale, weights


def _log_one_sided_arl(h: np.ndarray, delta: np.ndarray, c: float) -> np.ndarray:
    """log of Siegmund's one-sided ARL0 for N(0, 1) increments, reference value ``delta``, line ``h``."""
    hc = h + c
    b = 2.0 * delta * hc
    small = b < 1e-3
    bs = np.where(small, 1.0, b)  # placeholders where the other branch is taken
    ds = np.where(small, 1.0, delta)
    big = np.log(np.expm1(np.minimum(bs, 700.0)) - bs) + np.maximum(bs - 700.0, 0.0) - np.log(2.0 * ds * ds)
    series = 2.0 * np.log(hc) + np.log1p(b / 3.0 + b * b / 12.0)  # (h + c)^2 (1 + b/3 + b^2/12 + ...)
    return np.where(small, series, big)


def _ph_log_rate(threshold: float, delta: float, min_instances: int, scale: np.ndarray, weights: np.ndarray,
                 c: float = PH_C) -> float:  # fmt: skip
    log_arl = _log_one_sided_arl(threshold / scale, delta / scale, c) - math.log(2.0)  # two-sided
    u = float(min_instances) * np.exp(-log_arl)  # min_instances / ARL
    # run length E[max(m, T)] = ARL (u + exp(-u)) for exponential T; the rate is its inverse, averaged over s
    return float(special.logsumexp(-log_arl - np.log(u + np.exp(-u)), b=weights))


def ph_rate_exact(threshold: float, delta: float, min_instances: int, c: float = PH_C) -> float:
    """The Page-Hinkley rate per value on exact N(0, 1) input (no reference error); for the bench."""
    one = np.ones(1)
    return math.exp(_ph_log_rate(threshold, delta, min_instances, one, one, c))


def page_hinkley_rate(threshold: float, delta: float, min_instances: int, reference_size: int) -> float:
    """False alarms per value of ``PageHinkleyDetector(delta, threshold, alpha=1, min_instances)``
    on z-scores of a stable normal stream against a reference of ``reference_size`` values."""
    check_positive("threshold", threshold)
    _check_delta_ph(delta)
    check_count("min_instances", min_instances)
    check_count("reference_size", reference_size, 2)
    scale, weights = _scale_nodes(reference_size)
    return math.exp(_ph_log_rate(float(threshold), float(delta), min_instances, scale, weights))


def page_hinkley_threshold(rate: float, delta: float, min_instances: int, reference_size: int) -> float:
    """The smallest Page-Hinkley ``threshold`` whose false alarms per value are at most ``rate``.

    >>> 51 < page_hinkley_threshold(1e-6, 0.1, 30, 5000) < 53  # the default 60 raises 2e-7 per value
    True
    """
    _check_rate(rate)
    _check_delta_ph(delta)
    check_count("min_instances", min_instances)
    check_count("reference_size", reference_size, 2)
    scale, weights = _scale_nodes(reference_size)
    target = math.log(rate)

    def excess(h: float) -> float:
        return _ph_log_rate(h, float(delta), min_instances, scale, weights) - target

    low, high = 1e-6, 1.0
    if excess(low) <= 0:
        return low
    while excess(high) > 0:
        low, high = high, high * 4.0
    h = float(optimize.brentq(excess, low, high, xtol=1e-12, rtol=1e-13, maxiter=200))
    while math.exp(excess(h) + target) > rate:  # brentq's root may sit a rounding error on the wrong side
        h += h * 1e-13
    return h


def _check_adwin(clock: int, min_window_length: int, grace_period: int, reference_size: int) -> None:
    check_count("clock", clock)
    check_count("min_window_length", min_window_length)
    check_count("grace_period", grace_period)
    check_count("reference_size", reference_size, 2)
    for name, value in (("clock", clock), ("min_window_length", min_window_length), ("grace_period", grace_period)):
        require(value == ADWIN_CALIBRATED[name], name, value, f"{ADWIN_CALIBRATED[name]} (the only calibrated value)")


def adwin_log_rate_at(delta: float, log_window: float, a: float = ADWIN_A, gamma: float = ADWIN_GAMMA) -> float:
    """log of the ADWIN rate model at ``delta`` for a window of ``exp(log_window)``; for the bench."""
    d = math.log(2.0 * max(log_window, 1.0) / delta)
    return math.log(a * delta) - gamma * math.log(d)


def adwin_rate(delta: float, clock: int = 32, min_window_length: int = 5, grace_period: int = 10,
               reference_size: int = 5000) -> float:  # fmt: skip
    """False alarms per value of ``AdwinDetector(delta, ...)`` on z-scores of a stable stream."""
    require(isinstance(delta, (int, float)) and not isinstance(delta, bool) and 0 < delta < 1, "delta", delta,
            "in (0, 1)")  # fmt: skip
    _check_adwin(clock, min_window_length, grace_period, reference_size)
    return math.exp(_adwin_log_rate(float(delta)))


def _adwin_log_rate(delta: float, a: float = ADWIN_A, gamma: float = ADWIN_GAMMA) -> float:
    """Solve ``log r = adwin_log_rate_at(delta, -log r)``: the window grows to about the run length."""

    def gap(log_rate: float) -> float:
        return log_rate - adwin_log_rate_at(delta, -log_rate, a, gamma)

    # gap rises with log_rate (slope > 1 - gamma / d > 0 for d > gamma); bracket it
    low, high = math.log(a * delta) - 60.0, math.log(a * delta) + 5.0
    return float(optimize.brentq(gap, low, high, xtol=1e-13, rtol=1e-14, maxiter=200))


def adwin_delta(rate: float, clock: int = 32, min_window_length: int = 5, grace_period: int = 10,
                reference_size: int = 5000) -> float:  # fmt: skip
    """The largest ADWIN ``delta`` whose false alarms per value are at most ``rate``.

    >>> 1e-8 < adwin_delta(1e-11) < 1e-6
    True
    """
    _check_rate(rate)
    _check_adwin(clock, min_window_length, grace_period, reference_size)
    log_window = -math.log(rate)
    target = math.log(rate)

    def excess(log_delta: float) -> float:
        return adwin_log_rate_at(math.exp(log_delta), log_window) - target

    high = 0.0  # delta = 1
    low = target - math.log(ADWIN_A)  # the model's rate < a * delta, so the root is above this
    if excess(high) <= 0:
        return math.nextafter(1.0, 0.0)
    log_delta = float(optimize.brentq(excess, low, high, xtol=1e-13, rtol=1e-14, maxiter=200))
    delta = math.exp(log_delta)
    while math.exp(_adwin_log_rate(delta)) > rate:  # a rounding error on the wrong side of adwin_rate
        delta -= delta * 1e-13
    return delta
