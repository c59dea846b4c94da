"""Calibration benchmark: fit the constants of ``detectors/calibration.py`` and check its lines.

Run from the repository root::

    python -m bench.calibrate            # full run, about 2-4 min on 2 cores
    python -m bench.calibrate --quick    # smoke test (its fits are too short to ship), seconds
    python -m bench.calibrate --part errors   # DDM, HDDM_A, HDDM_W only, about 10-15 min

It prints; it writes no file. Every stream is N(0, 1) values fed to the real detector classes
(``PageHinkleyDetector``, ``AdwinDetector``) in batches of 4096, and every detection counted; a
detector restarts after a detection as in the monitor. Seeds derive from ``--seed``, the part,
the point and the stream number only, so the figures do not depend on the number of workers.

1. Page-Hinkley fit. Exact N(0, 1) input (no reference: the reference's std is integrated out
   analytically in the module). For each ``delta`` the threshold is set where plain Siegmund
   (c = 1.166) predicts ARL0 1e3, 1e4, 1e5 (and 1e6, full run), the counts are simulated, and
   Siegmund's constant ``c`` is refitted by Poisson likelihood: on all points, and on the ARL0 <= 1e4
   points only, whose prediction of the longer ARLs shows how honest the extrapolation is.
2. ADWIN fit. Exact N(0, 1) input; ``rate = a delta d^-gamma`` (``d = ln(2 ln(1/rate)/delta)``)
   fitted on ``delta`` 0.5 .. 0.01 and checked on 0.005 and 0.002 (full run); plus ``delta`` 0.05 on
   input scaled by 0.95 and 1.05, to show that the reference's std does not move ADWIN.
3. Check. Target rate against observed rate, with fresh references of 5000 values
   (``z = (x - mean) / std``, population std, as ``NumericReference``), at the lines that
   ``page_hinkley_threshold`` (delta 0.1, min_instances 30) and ``adwin_delta`` (defaults) give
   with the constants shipped in the module. 95% bounds are exact Poisson (chi-square) bounds.
4. Error-stream fits (``--part errors-fit``): Bernoulli(p) 0/1 streams through ``DDMDetector``
   (warm_start 1000; fresh detectors over 4 warm starts, first detection: the rate over the values it
   judged), ``HDDMADetector`` and ``HDDMWDetector`` (lambda 0.005; long streams, restarting after each
   detection), at p 0.05 or 0.1 and 0.5, three lines each (rates about 1e-3 to 1e-5: river is pure
   Python, 0.35-2 M values/s). Poisson-likelihood fits of the forms in ``detectors/calibration.py``;
   HDDM_A's is printed to show that it misfits (it is not shipped).
5. Error-stream check (``--part errors-check``): target vs observed at 1e-3, 1e-4, 1e-5 and p 0.15, 0.3
   (neither simulated in 4) for ``ddm_threshold`` and ``hddm_w_confidence`` with the shipped constants.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from scipy import optimize, stats

from detectors import calibration
from detectors.streaming import AdwinDetector, DDMDetector, HDDMADetector, HDDMWDetector, PageHinkleyDetector

BATCH = 4096
PH_MIN_INSTANCES = 30
REFERENCE_SIZE = 5000


def stream_alarms(task: tuple[str, dict[str, Any], int, int, float, tuple[int, ...]]) -> tuple[int, int]:
    """One stream: (detections, values fed). A reference of ``reference_size`` values first (0: none)."""
    kind, params, length, reference_size, scale, seed = task
    rng = np.random.default_rng(list(seed))
    mean, std = 0.0, 1.0
    if reference_size:
        reference = rng.standard_normal(reference_size)
        mean, std = float(reference.mean()), float(reference.std())
    detector = PageHinkleyDetector(**params) if kind == "ph" else AdwinDetector(**params)
    alarms = done = 0
    while done < length:
        x = rng.standard_normal(min(BATCH, length - done))
        alarms += len(detector.update((x - mean) / std * scale))
        done += x.size
    return alarms, done


def error_alarms(task: tuple[str, float, float, int, tuple[int, ...]]) -> tuple[int, int]:
    """One Bernoulli(p) error stream through the real class: (detections, values counted).

    HDDM_A and HDDM_W: a stream of ``length`` values, restarting after each detection (as river does).
    DDM: a fresh detector over ``length`` (4 warm starts) values, stopped at its first detection; the values
    counted are those it judged (after the warm start), so the ratio is the rate over those ages.
    """
    kind, p, line, length, seed = task
    rng = np.random.default_rng(list(seed))
    x = (rng.random(length) < p).astype(np.float64)
    if kind == "ddm":
        found = DDMDetector(warm_start=calibration.DDM_WARM_START, warning_threshold=min(2.0, line),
                            drift_threshold=line).update(x)  # fmt: skip
        judged = (found[0].position + 1 if found else length) - calibration.DDM_WARM_START
        return (1 if found else 0), max(judged, 0)
    if kind == "hddm_a":
        detector: Any = HDDMADetector(drift_confidence=line, warning_confidence=max(line, 0.005))
    else:
        detector = HDDMWDetector(drift_confidence=line, warning_confidence=max(line, 0.005),
                                 lambda_val=calibration.HDDM_W_LAMBDA)  # fmt: skip
    alarms = 0
    for start in range(0, length, BATCH):
        alarms += len(detector.update(x[start : start + BATCH]))
    return alarms, length


def poisson_bounds(count: int) -> tuple[float, float]:
    """Exact two-sided 95% bounds on a Poisson mean from one count."""
    low = 0.0 if count == 0 else float(stats.chi2.ppf(0.025, 2 * count)) / 2
    return low, float(stats.chi2.ppf(0.975, 2 * count + 2)) / 2


class Runner:
    def __init__(self, pool: Any, seed: int) -> None:
        self.pool, self.seed = pool, seed

    def count(self, part: int, point: int, kind: str, params: dict[str, Any], total: int, stream_length: int,
              reference_size: int = 0, scale: float = 1.0) -> tuple[int, int]:  # fmt: skip
        streams = max(1, math.ceil(total / stream_length))
        tasks = [(kind, params, stream_length, reference_size, scale, (self.seed, part, point, i))
                 for i in range(streams)]  # fmt: skip
        results = self.pool.map(stream_alarms, tasks, chunksize=1)
        return sum(r[0] for r in results), sum(r[1] for r in results)


def _deviance(observed: Iterable[tuple[int, int]], rates: Iterable[float]) -> float:
    total = 0.0
    for (k, n), r in zip(observed, rates, strict=True):
        mu = n * r
        total += 2 * (mu - k + (k * math.log(k / mu) if k else 0.0))
    return total


def _fit(start: Sequence[float], loss: Callable[[np.ndarray], float]) -> np.ndarray:
    return np.asarray(optimize.minimize(loss, start, method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9}).x)


def _line(k: int, n: int) -> str:
    low, high = poisson_bounds(k)
    return f"{k:6d} {n:12.3e} {k / n:10.3e} [{low / n:9.3e}, {high / n:9.3e}]"


def fit_page_hinkley(run: Runner, quick: bool) -> None:
    deltas = [0.1, 0.3] if quick else [0.05, 0.1, 0.2, 0.5]
    fit_arls = [1e3, 3e3] if quick else [1e3, 1e4, 1e5]
    held_arls = [1e4] if quick else [1e6]
    want = 150 if quick else 400
    points = []
    for i, delta in enumerate(deltas):
        for j, arl in enumerate(fit_arls + held_arls):
            h = round(float(optimize.brentq(lambda h, d=delta, a=arl: calibration.ph_rate_exact(h, d, PH_MIN_INSTANCES,
                      1.166) - 1 / a, 1e-3, 1e4)), 2)  # fmt: skip
            alarms = want if arl < 1e6 else 200
            params = {"delta": delta, "threshold": h, "alpha": 1.0, "min_instances": PH_MIN_INSTANCES}
            k, n = run.count(1, i * 10 + j, "ph", params, int(alarms * arl), max(int(20 * arl), 100_000))
            points.append((delta, h, arl, arl in fit_arls, k, n))

    def rates(theta: np.ndarray, chosen: list[tuple[Any, ...]]) -> list[float]:
        return [calibration.ph_rate_exact(p[1], p[0], PH_MIN_INSTANCES, float(theta[0])) for p in chosen]

    everything = [p for p in points if p[3] or not quick]
    low_only = [p for p in points if p[2] <= 1e4 and p[3]] if not quick else [p for p in points if p[2] <= 1e3]
    theta_all = _fit([1.166], lambda t: _deviance([(p[4], p[5]) for p in everything], rates(t, everything)))
    theta_low = _fit([1.166], lambda t: _deviance([(p[4], p[5]) for p in low_only], rates(t, low_only)))
    step = 1e-3  # the standard error from the curvature of the deviance
    curve = [_deviance([(p[4], p[5]) for p in everything], rates(theta_all + e, everything)) for e in (-step, 0, step)]
    se = 1 / math.sqrt(max((curve[0] - 2 * curve[1] + curve[2]) / step**2 / 2, 1e-12))
    print("\n## Page-Hinkley: simulated rate (exact N(0,1), min_instances 30) vs the run-length model")
    shipped = f"shipped: PH_C = {calibration.PH_C}; Siegmund: 1.166"
    print(f"fit on all points: c = {theta_all[0]:.4f} +- {se:.3f}   ({shipped})")
    print(f"fit on ARL0 <= {max(p[2] for p in low_only):.0e} only: c = {theta_low[0]:.4f}")
    print(f"{'delta':>6} {'h':>7} {'ARL0':>6} {'fit':>4} {'alarms':>6} {'values':>12} {'rate':>10} {'95% bounds':>24}"
          f" {'siegmund':>10} {'fit all':>10} {'fit low':>10}")  # fmt: skip
    for p in points:
        delta, h, arl, fitted, k, n = p
        plain = calibration.ph_rate_exact(h, delta, PH_MIN_INSTANCES, 1.166)
        a = rates(theta_all, [p])[0]
        b = rates(theta_low, [p])[0]
        mark = "fit" if fitted else "held"
        print(f"{delta:6.3f} {h:7.2f} {arl:6.0e} {mark:>4} {_line(k, n)} {plain:10.3e} {a:10.3e} {b:10.3e}")


def fit_adwin(run: Runner, quick: bool) -> None:
    fit_deltas = [0.5, 0.2, 0.1] if quick else [0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01]
    held_deltas = [0.05] if quick else [0.005, 0.002]
    want = 120 if quick else 300
    points = []
    for i, delta in enumerate(fit_deltas + held_deltas):
        expected = calibration.adwin_rate(delta)
        alarms = want if delta >= 0.005 else 200
        k, n = run.count(2, i, "adwin", {"delta": delta}, int(alarms / expected), max(int(20 / expected), 200_000))
        points.append((delta, delta in fit_deltas, k, n))

    def rates(theta: np.ndarray, chosen: list[tuple[Any, ...]]) -> list[float]:
        return [math.exp(calibration._adwin_log_rate(p[0], float(theta[0]), float(theta[1]))) for p in chosen]

    fitted = [p for p in points if p[1]]
    theta = _fit([calibration.ADWIN_A, calibration.ADWIN_GAMMA],
                 lambda t: _deviance([(p[2], p[3]) for p in fitted], rates(t, fitted)))  # fmt: skip
    print("\n## ADWIN: simulated rate (exact N(0,1), clock 32, min_window_length 5, grace_period 10) vs the model")
    print(f"fit: a = {theta[0]:.5f}, gamma = {theta[1]:.4f}   (shipped: ADWIN_A = {calibration.ADWIN_A}, "
          f"ADWIN_GAMMA = {calibration.ADWIN_GAMMA})")  # fmt: skip
    print(f"{'delta':>6} {'fit':>4} {'alarms':>6} {'values':>12} {'rate':>10} {'95% bounds':>24} {'fit':>10}"
          f" {'shipped':>10}")  # fmt: skip
    for p in points:
        delta, used, k, n = p
        model, shipped = rates(theta, [p])[0], calibration.adwin_rate(delta)
        print(f"{delta:6.3f} {'fit' if used else 'held':>4} {_line(k, n)} {model:10.3e} {shipped:10.3e}")
    if not quick:
        print("reference std: delta 0.05 on input scaled by s (the std of s for 5000 values is 0.01)")
        for j, scale in enumerate((0.95, 1.0, 1.05)):
            k, n = run.count(2, 100 + j, "adwin", {"delta": 0.05}, 20_000_000, 2_000_000, 0, scale)
            print(f"  s = {scale:4.2f} {_line(k, n)}")


# (p, lines) simulated for the error-stream fits: lines that give rates of about 1e-3 .. 1e-5 per value
ERROR_GRID: dict[str, list[tuple[float, list[float]]]] = {
    "ddm": [(0.05, [2.0, 2.5, 3.0]), (0.5, [2.0, 2.5, 3.0])],
    "hddm_a": [(0.1, [0.3, 0.1, 0.03]), (0.5, [0.1, 0.01, 0.001])],
    "hddm_w": [(0.1, [0.2, 0.05, 0.02]), (0.5, [0.01, 0.001, 0.0001])],
}


def error_log_rate(kind: str, p: float, line: float, theta: Sequence[float] | np.ndarray) -> float:
    v = 4.0 * p * (1.0 - p)
    if kind == "ddm":
        fit = (float(theta[0]), float(theta[1]), float(theta[2]))
        return calibration.ddm_log_rate(line, v, calibration.DDM_WARM_START, fit, float(theta[3]))
    bound_log = math.log((2.0 if kind == "hddm_a" else 1.0) / line)
    return calibration.hddm_log_rate(bound_log, v, tuple(float(x) for x in theta))


def error_count(run: Runner, part: int, point: int, kind: str, p: float, line: float, expected: float,
                alarms: int) -> tuple[int, int]:  # fmt: skip
    """Simulate until about ``alarms`` detections are expected at rate ``expected``."""
    if kind == "ddm":
        length = 4 * calibration.DDM_WARM_START
        streams = max(200, math.ceil(alarms / (expected * 3 * calibration.DDM_WARM_START)))
    else:
        length = max(100_000, math.ceil(20 / expected / 4096) * 4096)
        streams = max(4, math.ceil(alarms / expected / length))
    tasks = [(kind, p, line, length, (run.seed, part, point, i)) for i in range(streams)]
    results = run.pool.map(error_alarms, tasks, chunksize=max(1, streams // 64))
    return sum(r[0] for r in results), sum(r[1] for r in results)


def fit_error_streams(run: Runner, quick: bool) -> None:
    shipped = {"ddm": (*calibration.DDM_FIT, calibration.DDM_G), "hddm_a": calibration.HDDM_A_FIT,
               "hddm_w": calibration.HDDM_W_FIT}  # fmt: skip
    want = 60 if quick else 250
    for i, (kind, grid) in enumerate(ERROR_GRID.items()):
        points = []
        for j, (p, lines) in enumerate(grid):
            for m, line in enumerate(lines):
                guess = 1e-3 * 10.0 ** (-m)  # the grid's lines step the rate by about a decade
                k, n = error_count(run, 4, i * 100 + j * 10 + m, kind, p, line, guess, want)
                points.append((p, line, k, n))
        start = list(shipped[kind])

        def loss(t: np.ndarray, pts: list[tuple[float, float, int, int]] = points, kd: str = kind) -> float:
            return _deviance([(q[2], q[3]) for q in pts], [math.exp(error_log_rate(kd, q[0], q[1], t)) for q in pts])

        theta = _fit(start, loss)
        print(f"\n## {kind}: simulated rate on Bernoulli(p) errors vs the model")
        print(f"fit: {', '.join(f'{x:.4f}' for x in theta)}   (shipped: {', '.join(f'{x:.4f}' for x in start)})")
        print(f"{'p':>5} {'line':>8} {'alarms':>6} {'values':>12} {'rate':>10} {'95% bounds':>24} {'fit':>10}"
              f" {'shipped':>10}")  # fmt: skip
        for p, line, k, n in points:
            model = math.exp(error_log_rate(kind, p, line, theta))
            ship = math.exp(error_log_rate(kind, p, line, start))
            print(f"{p:5.2f} {line:8.4g} {_line(k, n)} {model:10.3e} {ship:10.3e}")


def check_error_streams(run: Runner, quick: bool) -> None:
    print("\n## Error streams: target vs observed false alarms per value (lines from the shipped constants)")
    print(f"{'detector':>8} {'p':>5} {'target':>8} {'line':>12} {'alarms':>6} {'values':>12} {'rate':>10}"
          f" {'95% bounds':>24} {'obs/target':>10} {'target in bounds':>16}")  # fmt: skip
    rates = [1e-3, 1e-4] if quick else [1e-3, 1e-4, 1e-5]
    lines: dict[str, Callable[[float, float], float]] = {
        "ddm": calibration.ddm_threshold,
        "hddm_w": calibration.hddm_w_confidence,
    }  # fmt: skip (HDDM_A: none)
    point = 0
    for kind, line_of in lines.items():
        for p in (0.15, 0.3):
            for rate in rates:
                line = line_of(rate, p)
                k, n = error_count(run, 5, point, kind, p, line, rate, 120 if quick else 250)
                point += 1
                low, high = poisson_bounds(k)
                inside = "yes" if low <= rate * n <= high else ("no, safe" if rate * n > high else "NO")
                print(f"{kind:>8} {p:5.2f} {rate:8.0e} {line:12.6g} {_line(k, n)} {k / n / rate:10.3f} {inside:>16}")


def check(run: Runner, quick: bool) -> None:
    print("\n## Target vs observed false alarms per value, fresh reference of 5000 values per stream")
    print(f"{'detector':>12} {'target':>8} {'line':>12} {'alarms':>6} {'values':>12} {'rate':>10} {'95% bounds':>24}"
          f" {'obs/target':>10} {'target in bounds':>16}")  # fmt: skip
    ph_rates = [1e-3, 1e-4] if quick else [1e-3, 1e-4, 1e-5, 1e-6]
    ad_rates = [1e-4] if quick else [1e-4, 1e-5, 1e-6]
    rows: list[tuple[str, float, float, dict[str, Any]]] = []
    for rate in ph_rates:
        h = calibration.page_hinkley_threshold(rate, 0.1, PH_MIN_INSTANCES, REFERENCE_SIZE)
        rows.append(("page_hinkley", rate, h, {"delta": 0.1, "threshold": h, "alpha": 1.0,
                                               "min_instances": PH_MIN_INSTANCES}))  # fmt: skip
    for rate in ad_rates:
        delta = calibration.adwin_delta(rate)
        rows.append(("adwin", rate, delta, {"delta": delta}))
    for i, (name, rate, line, params) in enumerate(rows):
        alarms = (300 if quick else 1000) if rate >= 1e-4 else 300 if rate >= 1e-5 else 150
        kind = "ph" if name == "page_hinkley" else "adwin"
        k, n = run.count(3, i, kind, params, int(alarms / rate), max(int(20 / rate), 20_000), REFERENCE_SIZE)
        low, high = poisson_bounds(k)
        inside = "yes" if low <= rate * n <= high else "NO"
        print(f"{name:>12} {rate:8.0e} {line:12.6g} {_line(k, n)} {k / n / rate:10.3f} {inside:>16}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.calibrate", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs, under a minute")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--part",
        choices=("all", "numeric", "errors", "errors-fit", "errors-check"),
        default="all",
        help="numeric: Page-Hinkley and ADWIN; errors: DDM, HDDM_A, HDDM_W (errors-fit, errors-check: one half)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(f"# bench.calibrate {'--quick ' if args.quick else ''}(seed {args.seed}, {args.workers} workers)")
    print("rate: false alarms per value; bounds: exact Poisson 95%")
    with multiprocessing.Pool(args.workers) as pool:
        run = Runner(pool, args.seed)
        if args.part in ("all", "numeric"):
            fit_page_hinkley(run, args.quick)
            fit_adwin(run, args.quick)
            check(run, args.quick)
        if args.part in ("all", "errors", "errors-fit"):
            fit_error_streams(run, args.quick)
        if args.part in ("all", "errors", "errors-check"):
            check_error_streams(run, args.quick)
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
