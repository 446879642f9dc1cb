"""Training pipeline overhead: the orchestrated flow (Prefect + MLflow) against the same
computation as a bare script, on the full 2013 data, in one run.

    python bench/training_overhead.py [--start 2013-01] [--end 2013-12] [--repeats 1]

Each measurement runs in its own process with a fresh state folder (no cache, no earlier
registry), so neither side profits from the other. Prints wall time, the ratio, and the
peak resident memory of each process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bare_pipeline(config_path: str, start: str, end: str) -> dict:
    """Ingest, validate, build features, train the candidates in parallel, select, serialise:
    the flow's work with no Prefect and no MLflow."""
    from concurrent.futures import ThreadPoolExecutor

    import skops.io as sio

    from mlops.config import load_config
    from mlops.objective import Objective
    from mlops.storage import open_store
    from tasks.features import build_training_frame, fingerprint_inputs, time_split
    from tasks.ingest import TimeColumn, ingest_file
    from tasks.train import fit_and_evaluate, select_best
    from tasks.validate import load_suite_json, validate_frame

    config = load_config(config_path)
    data = config.data
    landing, snapshots, quarantine = (
        open_store(config.store_uri(u), data.s3)
        for u in (data.landing_uri, data.snapshot_uri, data.quarantine_uri)
    )
    periods = data.periods.range(start, end)
    jobs = {p: (data.batch_table, p, data.tables[data.batch_table].key(p)) for p in periods}
    jobs |= {t: (t, None, s.key()) for t, s in data.tables.items() if t != data.batch_table}
    times = TimeColumn.of(data)
    with ThreadPoolExecutor(2) as pool:
        batches = dict(
            zip(
                jobs,
                pool.map(lambda j: ingest_file(landing, snapshots, quarantine, *j, times), jobs.values()),
                strict=True,
            )
        )
        expectations = config.path(config.expectations_dir)

        def check(label: str):
            snapshot, frame = batches[label]
            suite = load_suite_json(expectations, data.tables[snapshot.table].suite)
            return validate_frame(
                frame,
                suite,
                label,
                data.time_column if snapshot.period else None,
                snapshot.period,
                data.periods,
                data.timezone,
            )

        reports = list(pool.map(check, [k for k in batches if data.tables[batches[k][0].table].suite]))
    assert all(r.success for r in reports), [r.summary() for r in reports if not r.success]
    fingerprint = fingerprint_inputs(config.fingerprint, *sorted(s.sha256 for s, _ in batches.values()))
    dims = {k: f for k, (s, f) in batches.items() if s.period is None}
    training = build_training_frame({p: batches[p][1] for p in periods}, dims, config, fingerprint)
    if config.features.training_suite:
        suite = load_suite_json(config.path(config.expectations_dir), config.features.training_suite)
        assert validate_frame(training.frame, suite, "training").success
    split = time_split(training, config.features, config.target.label, config.split.holdout_periods)
    with ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(
                lambda c: fit_and_evaluate(
                    c, split, config.features, config.training, Objective.of(config), config.split.cv_folds, 1
                ),
                config.training.candidates,
            )
        )
    best = select_best(results, Objective.of(config), config.training.min_gain_over_baseline)
    Path(tempfile.mkdtemp()).joinpath("model.skops").write_bytes(sio.dumps(best.pipeline))
    return {"best": best.name, "roc_auc": best.evaluation.metrics["roc_auc"], "rows": len(training.frame)}


def orchestrated_pipeline(config_path: str, start: str, end: str) -> dict:
    from flows.training import TrainingRequest, training_pipeline
    from mlops.clients import client_settings
    from mlops.config import load_config

    with client_settings(load_config(config_path)):
        outcome = training_pipeline(TrainingRequest(start=start, end=end, config_path=config_path))
    return {"version": outcome.model_version, "roc_auc": outcome.metrics["holdout_roc_auc"]}


def _child(kind: str, config_path: str, start: str, end: str) -> None:
    """Run one side in this process and print its figures as JSON on the last line."""
    import resource

    started = time.perf_counter()
    result = (bare_pipeline if kind == "bare" else orchestrated_pipeline)(config_path, start, end)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from bench.common import cpu_seconds

    print(
        json.dumps(
            {"kind": kind, "seconds": seconds, "cpu_seconds": cpu_seconds(), "peak_mb": peak_mb, **result}
        )
    )


def _run(kind: str, config_path: str, start: str, end: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--config", config_path, "--start", start, "--end", end],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if done.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(ROOT / "mlops.yaml"))
    parser.add_argument("--start", default="2013-01")
    parser.add_argument("--end", default="2013-12")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--sample", type=float, default=None, help="seed a sample (smoke runs only)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--child", choices=["bare", "orchestrated"])
    args = parser.parse_args()
    from bench.common import exit_on_sigterm

    exit_on_sigterm()
    if args.child:
        _child(args.child, args.config, args.start, args.end)
        return

    from app.seed import seed_landing
    from app.stack import start_stack, stop_stack
    from bench.common import isolated_config, machine_line, write_result
    from mlops.config import load_config
    from mlops.storage import open_store

    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        tmp_path = Path(tmp)
        landing = tmp_path / "landing"
        base = load_config(args.config)
        seed_landing(
            base,
            open_store(str(landing), base.data.s3),
            base.data.periods.range(args.start, args.end),
            args.sample,
        )
        stack_config = load_config(isolated_config(tmp_path / "stack", landing, Path(args.config)))
        print(f"machine: {machine_line()}")
        print(
            f"data: {args.start}..{args.end}{f' sampled {args.sample}' if args.sample else ''}; starting servers…"
        )
        start_stack(stack_config, timeout=600)  # a loaded shared machine starts servers slowly
        try:
            rows = []
            for i in range(args.repeats):
                for kind in ("bare", "orchestrated"):
                    workdir = tmp_path / f"{kind}-{i}"
                    # The orchestrated side shares the running servers but nothing else; a model
                    # name of its own, so a repeat registers anew instead of finding the last version.
                    config_path = isolated_config(
                        workdir,
                        landing,
                        Path(args.config),
                        ports=(stack_config.stack.prefect_port, stack_config.stack.mlflow_port),
                        model_name=f"{base.registry.model_name}-{kind}-{i}",
                        # A sample may not beat the baseline by the configured margin, which
                        # stops both sides before they finish: on a sample, register the best.
                        training={"min_gain_over_baseline": -1.0} if args.sample else None,
                    )
                    rows.append(_run(kind, str(config_path), args.start, args.end))
                    print(
                        f"  {kind:13s} {rows[-1]['seconds']:7.1f} s  CPU {rows[-1]['cpu_seconds']:7.1f} s"
                        f"  peak {rows[-1]['peak_mb']:6.0f} MB  "
                        f"ROC-AUC {rows[-1]['roc_auc']:.4f}",
                        flush=True,
                    )
        finally:
            stop_stack(stack_config)
    bare = min(rows, key=lambda r: r["seconds"] if r["kind"] == "bare" else float("inf"))
    orchestrated = min(rows, key=lambda r: r["seconds"] if r["kind"] == "orchestrated" else float("inf"))
    ratio = orchestrated["seconds"] / bare["seconds"]
    print(
        f"orchestrated / bare = {orchestrated['seconds']:.1f} s / {bare['seconds']:.1f} s = {ratio:.2f}x"
        " (target <= 1.2x)"
    )
    write_result(
        args.out,
        "training_overhead",
        {
            "periods": f"{args.start}..{args.end}",
            "sample": args.sample,
            "rows": bare.get("rows"),
            "seed": base.training.seed,
            "repeats": args.repeats,
            "runs": rows,
            "bare_seconds": bare["seconds"],
            "orchestrated_seconds": orchestrated["seconds"],
            "ratio": ratio,
            "cpu_ratio": orchestrated["cpu_seconds"] / bare["cpu_seconds"],
            "bare_peak_mb": bare["peak_mb"],
            "orchestrated_peak_mb": orchestrated["peak_mb"],
        },
    )


if __name__ == "__main__":
    main()
