"""The model watcher's rules: what it loads, when it swaps, what it keeps when a load fails.

The registry is stood in for by a dictionary of aliases and a table of loadable versions
(the watcher is the system under test; the registry itself is tested in integration).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from serving.models import LoadedModel, ModelWatcher


class Registry:
    def __init__(self) -> None:
        self.alias_map: dict[str, str] = {}
        self.model_tags: dict[str, str] = {}
        self.broken: set[str] = set()
        self.loads: list[str] = []
        self.down = False

    def registry_state(self) -> tuple[dict[str, str], dict[str, str]]:
        if self.down:
            raise ConnectionError("registry unreachable")
        return dict(self.alias_map), dict(self.model_tags)

    def load(self, version: str) -> LoadedModel:
        self.loads.append(version)
        if version in self.broken:
            raise ValueError(f"v{version} is not a model")
        return LoadedModel(
            name="m",
            version=version,
            pipeline=object(),
            positive_index=1,
            metrics={},
            run_id=f"run-{version}",
            loaded_at=datetime.now(UTC),
            load_seconds=0.0,
        )


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def watcher(registry: Registry) -> ModelWatcher:
    return ModelWatcher(registry, prepare=lambda model: model, poll_seconds=0.01)


def versions(watcher: ModelWatcher) -> tuple[str | None, str | None]:
    models = watcher.models
    return (
        models.champion.version if models.champion else None,
        models.challenger.version if models.challenger else None,
    )


def test_loads_what_the_aliases_name_and_swaps_only_when_they_move(registry: Registry, watcher) -> None:
    registry.alias_map = {"champion": "1", "challenger": "2"}
    watcher.poll_once()
    first = watcher.models
    assert versions(watcher) == ("1", "2") and registry.loads == ["1", "2"]
    watcher.poll_once()
    assert watcher.models is first and registry.loads == ["1", "2"]  # nothing moved: nothing done
    # A promotion: the champion alias moves to the challenger's version, which is reused.
    registry.alias_map = {"champion": "2", "challenger": "2"}
    watcher.poll_once()
    assert versions(watcher) == ("2", "2") and registry.loads == ["1", "2"]
    assert watcher.models.champion is first.challenger
    assert watcher.models.under_test is None  # the same version twice is not an experiment


def test_without_a_champion_the_challenger_is_primary(registry: Registry, watcher) -> None:
    registry.alias_map = {"challenger": "3"}
    watcher.poll_once()
    assert watcher.models.primary.version == "3" and watcher.models.primary_arm == "challenger"
    assert watcher.models.under_test is None


def test_a_failed_load_keeps_the_old_model_and_is_retried_later(registry: Registry) -> None:
    # A pause of a minute: a 10 ms one could end before the next poll on a busy machine.
    watcher = ModelWatcher(registry, prepare=lambda model: model, poll_seconds=60)
    registry.alias_map = {"champion": "1"}
    watcher.poll_once()
    registry.alias_map = {"champion": "2"}
    registry.broken = {"2"}
    watcher.poll_once()
    assert versions(watcher) == ("1", None)
    failure = watcher.status.failures["champion"]
    assert failure.version == "2" and "not a model" in failure.error and failure.attempts == 1
    watcher.poll_once()  # within the back-off pause: not retried
    assert registry.loads.count("2") == 1
    failure.retry_at = 0.0  # the pause is over
    watcher.poll_once()
    assert registry.loads.count("2") == 2 and watcher.status.failures["champion"].attempts == 2
    registry.broken = set()
    watcher.status.failures["champion"].retry_at = 0.0
    watcher.poll_once()
    assert versions(watcher) == ("2", None) and watcher.status.failures == {}


def test_a_failing_preparation_is_a_failed_load(registry: Registry) -> None:
    def refuse(model: LoadedModel) -> LoadedModel:
        raise RuntimeError("cannot score its own example")

    watcher = ModelWatcher(registry, prepare=refuse, poll_seconds=0.01)
    registry.alias_map = {"champion": "1"}
    watcher.poll_once()
    assert watcher.models.primary is None
    assert "cannot score" in watcher.status.failures["champion"].error


def test_removed_aliases_keep_the_champion_but_drop_the_challenger(registry: Registry, watcher) -> None:
    registry.alias_map = {"champion": "1", "challenger": "2"}
    watcher.poll_once()
    registry.alias_map = {}
    watcher.poll_once()
    assert versions(watcher) == ("1", None)


def test_an_unreachable_registry_keeps_serving_and_says_so(registry: Registry, watcher) -> None:
    registry.alias_map = {"champion": "1"}
    watcher.poll_once()
    registry.down = True
    watcher.poll_once()
    assert versions(watcher) == ("1", None)
    assert "unreachable" in watcher.status.last_poll_error
    registry.down = False
    watcher.poll_once()
    assert watcher.status.last_poll_error is None


def test_the_background_thread_follows_the_registry(registry: Registry, watcher) -> None:
    import time

    registry.alias_map = {"champion": "1"}
    watcher.start()
    try:
        deadline = time.monotonic() + 30
        while watcher.models.primary is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert versions(watcher) == ("1", None)
    finally:
        watcher.stop()
    assert watcher.describe()["champion"]["version"] == "1"


def test_the_rollout_share_is_read_on_each_poll_for_its_challenger_only(
    registry: Registry, watcher: ModelWatcher
) -> None:
    from mlops.rollout import ROLLOUT_TAG, RolloutState

    registry.alias_map = {"champion": "1", "challenger": "2"}
    registry.model_tags = {ROLLOUT_TAG: RolloutState("2", 0.25, 2, 4, "2026-12-07T10:00:00+00:00").to_tag()}
    watcher.poll_once()
    assert watcher.rollout_share("2") == 0.25 and watcher.rollout_share("3") is None
    registry.model_tags = {ROLLOUT_TAG: RolloutState("2", 0.5, 3, 4, "2026-12-07T10:00:00+00:00").to_tag()}
    watcher.poll_once()
    assert watcher.rollout_share("2") == 0.5
    registry.down = True  # the registry cannot be asked: the share last read stands
    watcher.poll_once()
    assert watcher.rollout_share("2") == 0.5
    registry.down = False
    registry.model_tags = {}
    watcher.poll_once()
    assert watcher.rollout_share("2") is None


def test_dimension_refresh_swaps_in_new_tables_and_keeps_the_old_ones_when_they_cannot_be_read(
    registry: Registry,
) -> None:
    """`serving.dimensions: landing`: every refresh period the serving models' tables are
    re-read; a changed table is a new model object swapped in (same version), an unchanged
    one changes nothing, and a failed re-read keeps the tables before it and is reported."""
    tables = {"weather": "sha-1"}
    fail = False

    def refresh(model: LoadedModel) -> LoadedModel:
        if fail:
            raise OSError("weather.parquet: not a parquet file")
        if model.run_id == f"{model.version}@{tables['weather']}":
            return model
        return replace(model, run_id=f"{model.version}@{tables['weather']}")  # stands for new tables

    watcher = ModelWatcher(
        registry, prepare=lambda model: model, poll_seconds=0.01, refresh=refresh, refresh_seconds=1e-6
    )
    registry.alias_map = {"champion": "1"}
    watcher.poll_once()  # loaded: prepare has read the tables, so no refresh of this one yet
    assert registry.loads == ["1"] and watcher.models.champion.run_id == "run-1"
    watcher.poll_once()
    served = watcher.models.champion
    assert served.run_id == "1@sha-1" and served.version == "1" and registry.loads == ["1"]
    watcher.poll_once()
    assert watcher.models.champion is served  # unchanged tables: the same model
    fail = True
    watcher.poll_once()
    assert watcher.models.champion is served
    assert "not a parquet file" in (watcher.status.refresh_error or "")
    assert watcher.describe()["dimensions_refresh_error"] == watcher.status.refresh_error
    fail, tables["weather"] = False, "sha-2"
    watcher.poll_once()
    assert watcher.models.champion.run_id == "1@sha-2" and watcher.status.refresh_error is None
    assert registry.loads == ["1"]  # never reloaded from the registry


def test_without_a_refresh_period_the_tables_are_read_only_at_load(registry: Registry) -> None:
    calls: list[str] = []

    def refresh(model: LoadedModel) -> LoadedModel:
        calls.append(model.version)
        return model

    watcher = ModelWatcher(
        registry, prepare=lambda m: m, poll_seconds=0.01, refresh=refresh, refresh_seconds=0
    )
    registry.alias_map = {"champion": "1"}
    for _ in range(3):
        watcher.poll_once()
    assert calls == []
