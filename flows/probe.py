"""The operational probe: a fresh interpreter that downloads a model from the registry, loads
it, then times it on the rows whose Parquet path it reads from stdin, printing one JSON line
(`python -m flows.probe MODEL_URI CALLS BATCH_ROWS`). The promotion flow starts it early, so
the load overlaps the flow's own work, and hands it rows when the gates need the figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from threadpoolctl import threadpool_limits

from mlops.config import OperationalGateConfig
from tasks.gates import ProbeResult, measure_speed


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def probe_main(model_uri: str, latency_calls: int, batch_rows: int) -> None:
    """The probe process: download and load the model at once, then wait for the path of the
    rows to time it on (one stdin line), so that the timing runs while the caller is idle."""
    from mlops.tracking import download_model, load_local_model

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        local = download_model(model_uri, Path(tmp))
        model = load_local_model(local)
        load_seconds = time.perf_counter() - started
        size = folder_mb(local)
    rows = pd.read_parquet(sys.stdin.readline().strip())
    # One OpenMP thread, as a server answering concurrent requests runs it: with more, one-row
    # calls wait on thread barriers (measured on 2 busy cores: p95 1.7 s vs 8 ms).
    with threadpool_limits(limits=1, user_api="openmp"):
        speed = measure_speed(model, rows, latency_calls, batch_rows)
    print(json.dumps(asdict(ProbeResult(True, "", load_seconds, size, **speed))))


class ModelProbe:
    """A new interpreter that loads the model from the registry alone, with nothing from this
    process (imports, pickled classes) to lean on. It loads as soon as it starts, overlapping
    the caller's work, and is timed only when `measure` hands it rows."""

    def __init__(self, model_uri: str, settings: OperationalGateConfig, tracking_uri: str) -> None:
        self.model_uri = model_uri
        self.settings = settings
        self.started = time.perf_counter()
        # A file, not a pipe: a full pipe would stall the child. Closed by `close`.
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
        command = [sys.executable, "-m", "flows.probe", model_uri]
        command += [str(settings.latency_calls), str(settings.batch_rows)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env
        )

    def measure(self, rows: pd.DataFrame) -> ProbeResult:
        timeout = self.settings.timeout_seconds
        try:
            with tempfile.TemporaryDirectory() as tmp:
                rows_path = Path(tmp) / "rows.parquet"
                rows.to_parquet(rows_path, index=False)
                try:
                    stdout, _ = self.process.communicate(f"{rows_path}\n", timeout=timeout)
                except subprocess.TimeoutExpired:
                    return ProbeResult(
                        False, f"{self.model_uri}: the probe did not finish within {timeout:.0f} s"
                    )
                except BrokenPipeError:  # it died while loading; the exit code and stderr say why
                    stdout = ""
                    self.process.wait()
            seconds = time.perf_counter() - self.started
            if self.process.returncode != 0:
                self.stderr.seek(0)
                tail = " | ".join(self.stderr.read().strip().splitlines()[-3:])
                return ProbeResult(
                    False, f"{self.model_uri} did not load in a fresh process: {tail}", seconds=seconds
                )
            return ProbeResult(**{**json.loads(stdout.strip().splitlines()[-1]), "seconds": seconds})
        finally:
            self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stderr.close()


if __name__ == "__main__":
    uri, calls, batch = sys.argv[1:4]
    probe_main(uri, int(calls), int(batch))
