"""Cold start: how long until the stack answers, and until a triggered run does work.

    python bench/cold_start.py [--repeats 3] [--out results.json]

Each repeat uses a fresh state folder and free ports (new SQLite databases: a first start):

- `mlops up` → both servers healthy: the wall time of a fresh Python process running
  `start_stack`, what `mlops up` runs (its imports included), with only the Prefect and MLflow
  servers enabled; it returns once both answer their health checks, checked again right after;
- trigger → first task running: with the deployments served (`mlops up` with
  `serve_deployments`), a training run is created from its deployment, as a UI click or
  the drift trigger creates it; measured from the moment the API accepted it to the start
  time Prefect records for the flow run's first task. The runner polls for scheduled runs,
  so this includes its poll interval (Prefect's default, 10 s, unless set otherwise).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import isolated_config, machine_line, write_result

MLOPS = str(Path(sys.executable).parent / "mlops")
TIMEOUT = 600.0


def _mlops(config: Path, *args: str) -> float:
    """`mlops up` / `mlops down` as a user runs them; `up` through `start_stack` with a long
    timeout (the CLI's 90 s is too short for a loaded shared machine)."""
    started = time.perf_counter()
    code = (
        "import sys; from pathlib import Path; from mlops.config import load_config;"
        " from app.stack import start_stack;"
        f" start_stack(load_config(sys.argv[1]), timeout={TIMEOUT}, config_file=Path(sys.argv[1]))"
    )
    command = (
        [sys.executable, "-c", code, str(config)]
        if args == ("up",)
        else [MLOPS, "--config", str(config), *args]
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT + 60)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stdout[-1000:]}{done.stderr[-2000:]}")
    return time.perf_counter() - started


def servers_up(workdir: Path) -> float:
    import httpx

    from mlops.config import load_config

    path = isolated_config(workdir, workdir / "landing")
    config = load_config(path)
    try:
        seconds = _mlops(path, "up")
        for url in (f"{config.stack.api_url}/health", f"{config.stack.tracking_uri}/health"):
            httpx.get(url, timeout=10).raise_for_status()
    finally:
        _mlops(path, "down")
    return seconds


def first_task(workdir: Path) -> dict[str, float]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort
    from prefect.deployments import run_deployment

    from app.seed import seed_landing
    from flows.training import TrainingRequest
    from mlops.clients import client_settings
    from mlops.config import load_config
    from mlops.storage import open_store

    path = isolated_config(workdir, workdir / "landing", serve_deployments=True)
    config = load_config(path)
    seed_landing(config, open_store(str(workdir / "landing"), config.data.s3), ["2013-01"], 0.05)
    up_seconds = _mlops(path, "up")
    try:
        with client_settings(config), get_client(sync_client=True) as client:
            name = f"training-pipeline/{config.project}"
            deadline = time.monotonic() + TIMEOUT
            while True:  # the runner registers the deployments once it has imported the flows
                try:
                    client.read_deployment_by_name(name)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            request = TrainingRequest(start="2013-01", end="2013-01", config_path=str(path))
            run = run_deployment(name, parameters={"request": request.model_dump(mode="json")}, timeout=0)
            while True:
                tasks = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
                    sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                    limit=10,
                )
                started = [t.start_time for t in tasks if t.start_time is not None]
                if started:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no task of flow run {run.id} started in {TIMEOUT:.0f} s")
                time.sleep(0.25)
            flow_run = client.read_flow_run(run.id)
            created = run.created
            return {
                "up_with_deployments_seconds": up_seconds,
                "trigger_to_flow_start_seconds": (flow_run.start_time - created).total_seconds()
                if flow_run.start_time
                else float("nan"),
                "trigger_to_first_task_seconds": (min(started) - created).total_seconds(),
            }
    finally:
        _mlops(path, "down")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from bench.common import exit_on_sigterm

    exit_on_sigterm()

    runs: list[dict[str, Any]] = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
            figures = {"up_seconds": servers_up(Path(tmp) / "up")}
            figures |= first_task(Path(tmp) / "trigger")
        runs.append(figures)
        print(
            f"  run {i + 1}: mlops up {figures['up_seconds']:.1f} s; trigger → first task"
            f" {figures['trigger_to_first_task_seconds']:.1f} s",
            flush=True,
        )
    print(f"machine: {machine_line()}")
    median = {k: sorted(r[k] for r in runs)[(len(runs) - 1) // 2] for k in runs[0]}
    write_result(args.out, "cold_start", {"repeats": args.repeats, "runs": runs, "median": median})


if __name__ == "__main__":
    main()
