"""How a process's Prefect and MLflow clients reach the configured servers. The flows, the
CLI, the deployments' process and the tests all point their clients through here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlops.config import ProjectConfig


def prefect_storage_dir(config: ProjectConfig) -> Path:
    """Where Prefect keeps persisted task results (what a resumed run reuses)."""
    return config.state_dir / "prefect" / "storage"


@contextmanager
def client_settings(config: ProjectConfig) -> Iterator[None]:
    """Point this process's Prefect and MLflow clients at the configured servers.

    Without this, Prefect would start a slow temporary server of its own and MLflow
    would write to ./mlruns; both are restored on exit.
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_RESULTS_PERSIST_BY_DEFAULT,
        temporary_settings,
    )

    storage = prefect_storage_dir(config)
    storage.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = config.stack.tracking_uri
    try:
        with temporary_settings(
            updates={
                PREFECT_API_URL: config.stack.api_url,
                PREFECT_LOCAL_STORAGE_PATH: str(storage),
                # Persisted results let a retried or resumed run reuse finished tasks.
                PREFECT_RESULTS_PERSIST_BY_DEFAULT: True,
            }
        ):
            yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
