"""Properties of the config parser, over generated inputs (hypothesis):

- whatever a YAML file holds, `load_config` returns a config or raises `ConfigError`
  (never a bare library exception), and a rejected value is named by its section;
- a config saved and loaded again is the same config (same fingerprint, same file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops.config import ProjectConfig, load_config, save_config
from mlops.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[2] / "mlops.yaml"
RAW = yaml.safe_load(REPO_CONFIG.read_text())

# Seeded and bounded: the same examples in every run, a few seconds in all.
FAST = settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SLOW = settings(FAST, max_examples=20)  # each example writes and parses whole config files

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
yaml_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=12) | st.integers(-5, 5), inner, max_size=4)
    ),
    max_leaves=12,
)


def leaf_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in the raw config, containers included."""
    paths = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            paths += leaf_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            paths += leaf_paths(value, (*prefix, index))
    return paths


PATHS = leaf_paths(RAW)


def replaced(raw: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A deep copy of `raw` with the value at `path` replaced."""
    if not path:
        return value
    if isinstance(raw, dict):
        return {k: replaced(v, path[1:], value) if k == path[0] else v for k, v in raw.items()}
    return [replaced(v, path[1:], value) if i == path[0] else v for i, v in enumerate(raw)]


def load_text(tmp_path: Path, text: str) -> ProjectConfig:
    path = tmp_path / "mlops.yaml"
    path.write_text(text)
    return load_config(path)


@FAST
@given(document=yaml_values)
def test_any_yaml_document_loads_or_is_a_config_error(tmp_path: Path, document: Any) -> None:
    try:
        load_text(tmp_path, yaml.safe_dump(document))
    except ConfigError as exc:
        assert "mlops.yaml" in str(exc)


@FAST
@given(path=st.sampled_from(PATHS), value=yaml_values)
def test_a_replaced_value_is_accepted_or_named_by_its_section(
    tmp_path: Path, path: tuple[Any, ...], value: Any
) -> None:
    try:
        load_text(tmp_path, yaml.safe_dump(replaced(RAW, path, value)))
    except ConfigError as exc:
        assert str(path[0]) in str(exc), exc


@SLOW
@given(
    key=st.sampled_from(["root", "fingerprint", "state_dir", "1", "Project"])
    | st.text(min_size=1, max_size=12)
)
def test_an_unknown_top_level_key_is_named(tmp_path: Path, key: str) -> None:
    if key in RAW or key == "expectations_dir":
        return
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, yaml.safe_dump({**RAW, key: 1}))
    assert key in str(info.value)


def test_a_non_text_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_text(tmp_path, yaml.safe_dump({**RAW, 7: "seven"}))


@SLOW
@given(
    seed=st.integers(0, 2**31 - 1),
    cv_folds=st.integers(2, 10),
    threshold=st.floats(0.01, 0.99),
    port=st.integers(1, 65535),
    landing=st.sampled_from(["state/landing", "s3://bucket/drops", "/data/landing"]),
)
def test_save_then_load_is_the_same_config(
    tmp_path: Path, seed: int, cv_folds: int, threshold: float, port: int, landing: str
) -> None:
    base = load_config(REPO_CONFIG)
    config = base.model_copy(
        update={
            "training": base.training.model_copy(update={"seed": seed, "threshold": threshold}),
            "split": base.split.model_copy(update={"cv_folds": cv_folds}),
            "serving": base.serving.model_copy(update={"port": port}),
            "data": base.data.model_copy(update={"landing_uri": landing}),
        }
    )
    first = save_config(config, tmp_path / "a" / "mlops.yaml")
    loaded = load_config(first)
    assert loaded.fingerprint == config.fingerprint
    assert loaded.store_uri(loaded.data.landing_uri) == config.store_uri(config.data.landing_uri)
    assert loaded.training.threshold == threshold and loaded.serving.port == port
    second = save_config(loaded, tmp_path / "b" / "mlops.yaml")
    assert second.read_text() == first.read_text()
