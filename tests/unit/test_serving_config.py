"""The `serving` section of the project config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlops.config import load_config, save_config
from mlops.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_serving_settings_do_not_change_what_training_computes() -> None:
    config = load_config(REPO_ROOT / "mlops.yaml")
    other = config.model_copy(
        update={"serving": config.serving.model_copy(update={"mode": "canary", "port": 9999})}
    )
    assert other.fingerprint == config.fingerprint


def test_a_saved_config_keeps_the_prediction_log_where_it_was(tmp_path: Path) -> None:
    config = load_config(REPO_ROOT / "mlops.yaml")
    copy = load_config(save_config(config, tmp_path / "elsewhere.yaml"))
    assert copy.store_uri(copy.serving.prediction_log_uri) == config.store_uri(
        config.serving.prediction_log_uri
    )
    assert copy.serving == config.serving.model_copy(
        update={"prediction_log_uri": config.store_uri(config.serving.prediction_log_uri)}
    )


@pytest.mark.parametrize(
    ("setting", "value"), [("mode", "blue-green"), ("canary_share", 1.5), ("port", 0), ("max_records", 0)]
)
def test_bad_serving_settings_name_themselves(tmp_path: Path, setting: str, value: object) -> None:
    raw = yaml.safe_load((REPO_ROOT / "mlops.yaml").read_text())
    raw["serving"][setting] = value
    path = tmp_path / "mlops.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=f"serving.{setting}"):
        load_config(path)
