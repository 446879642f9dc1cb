"""Where the flows' parallel stages run: the config's `compute` section as a Prefect task runner.

Only the stages that are pure computation on data in memory (candidate fits, per-slice
evaluation) move to a cluster. The rest of a flow stays on its own thread pool: its tasks
hold things that belong to this process (storage clients, a child process timing a model)
and gain nothing from another machine. So a stage opens its own runner, submits its tasks
to it and collects every result before the runner closes:

    with stage_runner(config.compute) as runner:
        futures = [submit(runner, train, candidate, ...) for candidate in candidates]
        results = [f.result() for f in futures]

On Dask the task runs are still Prefect task runs of the calling flow run (prefect-dask ships
the flow run's context and settings to the workers), so the Prefect UI shows them as usual.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast

from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.tasks import Task
from prefect.utilities.callables import get_call_parameters

from mlops.config import ComputeConfig
from mlops.errors import ServiceUnavailableError

if TYPE_CHECKING:
    from prefect_dask import DaskTaskRunner

R = TypeVar("R")


def build_task_runner(compute: ComputeConfig) -> TaskRunner:
    """The task runner `compute` asks for, not yet started."""
    if compute.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=compute.threads)
    from prefect_dask import DaskTaskRunner  # imports distributed: only when asked for

    dask = compute.dask
    client_kwargs = {"timeout": dask.connect_timeout_seconds}
    if dask.address:
        return DaskTaskRunner(address=dask.address, client_kwargs=client_kwargs)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": dask.workers or os.cpu_count() or 1,
            # Processes, one thread each: a fit holds the GIL in parts, and OpenMP inside a fit
            # is capped to one thread already (fit_and_evaluate's openmp_threads).
            "processes": True,
            "threads_per_worker": 1,
            "host": "127.0.0.1",  # the scheduler and workers are reachable from this machine only
            "dashboard_address": None,  # no dashboard UI; its HTTP endpoint stays on 127.0.0.1 too
        },
        client_kwargs=client_kwargs,
    )


@contextmanager
def stage_runner(compute: ComputeConfig) -> Iterator[TaskRunner]:
    """A started task runner for one stage of a flow. A LocalCluster it created is shut down
    on exit, so every future must be resolved inside the block."""
    runner = build_task_runner(compute)
    with runner:
        if compute.task_runner == "dask":
            _connect(cast("DaskTaskRunner", runner), compute)
        yield runner


def _connect(runner: DaskTaskRunner, compute: ComputeConfig) -> None:
    """Start or reach the cluster now (the runner would on its first submit), so that a wrong
    address fails before any task is submitted and names the setting to change."""
    address = compute.dask.address
    try:
        runner.client  # noqa: B018 - the property connects
    except (OSError, TimeoutError) as exc:
        if address is None:  # a LocalCluster of ours that did not start: distributed says why
            raise
        raise ServiceUnavailableError(
            f"compute.dask.address {address}: no Dask scheduler answered within"
            f" {compute.dask.connect_timeout_seconds:.0f} s ({exc}): start it (`dask scheduler`),"
            " fix the address, or set compute.task_runner: threads"
        ) from None


def submit(runner: TaskRunner, task: Task[..., R], *args: Any, **kwargs: Any) -> PrefectFuture[R]:
    """`task.submit(*args, **kwargs)`, but on `runner` rather than on the flow's own task runner."""
    return runner.submit(task, get_call_parameters(task.fn, args, kwargs))
