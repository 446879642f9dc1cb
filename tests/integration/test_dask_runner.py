"""The parallel stages on a real Dask cluster: candidate fits and per-slice evaluation give the
same results as the sequential run, as task runs of the calling Prefect flow run (against the
session's Prefect server), on more than one worker process."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import dask
import pandas as pd
import pytest
from distributed import Client, LocalCluster, get_task_stream
from prefect import flow, runtime, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.sorting import TaskRunSort
from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, temporary_settings

from flows.promotion import evaluate_slices
from flows.runners import stage_runner, submit
from flows.stages import build_features
from flows.training import train_candidates
from mlops.clients import client_settings
from mlops.config import CandidateConfig, ComputeConfig, DaskConfig, ProjectConfig
from mlops.objective import Objective
from mlops.storage import Store
from tasks.features import Split, fingerprint_inputs, time_split
from tasks.gates import positive_proba, slice_gates
from tasks.train import CandidateResult, fit_and_evaluate, select_best

pytestmark = pytest.mark.integration

PERIODS = ["2013-04", "2013-05", "2013-06"]  # of the session's 8% sample: two to train on, one held out


@pytest.fixture(scope="module")
def config(stack_config: ProjectConfig) -> ProjectConfig:
    """Every kind of candidate, each searched, made small: what is tested is equality, not quality."""
    candidates = [
        CandidateConfig(name="majority", estimator="dummy", baseline=True, params={"strategy": "prior"}),
        CandidateConfig(
            name="logistic", estimator="logistic_regression", baseline=True, params={"max_iter": 200}
        ),
        CandidateConfig(
            name="hist_gb",
            estimator="hist_gradient_boosting",
            encoding="ordinal",
            params={"max_iter": 40},
            search={
                "learning_rate": {"kind": "loguniform", "low": 0.05, "high": 0.2},
                "max_leaf_nodes": [15, 31],
            },
            n_iter=2,
        ),
        CandidateConfig(
            name="random_forest",
            estimator="random_forest",
            encoding="ordinal",
            params={"n_estimators": 15, "min_samples_leaf": 20, "n_jobs": 1},
            search={"max_depth": [8, 12]},
            n_iter=2,
        ),
    ]
    training = stack_config.training.model_copy(
        update={"candidates": candidates, "importance_rows": 500, "importance_repeats": 1}
    )
    # Slices this small sample has enough rows for: three airports, the larger airlines.
    slices = stack_config.promotion.slices.model_copy(update={"min_rows": 100, "max_drop": 0.05})
    promotion = stack_config.promotion.model_copy(update={"slices": slices})
    return stack_config.model_copy(update={"training": training, "promotion": promotion})


@pytest.fixture(scope="module")
def split(config: ProjectConfig, sampled_landing: Store) -> Split:
    def read(key: str) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(sampled_landing.read_bytes(key)))

    tables = config.data.tables
    batches = {p: read(tables[config.data.batch_table].key(p)) for p in PERIODS}
    dims = {name: read(spec.key()) for name, spec in tables.items() if name != config.data.batch_table}
    training = build_features.fn(batches, dims, config, fingerprint_inputs("dask-equality", *PERIODS))
    return time_split(training, config.features, config.target.label, config.split.holdout_periods)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Two worker processes, one thread each, as `compute.dask` would start here; shared by the
    stages so that its task stream can say which worker ran what."""
    # A worker busy importing the project for its first task on a loaded machine can leave the
    # scheduler's messages unread past distributed's 30 s TCP timeout, and be dropped.
    with (
        dask.config.set({"distributed.comm.timeouts.tcp": "180s"}),
        LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as local,
    ):
        yield local


@pytest.fixture(scope="module")
def prefect_and_mlflow(stack, stack_config: ProjectConfig) -> Iterator[None]:
    with client_settings(stack_config):
        yield


def _task_states(flow_run_id: str) -> list[tuple[str, str]]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,  # the sync client sends sort=None otherwise: 422
            limit=200,
        )
    return sorted((run.name, run.state.name) for run in runs)


def _outcome(results: list[CandidateResult], best: CandidateResult, split: Split) -> dict[str, object]:
    """Everything a candidate fit produces that is not a timing."""
    return {
        "best": best.name,
        "candidates": [
            {
                "name": r.name,
                "params": r.params,
                "cv": (r.cv_mean, r.cv_std),
                "holdout": r.evaluation.metrics,
                "importance": r.evaluation.importance,
                "proba": positive_proba(r.pipeline, split.X_holdout).tolist(),
            }
            for r in results
        ],
    }


def test_candidates_and_slices_on_a_local_cluster_equal_the_sequential_run(
    prefect_and_mlflow, config: ProjectConfig, split: Split, cluster: LocalCluster
) -> None:
    # The reference: each candidate fitted in this process, one after the other; slices in one go.
    training = config.training
    objective = Objective.of(config)
    reference = [
        fit_and_evaluate(
            c, split, config.features, training, objective, config.split.cv_folds, openmp_threads=1
        )
        for c in training.candidates
    ]
    best = select_best(reference, objective, training.min_gain_over_baseline)
    y = split.y_holdout.to_numpy()
    challenger = objective.predict(best.pipeline, split.X_holdout)
    champion = objective.predict(next(r for r in reference if r.name == "logistic").pipeline, split.X_holdout)
    slices = slice_gates(split.X_holdout, y, challenger, champion, config.promotion.slices, "1", objective)

    on_dask = config.model_copy(
        update={
            "compute": ComputeConfig(task_runner="dask", dask=DaskConfig(address=cluster.scheduler_address))
        }
    )

    @flow(name="stages-on-dask")
    def stages_on_dask() -> tuple[str, dict[str, object], object]:
        results, chosen = train_candidates(on_dask, split)
        on_slices = evaluate_slices(on_dask, split.X_holdout, y, challenger, champion, "1", objective, None)
        return str(runtime.flow_run.id), _outcome(results, chosen, split), on_slices

    # A fit found in Prefect's cache would come back without running on the cluster.
    with (
        temporary_settings({PREFECT_TASKS_REFRESH_CACHE: True}),
        Client(cluster, set_as_default=False) as observer,
        get_task_stream(observer) as stream,
    ):
        observer.wait_for_workers(2, timeout=120)
        flow_run_id, on_training, on_slices = stages_on_dask()

    assert on_training == _outcome(reference, best, split)
    assert on_slices == slices
    gates, rows = on_slices
    assert [g.name for g in gates] == ["slices.origin", "slices.carrier"]
    assert sum(r.drop is not None for r in rows) >= 5  # really compared, not skipped for size

    # The cluster ran every candidate and slice column, on both of its worker processes.
    ran = [(t["key"], t["worker"]) for t in stream.data]
    assert len(ran) == len(training.candidates) + len(config.promotion.slices.columns), ran
    assert len({worker for _, worker in ran}) == 2, ran

    # Each is a Prefect task run of the calling flow run, fitted anew.
    states = _task_states(flow_run_id)
    expected = [(f"train {c.name}", "Completed") for c in training.candidates]
    expected += [(f"compare slices by {c}", "Completed") for c in config.promotion.slices.columns]
    assert states == sorted(expected)


def test_dask_without_an_address_starts_a_local_cluster_of_worker_processes_and_stops_it(
    prefect_and_mlflow,
) -> None:
    compute = ComputeConfig(task_runner="dask", dask=DaskConfig(workers=2))

    # Defined here, so that it travels by value: the workers need not import this module.
    @task(task_run_name="report my process")
    def worker_pid() -> int:
        return os.getpid()

    @flow(name="dask-local-cluster")
    def on_local_cluster() -> tuple[set[int], int, str]:
        with stage_runner(compute) as runner:
            pids = {submit(runner, worker_pid).result() for _ in range(4)}
            workers = len(runner.client.scheduler_info()["workers"])
            address = runner.client.scheduler.address
        return pids, workers, address

    pids, workers, address = on_local_cluster()
    assert workers == 2
    assert pids and os.getpid() not in pids
    assert address.startswith("tcp://127.0.0.1:")
    with pytest.raises(OSError):  # the stage closed the cluster it started
        Client(address, timeout=2)
