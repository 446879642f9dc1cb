"""The `compute` section: where the parallel stages run, read once and turned into a task runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from flows.runners import build_task_runner, stage_runner
from mlops.config import ComputeConfig, DaskConfig, load_config
from mlops.errors import ConfigError, ServiceUnavailableError
from tests.ports import free_port

REPO_CONFIG = Path(__file__).resolve().parents[2] / "mlops.yaml"


def test_the_default_is_the_thread_pool_of_two() -> None:
    compute = load_config(REPO_CONFIG).compute
    assert compute == ComputeConfig()
    runner = build_task_runner(compute)
    assert isinstance(runner, ThreadPoolTaskRunner)
    assert runner._max_workers == 2


def test_dask_without_an_address_is_a_local_cluster_of_single_threaded_processes_on_loopback() -> None:
    runner = build_task_runner(ComputeConfig(task_runner="dask"))
    assert isinstance(runner, DaskTaskRunner)
    assert runner.address is None
    assert runner.cluster_class == "distributed.LocalCluster"
    assert runner.cluster_kwargs == {
        "n_workers": os.cpu_count(),  # one per core unless compute.dask.workers says otherwise
        "processes": True,
        "threads_per_worker": 1,
        "host": "127.0.0.1",
        "dashboard_address": None,
    }
    sized = build_task_runner(ComputeConfig(task_runner="dask", dask=DaskConfig(workers=3)))
    assert sized.cluster_kwargs["n_workers"] == 3


def test_dask_with_an_address_connects_to_that_scheduler() -> None:
    compute = ComputeConfig(task_runner="dask", dask=DaskConfig(address="tcp://10.0.0.5:8786"))
    runner = build_task_runner(compute)
    assert isinstance(runner, DaskTaskRunner)
    assert runner.address == "tcp://10.0.0.5:8786"
    assert runner.cluster_class is None and runner.cluster_kwargs == {}
    assert runner.client_kwargs["timeout"] == compute.dask.connect_timeout_seconds


def test_a_scheduler_that_does_not_answer_is_a_clear_error() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    compute = ComputeConfig(task_runner="dask", dask=DaskConfig(address=address, connect_timeout_seconds=1))
    with pytest.raises(ServiceUnavailableError) as info, stage_runner(compute):
        pytest.fail("the stage must not start without its cluster")
    message = str(info.value)
    assert address in message and "compute.dask.address" in message and "threads" in message


def test_where_stages_run_does_not_change_the_fingerprint() -> None:
    config = load_config(REPO_CONFIG)
    on_dask = config.model_copy(
        update={"compute": ComputeConfig(task_runner="dask", dask=DaskConfig(address="tcp://h:8786"))}
    )
    assert on_dask.fingerprint == config.fingerprint


@pytest.mark.parametrize(
    ("compute", "named"),
    [
        ({"task_runner": "ray"}, "compute.task_runner"),
        ({"threads": 0}, "compute.threads"),
        ({"dask": {"address": "tcp://h:8786", "workers": 4}}, "compute.dask"),
        ({"dask": {"workerz": 4}}, "compute.dask.workerz"),
    ],
)
def test_a_bad_compute_section_fails_naming_the_key(tmp_path: Path, compute: dict, named: str) -> None:
    raw = yaml.safe_load(REPO_CONFIG.read_text())
    raw["compute"] = compute
    path = tmp_path / "mlops.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(path)
