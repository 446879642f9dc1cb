"""How the cost grows with data: the training pipeline and the monitoring flow at several
sizes of the 2013 flights, resampled by `bench/scale_data.py` (seeded).

    python bench/scaling.py [--sizes 10000 100000 1000000 5000000] [--max-train-rows 50000]
                            [--data-dir DIR] [--out results.json]

For each size, in this order, each step in its own process (so its peak memory is its own):

1. `scale_data.generate`: a landing zone of that many flights over the 12 months of 2013;
2. the training flow on 2013-01..2013-12 (the last month held out), with Prefect and MLflow
   servers on free ports and a fresh state folder per size;
3. the monitoring flow on 2013-12 (the held-out month, about a twelfth of the rows)
   against the version step 2 registered, whose reference is the other eleven months.

Wall time and peak resident memory (the flow's own process; the servers are apart) per
step and size, and the growth exponent: the slope of log(time) against log(rows). Fitting
reads at most `training.max_train_rows` rows of the training split (a seeded subsample, the
config's own setting): the cap is printed with the figures, since above it fitting time no
longer grows. `training.min_gain_over_baseline` is set to -1 (the best candidate is
registered whatever its gain): small sizes do not beat the baseline, and cost is measured here. Monitoring samples its reference to `monitoring.reference_max_rows`, as
configured. A size whose step fails (out of memory included) is recorded with the error and
the next sizes still run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import cpu_seconds, isolated_config, loglog_slope, machine_line, peak_rss_mb, write_result

DEFAULT_SIZES = [10_000, 100_000, 1_000_000, 5_000_000]
PERIODS = ("2013-01", "2013-12")
MONITORED = "2013-12"
SEED = 0


def _train(config_path: str) -> dict[str, Any]:
    from flows.training import TrainingRequest, training_pipeline
    from mlops.clients import client_settings
    from mlops.config import load_config

    with client_settings(load_config(config_path)):
        outcome = training_pipeline(
            TrainingRequest(start=PERIODS[0], end=PERIODS[1], config_path=config_path)
        )
    return {"model_version": outcome.model_version, "roc_auc": outcome.metrics.get("holdout_roc_auc")}


def _monitor(config_path: str) -> dict[str, Any]:
    from flows.monitoring import MonitoringRequest, monitoring
    from mlops.clients import client_settings
    from mlops.config import load_config

    with client_settings(load_config(config_path)):
        outcome = monitoring(
            MonitoringRequest(config_path=config_path, period=MONITORED, request_retraining=False)
        )
    return {
        "verdict": outcome.verdict,
        "current_rows": outcome.figures.get("rows"),
        "reference_rows": outcome.figures.get("reference_rows"),
    }


def _child(step: str, config_path: str) -> None:
    """One step in this process; its figures as JSON on the last line."""
    started = time.perf_counter()
    result = (_train if step == "train" else _monitor)(config_path)
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - started,
                "cpu_seconds": cpu_seconds(),
                "peak_mb": peak_rss_mb(),
                **result,
            },
            default=str,
        )
    )


def _run_step(step: str, config_path: Path, log: Path) -> dict[str, Any]:
    with log.open("w") as out:
        done = subprocess.run(
            [sys.executable, __file__, "--child", step, "--config", str(config_path)],
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
    if done.returncode != 0:
        killed = done.returncode < 0 or done.returncode == 137
        reason = "killed (out of memory?)" if killed else f"exit code {done.returncode}"
        tail = log.read_text()[-1500:]
        return {"error": f"{step} failed: {reason}", "log_tail": tail}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_size(rows: int, workdir: Path, max_train_rows: int) -> dict[str, Any]:
    from app.stack import start_stack, stop_stack
    from bench.scale_data import generate
    from mlops.config import load_config

    started = time.perf_counter()
    data = generate(rows, workdir / "data", SEED)
    generated = time.perf_counter() - started
    config_path = isolated_config(
        workdir / "run",
        Path(data["landing"]),
        # The subject is cost, not quality: at 10k rows no tree beats the logistic baseline,
        # and a run that registers nothing leaves the monitoring flow nothing to judge against.
        training={"max_train_rows": max_train_rows, "min_gain_over_baseline": -1.0},
        expectations_dir=Path(data["expectations"]),
    )
    config = load_config(config_path)
    start_stack(config, timeout=600)  # a loaded shared machine starts servers slowly
    try:
        figures: dict[str, Any] = {"rows": rows, "generate_seconds": generated}
        figures["train"] = _run_step("train", config_path, workdir / "train.log")
        if "error" not in figures["train"]:
            figures["monitor"] = _run_step("monitor", config_path, workdir / "monitor.log")
        else:
            figures["monitor"] = {"error": "not run: training failed"}
    finally:
        stop_stack(config)
    return figures


def growth(results: list[dict[str, Any]], step: str, key: str) -> float | None:
    ok = [r for r in results if key in r.get(step, {})]
    return loglog_slope([r["rows"] for r in ok], [r[step][key] for r in ok])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES)
    parser.add_argument("--max-train-rows", type=int, default=50_000)
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="keep generated data and logs here (outside git)"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", choices=["train", "monitor"])
    parser.add_argument("--config")
    args = parser.parse_args()
    from bench.common import exit_on_sigterm

    exit_on_sigterm()
    if args.child:
        _child(args.child, args.config)
        return

    print(f"machine: {machine_line()}", flush=True)
    base = Path(args.data_dir or tempfile.mkdtemp(prefix="bench-scaling-"))
    results = []
    try:
        for rows in args.sizes:
            workdir = base / f"rows-{rows}"
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir(parents=True)
            figures = run_size(rows, workdir, args.max_train_rows)
            results.append(figures)
            for step in ("train", "monitor"):
                got = figures[step]
                text = got.get("error") or f"{got['seconds']:8.1f} s  peak {got['peak_mb']:7.0f} MB"
                print(f"  {rows:>9,} rows  {step:8s} {text}", flush=True)
            if args.data_dir is None:
                shutil.rmtree(workdir / "data", ignore_errors=True)
            exponents = save(
                args, results
            )  # after every size: a long run stopped early keeps what it measured
    finally:
        if args.data_dir is None:
            shutil.rmtree(base, ignore_errors=True)
    print("growth exponents (log-log slope): " + ", ".join(f"{k} {v:.2f}" for k, v in exponents.items() if v))


def save(args: argparse.Namespace, results: list[dict[str, Any]]) -> dict[str, float | None]:
    exponents = {
        f"{step}_{key}": growth(results, step, key)
        for step in ("train", "monitor")
        for key in ("seconds", "cpu_seconds", "peak_mb")
    }
    done = [r["rows"] for r in results]
    write_result(
        args.out,
        "scaling",
        {
            "sizes": done,
            "not_run": {
                rows: "not reached: the run was stopped before this size"
                for rows in args.sizes
                if rows not in done
            },
            "seed": SEED,
            "max_train_rows": args.max_train_rows,
            "periods": f"{PERIODS[0]}..{PERIODS[1]}",
            "monitored_period": MONITORED,
            "results": results,
            "exponents": exponents,
        },
    )
    return exponents


if __name__ == "__main__":
    main()
