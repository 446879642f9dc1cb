"""The bad-input corpus (`tests/data/bad_inputs.py`): every kind of malformed landing file
ends rejected and quarantined with a message naming the file and the problem, or accepted
where that is right, and no landing file is ever lost.

The corpus runs through the plain ingest, validation and quarantine functions (no servers);
a few kinds then go through the real training flow against the session's Prefect and MLflow
servers, to show the same at flow level (a failed run, its message, quarantine).
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from flows.training import TrainingRequest, training_pipeline
from mlops.clients import client_settings
from mlops.config import ProjectConfig, save_config
from mlops.storage import Store, Stores, open_store
from tasks.ingest import read_table
from tasks.validate import load_suite_json
from tests.data.bad_inputs import (
    ACCEPTED,
    CORPUS,
    DOC,
    INGEST,
    ROOT,
    SUITE,
    VALIDATION,
    BadInput,
    Outcome,
    SourceMonth,
    load_source_month,
    render_doc,
    run_kind,
    stores_under,
)
from tests.reliability.invariants import audit_landing


class Outcomes:
    """Each kind run once per module, on demand, in its own landing zone."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.source = load_source_month()
        self.suite = load_suite_json(ROOT / "expectations", SUITE)
        self.done: dict[str, Outcome] = {}

    def stores(self, name: str) -> Stores:
        return stores_under(self.folder / name)

    def __getitem__(self, name: str) -> Outcome:
        if name not in self.done:
            self.done[name] = run_kind(CORPUS[name], self.source, self.stores(name), self.suite)
        return self.done[name]

    def all(self) -> dict[str, Outcome]:
        return {name: self[name] for name in CORPUS}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Outcomes:
    return Outcomes(tmp_path_factory.mktemp("corpus"))


def test_the_corpus_covers_at_least_twenty_kinds_and_every_outcome() -> None:
    assert len(CORPUS) >= 20
    by_verdict = {v: [b for b in CORPUS.values() if b.expected == v] for v in (INGEST, VALIDATION, ACCEPTED)}
    assert all(by_verdict.values()), {v: len(b) for v, b in by_verdict.items()}
    for bad in CORPUS.values():
        assert bad.description and bad.why, bad.kind
        assert bad.problem or bad.expected == ACCEPTED, f"{bad.kind}: a rejection must say what to look for"


def test_the_corpus_is_seeded(outcomes: Outcomes) -> None:
    again = replace(outcomes.source)
    other = replace(outcomes.source, seed=outcomes.source.seed + 1)
    for name in ("garbage_bytes", "negative_distances", "huge_strings", "duplicated_keys"):
        build = CORPUS[name].build
        assert build(outcomes.source) == build(again), f"{name}: same seed, other bytes"
        assert build(outcomes.source) != build(other), f"{name}: the seed changes nothing"


@pytest.mark.parametrize("name", list(CORPUS))
def test_each_kind_is_rejected_with_its_reason_or_accepted(outcomes: Outcomes, name: str) -> None:
    bad: BadInput = CORPUS[name]
    outcome = outcomes[name]
    stores = outcomes.stores(name)
    assert outcome.verdict == bad.expected, f"{name}: {outcome.message}"
    # The landing file is left as upstream wrote it, for upstream to replace.
    assert stores.landing.read_bytes(bad.landing_key) == outcome.data

    if bad.expected == ACCEPTED:
        assert outcome.snapshot is not None and outcome.quarantine_uri is None
        assert stores.snapshots.read_bytes(outcome.snapshot.key) == outcome.data
        assert stores.snapshots.exists(outcome.snapshot.manifest_key)
        # every row of the file is in the snapshot
        assert outcome.snapshot.rows == len(read_table(outcome.data, bad.landing_key))
        assert stores.quarantine.list() == []
    else:
        # The message names the file and the problem.
        assert bad.landing_key in outcome.message, outcome.message
        for word in bad.problem:
            assert word in outcome.message, f"{name}: {word!r} not in {outcome.message}"
        # The file sits in quarantine, byte for byte, beside a reason naming it and the problem.
        assert outcome.quarantine_uri is not None
        kept = Path(outcome.quarantine_uri)
        assert kept.read_bytes() == outcome.data
        reason = json.loads((kept.parent / "reason.json").read_text())
        assert reason["file"].endswith(bad.landing_key) and reason["period"] == "2013-01"
        for word in bad.problem:
            assert word in reason["reason"], f"{name}: {word!r} not in reason.json {reason['reason']}"
        assert stores.snapshots.list() == []  # nothing of it counts as a snapshot

    audit = audit_landing(stores.landing, stores.snapshots, stores.quarantine)
    assert audit.lost == [], audit.problems
    where = audit.snapshotted if bad.expected == ACCEPTED else audit.quarantined
    assert where == [bad.landing_key]


def test_no_landing_file_is_lost_across_the_corpus(outcomes: Outcomes) -> None:
    """The invariant of issue 6: every landing file ends in a snapshot or in quarantine with a reason."""
    snapshotted = quarantined = 0
    for name, outcome in outcomes.all().items():
        stores = outcomes.stores(name)
        audit = audit_landing(stores.landing, stores.snapshots, stores.quarantine)
        assert audit.violations == 0 and audit.rows_lost == 0, audit.problems
        snapshotted += len(audit.snapshotted)
        quarantined += len(audit.quarantined)
        assert (outcome.verdict == ACCEPTED) == bool(audit.snapshotted)
    assert snapshotted + quarantined == len(CORPUS)


def test_the_documented_table_is_current(outcomes: Outcomes) -> None:
    generated = render_doc(outcomes.all())
    assert DOC.read_text() == generated, (
        f"{DOC.relative_to(ROOT)} is out of date: run `.venv/bin/python -m tests.data.bad_inputs`"
    )


# -- through the real training flow -------------------------------------------------------


def _month_source(landing: Store, period: str, following: str) -> SourceMonth:
    def read(p: str) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(landing.read_bytes(f"flights/{p}.parquet")))

    month = read(period)
    return SourceMonth(month, month, read(following), seed=0)


def _landing_with(
    stack_config: ProjectConfig, sampled_landing: Store, tmp: Path, kinds: dict[str, str]
) -> tuple[Path, Stores, dict[str, str]]:
    """A copy of the session's landing zone with the month of each `kinds` entry (period -> kind)
    replaced by that kind, built from the month's own rows. Returns the config file, the
    stores and the landing key of each bad file."""
    landing = open_store(str(tmp / "landing"), stack_config.data.s3)
    for key in sampled_landing.list():
        landing.write_bytes(key, sampled_landing.read_bytes(key))
    keys = {}
    for period, name in kinds.items():
        bad = CORPUS[name]
        following = f"2013-{int(period[-2:]) + 1:02d}"
        data = bad.build(_month_source(sampled_landing, period, following))
        landing.delete(f"flights/{period}.parquet")
        keys[period] = f"flights/{period}{bad.suffix}"
        landing.write_bytes(keys[period], data)
    data_config = stack_config.data.model_copy(
        update={
            "landing_uri": str(tmp / "landing"),
            "snapshot_uri": str(tmp / "snapshots"),
            "quarantine_uri": str(tmp / "quarantine"),
        }
    )
    config_path = save_config(stack_config.model_copy(update={"data": data_config}), tmp / "mlops.yaml")
    s3 = stack_config.data.s3
    stores = Stores(
        landing,
        *(open_store(str(tmp / name), s3) for name in ("snapshots", "quarantine", "predictions", "labelled")),
    )
    return config_path, stores, keys


def _failed_run_message(stack_config: ProjectConfig, config_path: Path) -> str:
    from prefect.client.orchestration import get_client

    with client_settings(stack_config):
        state = training_pipeline(
            TrainingRequest(start="2013-01", end="2013-06", config_path=str(config_path)), return_state=True
        )
        assert state.is_failed(), state
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.state.type.value == "FAILED"
    return run.state.message or ""


@pytest.mark.integration
def test_unreadable_months_fail_the_flow_naming_each_file(
    stack, stack_config: ProjectConfig, sampled_landing: Store, tmp_path: Path
) -> None:
    kinds = {"2013-02": "semicolon_csv", "2013-04": "garbage_bytes"}
    config_path, stores, keys = _landing_with(stack_config, sampled_landing, tmp_path, kinds)
    message = _failed_run_message(stack_config, config_path)  # what the Prefect UI shows
    for period, name in kinds.items():
        assert keys[period] in message, message
        assert all(word in message for word in CORPUS[name].problem), message
    audit = audit_landing(stores.landing, stores.snapshots, stores.quarantine)
    assert audit.lost == [], audit.problems
    assert audit.quarantined == sorted(keys.values())


@pytest.mark.integration
def test_invalid_months_fail_the_flow_and_an_extra_column_passes(
    stack, stack_config: ProjectConfig, sampled_landing: Store, tmp_path: Path
) -> None:
    kinds = {"2013-03": "huge_strings", "2013-04": "extra_column", "2013-05": "future_dates"}
    config_path, stores, keys = _landing_with(stack_config, sampled_landing, tmp_path, kinds)
    message = _failed_run_message(stack_config, config_path)
    rejected = {p: n for p, n in kinds.items() if CORPUS[n].expected != ACCEPTED}
    for period, name in rejected.items():
        assert f"file {stores.landing.uri_for(keys[period])}" in message, message
        assert all(word in message for word in CORPUS[name].problem), message
    assert keys["2013-04"] not in message  # the month with an extra column passed its suite
    audit = audit_landing(stores.landing, stores.snapshots, stores.quarantine)
    assert audit.lost == [], audit.problems
    assert audit.quarantined == sorted(keys[p] for p in rejected)
    assert keys["2013-04"] in audit.snapshotted
