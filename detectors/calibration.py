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

**Error streams** (``DDMDetector``, ``HDDMADetector``, ``HDDMWDetector``: river's pure-Python binary
detectors, one-sided, on a 0/1 stream that is stable Bernoulli(p), ``p`` the model's error rate from its
reference labels). ``v = 4 p (1 - p)`` (1 at p = 1/2). river runs these at 0.35 M (HDDM) to 2 M (DDM)
values a second, so every fit is on simulated rates of 1e-3 to 1e-5 per value only, at two error rates;
what the production rates (1e-12) need is an extrapolation of many decades, stated per detector. ``p``
outside the simulated range (below ``DDM_P_MIN`` / ``HDDM_P_MIN``, above one half) raises a ValueError:
small error rates are where Bernoulli tails stop being Gaussian and the fits were not run there.

*DDM* tests ``p_n + s_n > p_min + k s_min``. Its quantities all scale like ``1/sqrt(n)``, so in log-time
the test is stationary: the false-alarm probability at age ``n`` after a restart falls like ``theta / n``
(simulated: flat in ``n x hazard`` from 2 to 64 warm starts) and the run length has a Pareto tail, without
a finite mean once ``theta < 1``. There is no ARL0 to calibrate; what is calibrated is the highest rate
per value, the one over the ages ``warm_start`` .. 4 ``warm_start`` (first detections after a restart),
so the per-value probability at every later value is lower (over a stream of ``N`` values the expected
false alarms grow like ``theta ln N``, not ``rate N``: conservative by orders of magnitude for long runs).
Model: ``ln(rate w / 1000) = a0 + a1 ln v + ln Phi_bar(b v^g (k - 1))``, a Gaussian tail in ``k - 1``
(``p - p_min`` against about ``(k - 1) s``), with ``v^g`` for the heavier upper tail of the error count at
small ``p w``. Simulated at ``w`` 1000 only (the ``1 / w`` is the scale invariance); ``k`` 2, 2.5, 3 at p
0.05 and 0.5 (rates 3e-4 to 7e-6); a rate of 1e-12 needs ``k`` of 5.5 (p = 1/2) to 6.3 (p = 0.05), a
Gaussian tail extrapolated from ``k - 1 = 2`` to about 5, i.e. its exponent from 4 to 25 times ``b^2 / 2``:
an error of 5% in ``b`` moves the rate at 1e-12 by a factor of about 10. ``ddm_threshold`` never returns
less than the warning line 2.

*HDDM_W* (``lambda_val`` 0.005 only): the McDiarmid bound is for values in [0, 1], so for Bernoulli(p)
it is ``sqrt(ln(1/c) / (2 v))`` standard errors wide in Gaussian units; crossing it is a tail of
``exp(-beta ln(1/c) / v)``, a union-bound form ``rate = A(p) c^(beta / v)``. Fitted form:
``ln rate = a0 + a1 ln v - beta v^h ln(1/c) / v`` (``h`` = 0 would be the Gaussian scaling; it is fitted,
since the slope per ``ln(1/c)`` was about 2.4 at p = 0.1 and 0.37 at p = 1/2, not the 2.8 : 1 of ``1 / v``).
The slope is far below the Gaussian ``1 / v``: the cut is the all-time low of the EWMA, so the gap a
crossing needs shrinks as the stream ages. At p = 1/2 the rate falls only about 2.3 times per decade of
``c``, and 1e-12 needs ``c`` of order 1e-23, where ``ln(1/c)`` is five to six times the largest
simulated one (9.2). At p = 0.1 the slope flattened across the simulated range (2.3, then 1.9 per
``ln(1/c)``), so the fitted form is not extrapolated there: past the smallest simulated ``c`` (``ln(1/c)``
3.9 at p = 0.1, 9.2 at p = 1/2, linear in ``v`` between) the slope is the smaller of the fit's and the
p = 1/2 one scaled by ``1/v`` (0.39 / v; the Gaussian record-low argument gives ``1 / (8 p (1 - p))``,
0.5 / v), which asks for a smaller ``c`` (at p = 0.1 and 1e-12, about 3e-9 instead of the plain fit's
1e-5); at p = 1/2 the slope was constant over the simulated range (0.40, 0.40) and the two agree.
Unchecked beyond 1e-5 either way. Simulated at p 0.1 and 0.5;
p in between is interpolated (the tests check p = 0.3 at 1e-4). ``hddm_w_confidence`` returns at most
``HDDM_CONFIDENCE_MAX`` (0.5): a target above what that raises gets 0.5 (conservative).

*HDDM_A* is not calibrated: its simulated rate is neither log-linear in ``c`` nor a property of the
detector alone. At p = 0.1 it fell only 1.75 times from ``c`` 0.3 to 0.1, then 20 times by 0.03; at
p = 1/2 its slope per ``ln(2/c)`` went from 1.1 to 1.5; the union-bound form, even with a fitted ``v^h``,
misses inside the simulated range by up to 2 times; and two runs (other seeds, streams of 2e5 and 1e5
values) gave 5.2e-4 and 1.4e-3 at p = 1/2, c = 0.1, and 1.8e-3 and 3.5e-3 at p = 0.1, c = 0.3, far
outside their Poisson bounds: its run lengths are heavy-tailed (a cut point that follows the running
mean, bounds in ``1/sqrt(n)``), so a rate per value depends on the streams and how long they are
watched. Nothing supports an extrapolation to 1e-12; ``hddm_a_rate`` and ``hddm_a_confidence`` validate
their arguments and raise NotImplementedError.
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


# ---------------------------------------------------------------------------------------------------------------
# Error-stream detectors (DDM, HDDM_A, HDDM_W) on a stable Bernoulli(p) error stream. See the module docstring.

HDDM_W_LAMBDA = 0.005  # detectors.streaming.HDDM_W_LAMBDA; the only calibrated lambda_val
DDM_WARM_START = 1000  # detectors.streaming.DDM_WARM_START
DDM_WARNING_THRESHOLD = 2.0  # DDMDetector's warning_threshold: ddm_threshold never returns less
ERROR_P_MAX = 0.5  # error rates above one half are not calibrated (a model worse than a coin)
DDM_P_MIN, HDDM_P_MIN = 0.05, 0.1  # the smallest simulated error rates
HDDM_CONFIDENCE_MAX = 0.5  # the largest confidence returned: rates above what it raises get this (conservative)
# HDDM_A: the same form, ln(2 / drift_confidence) for ln(1 / drift_confidence), fits it badly (bench): not shipped
HDDM_A_FIT = (-6.8025, -3.4735, 0.4689, 0.0)
# HDDM_W: ln rate = a0 + a1 ln v - beta v^h ln(1 / drift_confidence) / v, v = 4 p (1 - p), lambda_val 0.005;
# fitted by `python -m bench.calibrate --part errors-fit` (seed 20240601)
HDDM_W_FIT = (-6.4875, -4.1205, 0.3906, -0.6736)
# past the smallest simulated confidence (ln(1/c) = HDDM_W_SIMULATED at v = 0.36 and 1, linear in v between),
# the slope per ln(1/c) is the smaller of the fit's and HDDM_W_TAIL_BETA / v: the p = 1/2 slope, scaled as 1/v
HDDM_W_SIMULATED = ((0.36, 3.912), (1.0, 9.210))
HDDM_W_TAIL_BETA = 0.3906
# ln(rate warm_start / 1000) = a0 + a1 ln v + ln Phi_bar(b v^g (drift_threshold - 1)), v = 4 p (1 - p); same run
DDM_FIT = (-6.0742, -0.0343, 1.3666)
DDM_G = 0.0940


def _check_p(p: float, low: float = HDDM_P_MIN) -> float:
    require(isinstance(p, (int, float)) and not isinstance(p, bool) and low <= p <= ERROR_P_MAX, "p", p,
            f"in [{low}, {ERROR_P_MAX}] (the calibrated error rates)")  # fmt: skip
    return 4.0 * float(p) * (1.0 - float(p))  # 4 p (1 - p): 1 at p = 1/2


def _check_confidence(confidence: float) -> None:
    require(isinstance(confidence, (int, float)) and not isinstance(confidence, bool) and 0 < confidence < 1,
            "drift_confidence", confidence, "in (0, 1)")  # fmt: skip


def hddm_log_rate(bound_log: float, v: float, fit: tuple[float, ...]) -> float:
    """``ln rate`` of the HDDM model: ``bound_log`` is ln(2/c) (HDDM_A) or ln(1/c) (HDDM_W), ``v = 4 p (1 - p)``."""
    a0, a1, beta, h = fit
    return a0 + a1 * math.log(v) - beta * v**h * bound_log / v


def _hddm_a_not_calibrated() -> NotImplementedError:
    return NotImplementedError("HDDM_A is not calibrated: its false alarms are not a function of drift_confidence"
                               " that extrapolates (see detectors.calibration); use HDDM_W or DDM")  # fmt: skip


def hddm_a_rate(drift_confidence: float, p: float) -> float:
    """Not calibrated (module docstring): validates its arguments, then raises NotImplementedError."""
    _check_confidence(drift_confidence)
    _check_p(p)
    raise _hddm_a_not_calibrated()


def hddm_a_confidence(rate: float, p: float) -> float:
    """Not calibrated (module docstring): validates its arguments, then raises NotImplementedError."""
    _check_rate(rate)
    _check_p(p)
    raise _hddm_a_not_calibrated()


def _check_lambda(lambda_val: float) -> None:
    require(lambda_val == HDDM_W_LAMBDA, "lambda_val", lambda_val, f"{HDDM_W_LAMBDA} (the only calibrated value)")


def hddm_w_log_rate(bound_log: float, v: float) -> float:
    """``ln rate`` of HDDM_W at ``ln(1/c) = bound_log``: the fit, then the tail slope past the simulated ``c``."""
    (v0, l0), (v1, l1) = HDDM_W_SIMULATED
    simulated = l0 + (l1 - l0) * (min(max(v, v0), v1) - v0) / (v1 - v0)
    a0, a1, beta, h = HDDM_W_FIT
    slope = min(beta * v**h / v, HDDM_W_TAIL_BETA / v)
    inside = min(bound_log, simulated)
    return hddm_log_rate(inside, v, HDDM_W_FIT) - slope * max(bound_log - simulated, 0.0)


def hddm_w_rate(drift_confidence: float, p: float, lambda_val: float = HDDM_W_LAMBDA) -> float:
    """False alarms per value of ``HDDMWDetector(drift_confidence, lambda_val)`` (one-sided), Bernoulli(p) errors."""
    _check_confidence(drift_confidence)
    v = _check_p(p)
    _check_lambda(lambda_val)
    return math.exp(hddm_w_log_rate(math.log(1.0 / drift_confidence), v))


def hddm_w_confidence(rate: float, p: float, lambda_val: float = HDDM_W_LAMBDA) -> float:
    """The largest HDDM_W ``drift_confidence`` (at most ``HDDM_CONFIDENCE_MAX``) whose rate is at most ``rate``."""
    _check_rate(rate)
    v = _check_p(p)
    _check_lambda(lambda_val)
    target = math.log(rate)

    def excess(bound_log: float) -> float:
        return hddm_w_log_rate(bound_log, v) - target

    low = math.log(1.0 / HDDM_CONFIDENCE_MAX)
    if excess(low) <= 0:
        return HDDM_CONFIDENCE_MAX
    high = 2.0 * low
    while excess(high) > 0:
        low, high = high, high * 2.0
    bound_log = float(optimize.brentq(excess, low, high, xtol=1e-12, rtol=1e-14, maxiter=200))
    confidence = math.exp(-bound_log)
    while math.exp(hddm_w_log_rate(math.log(1.0 / confidence), v)) > rate:  # rounding, to the safe side
        confidence -= confidence * 1e-13
    return confidence


def _check_warm_start(warm_start: int) -> None:
    require(isinstance(warm_start, int) and not isinstance(warm_start, bool) and 100 <= warm_start <= 100_000,
            "warm_start", warm_start, "an integer in [100, 100000]")  # fmt: skip


def ddm_log_rate(drift_threshold: float, v: float, warm_start: int, fit: tuple[float, float, float] = DDM_FIT,
                 g: float = DDM_G) -> float:  # fmt: skip
    """``ln rate`` of the DDM model (the per-value rate over ages ``warm_start`` .. 4 ``warm_start``)."""
    a0, a1, b = fit
    tail = float(special.log_ndtr(-b * v**g * (drift_threshold - 1.0)))
    return a0 + a1 * math.log(v) + tail - math.log(warm_start / 1000.0)


def ddm_rate(drift_threshold: float, p: float, warm_start: int = DDM_WARM_START) -> float:
    """The highest false alarms per value of ``DDMDetector(warm_start, drift_threshold=...)`` on Bernoulli(p)
    errors: its rate over the values ``warm_start`` .. 4 ``warm_start`` after a restart (it falls later)."""
    require(isinstance(drift_threshold, (int, float)) and not isinstance(drift_threshold, bool)
            and 1.5 <= drift_threshold <= 40, "drift_threshold", drift_threshold, "in [1.5, 40]")  # fmt: skip
    v = _check_p(p, DDM_P_MIN)
    _check_warm_start(warm_start)
    return math.exp(ddm_log_rate(float(drift_threshold), v, warm_start))


def ddm_threshold(rate: float, p: float, warm_start: int = DDM_WARM_START) -> float:
    """The smallest DDM ``drift_threshold`` (at least the warning line, 2) whose rate is at most ``rate``."""
    _check_rate(rate)
    v = _check_p(p, DDM_P_MIN)
    _check_warm_start(warm_start)
    target = math.log(rate)

    def excess(k: float) -> float:
        return ddm_log_rate(k, v, warm_start) - target

    if excess(DDM_WARNING_THRESHOLD) <= 0:
        return DDM_WARNING_THRESHOLD
    k = float(optimize.brentq(excess, DDM_WARNING_THRESHOLD, 40.0, xtol=1e-12, rtol=1e-13, maxiter=200))
    while math.exp(ddm_log_rate(k, v, warm_start)) > rate:  # a rounding error on the wrong side of ddm_rate
        k += k * 1e-13
    return k
