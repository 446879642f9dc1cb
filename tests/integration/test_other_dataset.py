"""The same flow on an unrelated dataset: a new config and a new suite, no new code."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.training import TrainingRequest, training_pipeline
from mlops.clients import client_settings
from mlops.config import ProjectConfig, load_config, save_config
from mlops.storage import open_store
from tests.fixtures.retail.generate import seed_orders

pytestmark = pytest.mark.integration
RETAIL = Path(__file__).resolve().parents[1] / "fixtures" / "retail"


def test_retail_orders_train_and_register(stack, stack_config: ProjectConfig, tmp_path: Path) -> None:
    base = load_config(RETAIL / "mlops.yaml")
    config = base.model_copy(
        update={
            "stack": stack_config.stack,  # the session's servers
            "data": base.data.model_copy(
                update={
                    "landing_uri": str(tmp_path / "landing"),
                    "snapshot_uri": str(tmp_path / "snapshots"),
                    "quarantine_uri": str(tmp_path / "quarantine"),
                }
            ),
        }
    )
    seed_orders(open_store(str(tmp_path / "landing"), config.data.s3), ["2024-01", "2024-02", "2024-03"])
    config_path = save_config(config, tmp_path / "retail.yaml")

    with client_settings(stack_config):
        outcome = training_pipeline(
            TrainingRequest(start="2024-01", end="2024-03", config_path=str(config_path))
        )

    assert outcome.model_name == "order-returns"
    assert outcome.metrics["holdout_roc_auc"] > 0.6  # the generator's signal is learnable
    version = MlflowClient(stack_config.stack.tracking_uri).get_model_version_by_alias(
        "order-returns", "challenger"
    )
    assert version.version == outcome.model_version
    assert version.tags["candidate"] == "boosted"
