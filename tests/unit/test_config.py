"""The config is strict: a typo is an error naming the key, not a silently ignored setting."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlops.config import ProjectConfig, load_config
from mlops.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[2] / "mlops.yaml"


@pytest.fixture(scope="module")
def config() -> ProjectConfig:
    return load_config(REPO_CONFIG)


def write_config(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "mlops.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_repo_config_loads(config: ProjectConfig) -> None:
    assert config.data.batch_table in config.data.tables
    assert config.root == REPO_CONFIG.parent


@pytest.mark.parametrize(
    ("section", "key"),
    [(None, "projekt"), ("training", "learning_rates"), ("stack", "prefect_prot")],
)
def test_unknown_key_fails_naming_it(tmp_path: Path, section: str | None, key: str) -> None:
    raw = yaml.safe_load(REPO_CONFIG.read_text())
    (raw if section is None else raw[section])[key] = 1
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, raw))
    assert key in str(info.value)


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "mlops.yaml"
    path.write_text("project: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_fingerprint_ignores_where_things_run(config: ProjectConfig) -> None:
    moved = config.model_copy(
        update={
            "stack": config.stack.model_copy(update={"state_dir": "/elsewhere", "prefect_port": 1}),
            "data": config.data.model_copy(
                update={"landing_uri": "s3://bucket/landing", "snapshot_uri": "/tmp/snapshots"}
            ),
        }
    )
    assert moved.fingerprint == config.fingerprint


def test_fingerprint_changes_with_features(config: ProjectConfig) -> None:
    fewer = config.features.model_copy(update={"numeric": config.features.numeric[:-1]})
    assert config.model_copy(update={"features": fewer}).fingerprint != config.fingerprint


def test_fingerprint_ignores_the_registration_margin_but_not_the_fits(config: ProjectConfig) -> None:
    """The margin over the baselines decides whether a result is registered, not what is fit:
    a stricter or looser margin reuses the same cached fits."""
    training = config.training
    looser = config.model_copy(
        update={"training": training.model_copy(update={"min_gain_over_baseline": -1.0})}
    )
    assert looser.fingerprint == config.fingerprint
    reseeded = config.model_copy(update={"training": training.model_copy(update={"seed": training.seed + 1})})
    assert reseeded.fingerprint != config.fingerprint
