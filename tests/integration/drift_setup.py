"""Set-up shared by the monitoring, deployment and replay tests: a landing zone of their own
seeded with a sample of real months, and the session config under a model name of its own
with two quick candidates and operational limits a loaded machine meets."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd

from app.seed import seed_landing
from mlops.config import (
    CandidateConfig,
    OperationalGateConfig,
    ProjectConfig,
    QualityGateConfig,
    save_config,
)
from mlops.storage import Store, open_store

SAMPLE_FRACTION = 0.08  # ~2,200 flights a month
QUICK_CANDIDATES = [
    CandidateConfig(name="majority", estimator="dummy", baseline=True, params={"strategy": "prior"}),
    CandidateConfig(
        name="hist_gb",
        estimator="hist_gradient_boosting",
        encoding="ordinal",
        params={"max_iter": 200, "early_stopping": True, "n_iter_no_change": 15},
    ),
]


def drift_config(
    stack_config: ProjectConfig, folder: Path, name: str, periods: list[str], **monitoring: Any
) -> ProjectConfig:
    """The session's stack with a private landing zone (seeded), stores and registry names."""
    data = stack_config.data.model_copy(
        update={
            "landing_uri": str(folder / "landing"),
            "snapshot_uri": str(folder / "snapshots"),
            "quarantine_uri": str(folder / "quarantine"),
        }
    )
    config = stack_config.model_copy(
        update={
            "data": data,
            "training": stack_config.training.model_copy(
                update={"candidates": QUICK_CANDIDATES, "importance_rows": 1000, "importance_repeats": 1}
            ),
            "registry": stack_config.registry.model_copy(update={"model_name": name, "experiment": name}),
            "monitoring": stack_config.monitoring.model_copy(
                update={"experiment": f"{name}-monitoring", **monitoring}
            ),
            "promotion": stack_config.promotion.model_copy(
                update={
                    "quality": QualityGateConfig(min_roc_auc=0.55, max_brier=0.3),
                    "operational": OperationalGateConfig(
                        max_p95_latency_ms=10_000, min_rows_per_second=10, latency_calls=50, batch_rows=2000
                    ),
                }
            ),
            "serving": stack_config.serving.model_copy(
                update={"prediction_log_uri": str(folder / "predictions")}
            ),
        }
    )
    seed_landing(config, landing(config), periods, sample_fraction=SAMPLE_FRACTION, seed=0)
    return config


def landing(config: ProjectConfig) -> Store:
    return open_store(config.store_uri(config.data.landing_uri), config.data.s3)


def write_config(config: ProjectConfig, folder: Path) -> Path:
    return save_config(config, folder / "mlops.yaml")


def read_landed(store: Store, key: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(store.read_bytes(key)))


def write_landed(store: Store, key: str, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    store.write_bytes(key, buffer.getvalue())


def copy_landing(config: ProjectConfig, folder: Path) -> ProjectConfig:
    """The same config over a copy of its landing zone (to break one file of the copy)."""
    source = landing(config)
    data = config.data.model_copy(update={"landing_uri": str(folder / "landing")})
    copy = config.model_copy(update={"data": data})
    target = landing(copy)
    for key in source.list():
        target.write_bytes(key, source.read_bytes(key))
    return copy
