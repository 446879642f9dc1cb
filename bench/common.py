"""What every benchmark section shares: the machine it ran on, an isolated copy of the
project config (temp state, free ports, nothing of the repo's `state/`), peak memory,
the growth exponent, and the JSON result file `bench/report.py` turns into REPORT.md.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS_DIR = ROOT / "bench" / "results"  # git-ignored: raw JSON, generated data, logs


def exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit, so `finally` blocks stop the servers a benchmark started
    (background jobs ignore SIGINT, and the default SIGTERM skips every `finally`)."""
    import signal

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def machine() -> dict[str, Any]:
    """Cores, memory, CPU model, load average: printed with every figure."""
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(memory_gb, 1),
        "cpu": cpu,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }


def machine_line(info: dict[str, Any] | None = None) -> str:
    info = info or machine()
    load = ", ".join(f"{x:.1f}" for x in info["load_average"])
    return (
        f"{info['cores']} cores ({info['cpu']}), {info['memory_gb']:.0f} GB, "
        f"load average {load}, Python {info['python']}"
    )


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory of this process (or of its waited-for children), in MB."""
    import resource

    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its waited-for children: unlike wall time,
    barely moved by other processes on a shared machine (server processes not included)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def write_result(path: Path | None, section: str, figures: dict[str, Any]) -> dict[str, Any]:
    """One section's figures, stamped with the date and the machine, as JSON."""
    payload = {
        "section": section,
        "run_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        **figures,
    }
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, default=str))
    return payload


def loglog_slope(sizes: list[float], values: list[float]) -> float | None:
    """Least-squares slope of log(value) against log(size): 1.0 is linear growth."""
    points = [(math.log(s), math.log(v)) for s, v in zip(sizes, values, strict=True) if s > 0 and v > 0]
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def isolated_config(
    workdir: Path,
    landing: Path,
    base_config: Path = ROOT / "mlops.yaml",
    *,
    ports: tuple[int, int] | None = None,
    model_name: str | None = None,
    serve_deployments: bool = False,
    training: dict[str, Any] | None = None,
    expectations_dir: Path | None = None,
) -> Path:
    """The project config with state, snapshots, quarantine and predictions under `workdir`,
    the landing zone at `landing`, free ports (never the defaults 4200/5000/...), and no
    Evidently UI. Written to `workdir/mlops.yaml`; returns that path."""
    from mlops.config import load_config, save_config
    from tests.ports import free_ports

    config = load_config(base_config)
    prefect_port, mlflow_port, evidently_port, runner_port, serving_port = free_ports(5)
    if ports:
        prefect_port, mlflow_port = ports
    stack_update = {
        "state_dir": str(workdir / "state"),
        "prefect_port": prefect_port,
        "mlflow_port": mlflow_port,
        "evidently_port": evidently_port,
        "runner_port": runner_port,
        "prefect_api_url": None,
        "mlflow_tracking_uri": None,
        "evidently_ui": False,
        "serve_deployments": serve_deployments,
        "serve_predictions": False,  # the stack's own prediction service, where the stack has one
    }
    fields = type(config.stack).model_fields
    stack = config.stack.model_copy(update={k: v for k, v in stack_update.items() if k in fields})
    data = config.data.model_copy(
        update={
            "landing_uri": str(landing),
            "snapshot_uri": str(workdir / "snapshots"),
            "quarantine_uri": str(workdir / "quarantine"),
        }
    )
    update: dict[str, Any] = {
        "stack": stack,
        "data": data,
        "serving": config.serving.model_copy(
            update={
                "prediction_log_uri": str(workdir / "predictions"),
                "mode": "none",
                "port": serving_port,
            }
        ),
    }
    if model_name:
        update["registry"] = config.registry.model_copy(update={"model_name": model_name})
    if training:
        update["training"] = config.training.model_copy(update=training)
    if expectations_dir is not None:
        update["expectations_dir"] = str(expectations_dir)
    return save_config(config.model_copy(update=update), workdir / "mlops.yaml")
