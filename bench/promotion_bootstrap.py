"""The champion gate's paired bootstrap: the vectorised version in `tasks.gates` against
the obvious loop over `sklearn.metrics.roc_auc_score`, on the same resamples, in one run.

    python bench/promotion_bootstrap.py [--rows 28000] [--resamples 1000] [--repeats 3]

Rows default to one full month of flights (June 2013: 28k labelled rows); scores are
synthetic probabilities rounded to 4 decimals (model outputs tie, as real ones do), with
the flights' share of late arrivals (22%). Both sides see the same draws, so the intervals
must agree exactly; the script prints both, the times, the ratio and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.gates import auc_from_group_weights, compare_roc_auc, score_groups


def problem(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=rows)
    y = (rng.random(rows) < 1 / (1 + np.exp(-(1.2 * signal - 1.6)))).astype(int)
    champion = 1 / (1 + np.exp(-(signal + rng.normal(scale=1.3, size=rows))))
    challenger = 1 / (1 + np.exp(-(signal + rng.normal(scale=1.2, size=rows))))
    return y, np.round(challenger, 4), np.round(champion, 4)


def loop_interval(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, draws: np.ndarray, confidence: float
) -> tuple[float, float]:
    gains = [roc_auc_score(y[d], a[d]) - roc_auc_score(y[d], b[d]) for d in draws]
    alpha = 1 - confidence
    low, high = np.quantile(gains, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def vectorised_interval(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, draws: np.ndarray, confidence: float
) -> tuple[float, float]:
    """`compare_roc_auc`'s arithmetic on given draws (it draws its own in chunks)."""
    resamples, rows = draws.shape
    counts = np.bincount((draws + np.arange(resamples)[:, None] * rows).ravel(), minlength=resamples * rows)
    counts = counts.reshape(resamples, rows).astype(np.float64)
    (ga, na), (gb, nb) = score_groups(y, a), score_groups(y, b)
    gains = auc_from_group_weights(counts @ ga, na) - auc_from_group_weights(counts @ gb, nb)
    alpha = 1 - confidence
    low, high = np.quantile(gains, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def best_of(repeats: int, fn, *args):  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=28_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    y, challenger, champion = problem(args.rows)
    draws = np.random.default_rng(1).integers(0, args.rows, size=(args.resamples, args.rows))
    loop_s, loop_ci = best_of(1, loop_interval, y, challenger, champion, draws, 0.95)  # slow: once
    vec_s, vec_ci = best_of(args.repeats, vectorised_interval, y, challenger, champion, draws, 0.95)
    gate_s, comparison = best_of(
        args.repeats, compare_roc_auc, y, challenger, champion, args.resamples, 0.95, 0
    )

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, load average {load:.2f}")
    print(f"{args.rows} rows ({y.mean():.0%} positive), {args.resamples} paired resamples, 95% interval")
    print(f"{'method':<42}{'seconds':>9}{'CI low':>10}{'CI high':>10}")
    print(
        f"{'loop over roc_auc_score (same draws)':<42}{loop_s:>9.2f}{loop_ci[0]:>+10.5f}{loop_ci[1]:>+10.5f}"
    )
    print(f"{'vectorised (same draws)':<42}{vec_s:>9.2f}{vec_ci[0]:>+10.5f}{vec_ci[1]:>+10.5f}")
    print(
        f"{'compare_roc_auc (the gate, own draws)':<42}{gate_s:>9.2f}"
        f"{comparison.ci_low:>+10.5f}{comparison.ci_high:>+10.5f}"
    )
    print(
        f"speed-up, vectorised vs loop: {loop_s / vec_s:.0f}x; max CI difference on the same draws:"
        f" {max(abs(loop_ci[0] - vec_ci[0]), abs(loop_ci[1] - vec_ci[1])):.2e}"
    )


if __name__ == "__main__":
    main()
