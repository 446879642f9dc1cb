"""Load: the prediction service (`mlops serve`, a subprocess) on loopback under many concurrent
clients, with the `champion` alias moved to another version in the middle.

Every request must answer 200 from a registered version (the old champion, then the new
one): zero errors and zero failed requests across the swap. The short run (50 clients,
10 s) is part of `make test`; the long one (200 clients, 60 s) is marked `long` and runs
under `make reliability`.

The model is a real version registered by the training flow (baseline + logistic regression
on the 8% sample); the second version registers the same artifacts again, so the swap makes
the service download, load and switch to a new version without a second training run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from flows.training import TrainingRequest, training_pipeline
from mlops.clients import client_settings
from mlops.config import CandidateConfig, ProjectConfig, save_config
from mlops.storage import Store
from mlops.tracking import Tracker
from serving.samples import feature_frame, to_records
from tests.ports import free_port

from .invariants import service_problems

MODEL = "flight-delay-load"
BASELINE = CandidateConfig(name="majority", estimator="dummy", baseline=True, params={"strategy": "prior"})
LOGISTIC = CandidateConfig(name="logistic", estimator="logistic_regression", params={"max_iter": 300})
REQUEST_TIMEOUT = 60.0  # a slow answer on a shared machine is not an error; no answer in 60 s is
# Clients keep httpx's default keep-alive expiry (5 s): the service holds idle connections
# longer (serving.app.run_server), so no request goes out on a connection it is closing.


@dataclass(frozen=True)
class LoadSetup:
    config: ProjectConfig
    config_path: Path
    tracker: Tracker
    old: str  # the champion when the load starts
    new: str  # the champion after the swap
    records: list[dict[str, Any]]


@pytest.fixture(scope="module")
def load_setup(stack, sampled_landing: Store, stack_config: ProjectConfig, tmp_path_factory) -> LoadSetup:
    tmp = tmp_path_factory.mktemp("load")
    registry = stack_config.registry.model_copy(update={"model_name": MODEL})
    training = stack_config.training.model_copy(update={"candidates": [BASELINE, LOGISTIC]})
    serving = stack_config.serving.model_copy(
        update={"prediction_log_uri": str(tmp / "predictions"), "poll_seconds": 0.5, "workers": 1}
    )
    config = stack_config.model_copy(update={"registry": registry, "training": training, "serving": serving})
    path = save_config(config, tmp / "mlops.yaml")
    with client_settings(config):
        outcome = training_pipeline(TrainingRequest(start="2013-01", end="2013-05", config_path=str(path)))
    tracker = Tracker(config.stack.tracking_uri, config.registry.experiment)
    old = outcome.model_version
    source = tracker.client.get_model_version(MODEL, old)
    # The same logged model registered again: a new version to load, no second training run
    # (and no `training_fingerprint` tag, which belongs to the version the flow registered).
    again = tracker.client.create_model_version(
        MODEL,
        source.source,
        run_id=source.run_id,
        # MLflow 3 sources read models:/<logged model id>; the version may not echo the id itself
        model_id=source.model_id or source.source.removeprefix("models:/"),
    )
    new = str(again.version)
    tracker.set_alias(MODEL, "champion", old)
    records = to_records(feature_frame(config, sampled_landing, "2013-06").head(200))
    return LoadSetup(config, path, tracker, old, new, records)


@pytest.fixture
def service(load_setup: LoadSetup, tmp_path: Path) -> Iterator[str]:
    """`mlops serve` in its own process group on a free port; yields its base URL once ready."""
    load_setup.tracker.set_alias(MODEL, "champion", load_setup.old)
    port = free_port()
    command = [sys.executable, "-m", "app.cli", "--config", str(load_setup.config_path), "serve"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (
                f"mlops serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
            assert time.monotonic() < deadline, f"mlops serve not ready in 180 s:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # its own group (start_new_session): only what we started
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@dataclass
class LoadResult:
    seconds: float
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    first_new_at: float | None = None  # seconds into the run
    swap_at: float | None = None
    old_after_new: int = 0  # answers from the old version after a client had seen the new one
    error_times: list[float] = field(default_factory=list)  # seconds into the run

    @property
    def requests(self) -> int:
        return self.ok + sum(self.errors.values())

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds


async def run_load(url: str, setup: LoadSetup, clients: int, seconds: float) -> LoadResult:
    """`clients` concurrent clients posting one record each, back to back, for `seconds`;
    `champion` moves from setup.old to setup.new halfway through."""
    result = LoadResult(seconds=seconds)
    started = time.monotonic()
    deadline = started + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client_loop(slot: int, http: httpx.AsyncClient) -> None:
        seen_new = False
        i = slot
        while time.monotonic() < deadline:
            i += 1
            record = setup.records[i % len(setup.records)]
            try:
                response = await http.post(f"{url}/predict", json={"records": [record]})
            except httpx.HTTPError as exc:
                result.errors[type(exc).__name__] += 1
                result.error_times.append(round(time.monotonic() - started, 1))
                continue
            if response.status_code != 200:
                result.errors[f"HTTP {response.status_code}: {response.text[:200]}"] += 1
                result.error_times.append(round(time.monotonic() - started, 1))
                continue
            version = response.json()["predictions"][0]["model_version"]
            result.ok += 1
            result.versions[version] += 1
            if version == setup.new:
                seen_new = True
                if result.first_new_at is None:
                    result.first_new_at = time.monotonic() - started
            elif seen_new:
                result.old_after_new += 1

    async def swap() -> None:
        await asyncio.sleep(seconds / 2)
        result.swap_at = time.monotonic() - started
        await asyncio.to_thread(setup.tracker.set_alias, MODEL, "champion", setup.new)

    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=limits) as http:
        await asyncio.gather(swap(), *(client_loop(slot, http) for slot in range(clients)))
    result.seconds = time.monotonic() - started
    return result


def check_load(name: str, url: str, setup: LoadSetup, clients: int, seconds: float, fault_report) -> None:
    result = asyncio.run(run_load(url, setup, clients, seconds))
    problems = service_problems(url, setup.records[:5], valid_versions=[setup.new])
    failed = sum(result.errors.values())
    fault_report.record(name, runs=1, violations=failed + len(problems) + result.old_after_new, rows_lost=0)
    fault_report.note(
        name,
        requests=result.requests,
        requests_per_s=round(result.requests_per_second),
        errors=failed,
        swap_to_new_s=round(result.first_new_at - result.swap_at, 2)
        if result.first_new_at is not None and result.swap_at is not None
        else None,
    )
    assert failed == 0, (
        f"{failed} failed requests: {dict(result.errors)} at {result.error_times[:20]} s"
        f" (swap at {result.swap_at:.1f} s)"
    )
    assert set(result.versions) == {setup.old, setup.new}, f"answers came from {dict(result.versions)}"
    assert result.old_after_new == 0, f"{result.old_after_new} answers from the old version after the swap"
    assert problems == []


def test_short_load_with_a_champion_swap(load_setup: LoadSetup, service: str, fault_report) -> None:
    check_load("load: 50 clients, 10 s, champion swap", service, load_setup, 50, 10, fault_report)


@pytest.mark.long
def test_long_load_with_a_champion_swap(load_setup: LoadSetup, service: str, fault_report) -> None:
    check_load("load: 200 clients, 60 s, champion swap", service, load_setup, 200, 60, fault_report)
