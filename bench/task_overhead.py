"""Prefect's cost per task: trivial tasks in a flow against the same calls as plain Python,
with the project's client settings (a real Prefect server on a free port, results persisted
as the training flow persists them).

    python bench/task_overhead.py [--tasks 200] [--repeats 3] [--out results.json]

Measured in one process, each variant the best of `--repeats`:

- bare: `--tasks` calls of a function that adds two numbers;
- empty flow: a flow that does nothing (the fixed cost of a flow run);
- sequential tasks: the flow calling the function as a task `--tasks` times;
- submitted tasks: the same tasks submitted to the ThreadPoolTaskRunner (2 workers, as the
  training flow) and awaited.

Per-task overhead = (flow with tasks - empty flow) / tasks.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import isolated_config, machine_line, write_result


def add(a: int, b: int) -> int:
    return a + b


def best_of(repeats: int, run: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(tasks: int, repeats: int) -> dict[str, float]:
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    add_task = task(add, name="add")

    @flow(name="bench-empty")
    def empty() -> None:
        return None

    @flow(name="bench-sequential")
    def sequential(n: int) -> int:
        return sum(add_task(i, 1) for i in range(n))

    @flow(name="bench-submitted", task_runner=ThreadPoolTaskRunner(max_workers=2))
    def submitted(n: int) -> int:
        return sum(f.result() for f in [add_task.submit(i, 1) for i in range(n)])

    sequential(2)  # imports, the flow's registration, the first client: not per task
    bare = best_of(repeats, lambda: sum(add(i, 1) for i in range(tasks)))
    figures = {
        "bare_seconds": bare,
        "empty_flow_seconds": best_of(repeats, empty),
        "sequential_seconds": best_of(repeats, lambda: sequential(tasks)),
        "submitted_seconds": best_of(repeats, lambda: submitted(tasks)),
    }
    for kind in ("sequential", "submitted"):
        figures[f"{kind}_ms_per_task"] = (
            1000 * (figures[f"{kind}_seconds"] - figures["empty_flow_seconds"]) / tasks
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from bench.common import exit_on_sigterm

    exit_on_sigterm()

    from app.stack import start_stack, stop_stack
    from mlops.clients import client_settings
    from mlops.config import load_config

    with tempfile.TemporaryDirectory(prefix="bench-tasks-") as tmp:
        config = load_config(isolated_config(Path(tmp), Path(tmp) / "landing"))
        start_stack(config, timeout=600)  # a loaded shared machine starts servers slowly
        try:
            with client_settings(config):
                figures = measure(args.tasks, args.repeats)
                from prefect.logging.handlers import APILogWorker

                APILogWorker.drain_all(timeout=10)  # the flows' logs, while the server still listens
        finally:
            stop_stack(config)
    print(f"machine: {machine_line()}")
    print(
        f"{args.tasks} trivial tasks: bare {figures['bare_seconds'] * 1000:.2f} ms; empty flow"
        f" {figures['empty_flow_seconds']:.2f} s; per task {figures['sequential_ms_per_task']:.1f} ms"
        f" sequential, {figures['submitted_ms_per_task']:.1f} ms submitted"
    )
    write_result(args.out, "task_overhead", {"tasks": args.tasks, "repeats": args.repeats, **figures})


if __name__ == "__main__":
    main()
