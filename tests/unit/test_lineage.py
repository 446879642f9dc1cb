"""The lineage chain from recorded facts, and the checks reproduction relies on: no servers."""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.config import ProjectConfig, load_config
from mlops.errors import ConfigError, LandingError
from mlops.prediction_log import log_batch, log_schema
from mlops.storage import LocalStore
from mlops.tracking import ModelVersionInfo, RunRecord
from serving.predlog import PredictionLog
from tasks.features import fingerprint_inputs
from tasks.ingest import snapshot_file
from tasks.lineage import (
    ChampionEvent,
    DecisionLink,
    RecordedFacts,
    assemble_lineage,
    champion_periods,
    parse_model_ref,
    read_recorded_snapshots,
    served_partitions,
    snapshot_status,
)
from tasks.lineage_records import (
    NOT_RECORDED,
    compare_metrics,
    config_from_record,
    config_record,
    environment_record,
    likely_causes,
    package_changes,
)
from tasks.lineage_render import lineage_markdown, lineage_tree

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def config() -> ProjectConfig:
    return load_config(REPO / "mlops.yaml")


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


# -- references ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [
        ("flight-delay/3", ("flight-delay", "3", None)),
        ("flight-delay@champion", ("flight-delay", None, "champion")),
        (" m.x_1/12 ", ("m.x_1", "12", None)),
    ],
)
def test_model_references_parse(ref: str, parsed: tuple) -> None:
    assert parse_model_ref(ref) == parsed


@pytest.mark.parametrize("ref", ["flight-delay", "flight-delay/v3", "flight-delay@", "a/b/3", "m@x/3"])
def test_a_bad_reference_says_what_to_write(ref: str) -> None:
    with pytest.raises(ConfigError, match="<model>/<version> or <model>@<alias>"):
        parse_model_ref(ref)


# -- champion periods from the alias moves that promotion and rollback recorded ----------


def _event(at: str, champion: str, cause: str = "promotion") -> ChampionEvent:
    return ChampionEvent(_ms(at), champion, cause, f"run-{champion}-{at}")


def test_champion_periods_follow_promotions_and_rollbacks() -> None:
    events = [
        _event("2026-01-05T10:00:00", "2"),  # v2 first champion
        _event("2026-02-01T10:00:00", "3"),  # v3 replaces it
        _event("2026-02-03T09:00:00", "2", "rollback"),  # rolled back to v2
        _event("2026-03-01T10:00:00", "4"),
    ]
    periods, gaps = champion_periods(events, "2", current_champion="4")
    assert [(p.start, p.end) for p in periods] == [
        ("2026-01-05T10:00:00+00:00", "2026-02-01T10:00:00+00:00"),
        ("2026-02-03T09:00:00+00:00", "2026-03-01T10:00:00+00:00"),
    ]
    assert periods[1].began_by.startswith("rollback") and periods[1].ended_by.startswith("promotion")
    assert gaps == []

    periods, _ = champion_periods(list(reversed(events)), "4", current_champion="4")  # order-free
    assert [(p.start, p.end) for p in periods] == [("2026-03-01T10:00:00+00:00", "now")]
    assert champion_periods(events, "9", current_champion="4") == ([], [])


def test_an_alias_moved_outside_the_records_is_named_not_guessed() -> None:
    # v5 is the champion, but nothing recorded moving the alias there.
    periods, gaps = champion_periods([_event("2026-01-05T10:00:00", "2")], "5", current_champion="5")
    assert [(p.start, p.end) for p in periods] == [(NOT_RECORDED, "now")]
    assert "no promotion or rollback record" in gaps[0] and "last recorded champion: 2" in gaps[0]
    # v2's recorded period has no recorded end: the alias left it without a record.
    periods, _ = champion_periods([_event("2026-01-05T10:00:00", "2")], "2", current_champion="5")
    assert periods[0].end == NOT_RECORDED and "points at 5" in periods[0].ended_by


# -- prediction-log partitions, written by the service's own writer ----------------------


def test_served_partitions_count_this_versions_rows_per_day(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    schema = log_schema(["x"], ["c"])
    log = PredictionLog(store, schema, 10_000, 60)

    def rows(day: str, version: str, arm: str, served: bool, n: int) -> None:
        stamp = np.datetime64(f"{day}T12:00:00")
        log.append(
            log_batch(
                schema,
                {"x": np.zeros(n), "c": np.array(["a"] * n, dtype=object)},
                [None] * n,
                np.array([f"r{i}" for i in range(n)]),
                np.array([stamp] * n),
                "m",
                version,
                arm,
                "shadow" if not served else "none",
                served,
                np.full(n, 0.5),
                np.zeros(n, dtype="int8"),
            )
        )

    rows("2026-03-01", "3", "champion", True, 4)
    rows("2026-03-01", "4", "challenger", False, 2)  # another version, same day
    rows("2026-03-02", "3", "champion", True, 5)
    rows("2026-03-02", "3", "challenger", False, 1)
    rows("2026-02-27", "3", "champion", True, 9)  # before `since`: not read
    log.flush()
    found = served_partitions(store, "m", "3", since=date(2026, 3, 1))
    assert [asdict(p) for p in found] == [
        {"partition": "date=2026-03-01", "rows": 4, "served_rows": 4, "arms": {"champion": 4}},
        {
            "partition": "date=2026-03-02",
            "rows": 6,
            "served_rows": 5,
            "arms": {"champion": 5, "challenger": 1},
        },
    ]
    assert served_partitions(store, "other-model", "3", since=None) == []


# -- snapshots read back by hash ----------------------------------------------------------


@pytest.fixture
def recorded_inputs(tmp_path: Path) -> tuple[LocalStore, list[dict]]:
    landing, snapshots = LocalStore(tmp_path / "landing"), LocalStore(tmp_path / "snapshots")
    buffer = io.BytesIO()
    pd.DataFrame({"a": [1, 2, 3]}).to_parquet(buffer)
    landing.write_bytes("t/2026-01.parquet", buffer.getvalue())
    snapshot, _ = snapshot_file(landing, snapshots, "t", "2026-01", "t/2026-01.parquet")
    return snapshots, [{"name": "t/2026-01", "context": "training", **asdict(snapshot)}]


def test_recorded_snapshots_read_back_when_their_bytes_are_intact(recorded_inputs) -> None:
    snapshots, inputs = recorded_inputs
    [(snapshot, frame)] = read_recorded_snapshots(snapshots, inputs)
    assert snapshot.sha256 == inputs[0]["sha256"] and list(frame["a"]) == [1, 2, 3]
    assert snapshot_status(snapshots, snapshot.key, snapshot.sha256) == "present, sha256 verified"


def test_a_modified_snapshot_is_refused_naming_the_file(recorded_inputs) -> None:
    snapshots, inputs = recorded_inputs
    path = snapshots.root / inputs[0]["key"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte
    path.write_bytes(bytes(data))
    with pytest.raises(LandingError) as refused:
        read_recorded_snapshots(snapshots, inputs)
    message = str(refused.value)
    assert str(path) in message and "was modified" in message and inputs[0]["sha256"] in message
    assert snapshot_status(snapshots, inputs[0]["key"], inputs[0]["sha256"]).startswith(
        "modified: sha256 is now"
    )


def test_a_missing_snapshot_is_refused_naming_the_file(recorded_inputs) -> None:
    snapshots, inputs = recorded_inputs
    (snapshots.root / inputs[0]["key"]).unlink()
    with pytest.raises(LandingError, match=r"is gone") as refused:
        read_recorded_snapshots(snapshots, inputs)
    assert str(snapshots.root / inputs[0]["key"]) in str(refused.value)
    assert snapshot_status(snapshots, inputs[0]["key"], inputs[0]["sha256"]) == "missing"


# -- the recorded config and environment --------------------------------------------------


def test_recorded_config_rebuilds_the_same_computation_where_the_current_one_runs(
    config: ProjectConfig, tmp_path: Path
) -> None:
    recorded = json.loads(json.dumps(config_record(config)))  # as it comes back from MLflow
    here = config.model_copy(
        update={
            "data": config.data.model_copy(update={"snapshot_uri": str(tmp_path / "elsewhere")}),
            "training": config.training.model_copy(update={"seed": 7}),  # the current file changed
        }
    )
    rebuilt = config_from_record(here, recorded)
    assert rebuilt.fingerprint == config.fingerprint  # what to compute: the record
    assert rebuilt.training.seed == config.training.seed
    assert rebuilt.data.snapshot_uri == str(tmp_path / "elsewhere")  # where: now
    assert rebuilt.root == here.root


def test_a_recorded_config_this_code_cannot_read_is_a_clear_error(config: ProjectConfig) -> None:
    recorded = config_record(config)
    recorded["training"]["retired_setting"] = 1
    with pytest.raises(ConfigError, match=r"training\.retired_setting"):
        config_from_record(config, recorded)


def test_environment_lists_installed_packages_by_canonical_name() -> None:
    env = environment_record()
    from importlib.metadata import version

    assert env["packages"]["scikit-learn"] == version("scikit-learn")
    assert env["python"].count(".") == 2 and env["machine"]


def test_metric_comparison_is_exact() -> None:
    compared = {
        m.name: m
        for m in compare_metrics(
            {"a": 0.1, "b": 0.2, "c": 1.0}, {"a": 0.1, "b": float(np.nextafter(0.2, 1.0)), "d": 2.0}
        )
    }
    assert compared["a"].equal and compared["a"].difference == 0
    assert not compared["b"].equal and 0 < compared["b"].difference < 1e-16  # the last digit counts
    assert not compared["c"].equal and compared["c"].reproduced is None
    assert not compared["d"].equal and compared["d"].recorded is None


def test_likely_causes_name_what_changed() -> None:
    env = {
        "python": "3.11.9",
        "platform": "Linux",
        "machine": "x86_64",
        "packages": {"scikit-learn": "1.9.1", "rich": "13"},
    }
    newer = {**env, "packages": {"scikit-learn": "1.9.2", "rich": "14", "new-thing": "1"}}
    assert list(package_changes(env["packages"], newer["packages"])) == ["scikit-learn", "new-thing", "rich"]
    causes = likely_causes(env, newer, "abc", "def")
    assert causes[0] == "package versions differ (3 packages): scikit-learn 1.9.1 → 1.9.2"
    assert causes[1] == "code commit differs: abc → def"
    assert likely_causes(None, env, "abc", "abc") == [f"package versions at training time: {NOT_RECORDED}"]
    assert "uncommitted changes" in likely_causes(env, env, "abc-dirty", "abc-dirty")[0]
    assert "not deterministic" in likely_causes(env, env, "abc", "abc")[0]


# -- the chain ----------------------------------------------------------------------------


def _facts(inputs: list[dict] | None, snapshots_tag: dict[str, str], **changes) -> RecordedFacts:
    hashes = sorted(i["sha256"] for i in inputs or [])
    tags = {
        "snapshots": json.dumps(snapshots_tag),
        "config_hash": "cfg",
        "training_fingerprint": fingerprint_inputs("cfg", *hashes),
        "validation": "passed",
        "holdout_roc_auc": "0.700000",
    }
    run_tags = {"git_commit": "abc", "config_hash": "cfg", "prefect_flow_run_url": "http://prefect/run/1"}
    facts = RecordedFacts(
        requested="m@champion",
        version=ModelVersionInfo("m", "3", "run1", tags, ["champion"], "desc", _ms("2026-01-01T00:00:00")),
        version_url="http://mlflow/#/models/m/versions/3",
        run=RunRecord(
            "run1",
            "training",
            "FINISHED",
            _ms("2026-01-01T00:00:00"),
            run_tags,
            {"seed": "42"},
            {"holdout_roc_auc": 0.7},
            "http://mlflow/run1",
        ),
        inputs=inputs,
        validation=[
            {
                "batch": "t/2026-01@abc",
                "suite": "s",
                "suite_sha256": "f" * 64,
                "passed": True,
                "expectations": 3,
                "failed": 0,
                "rows": 3,
                "artifact": "validation/t.json",
            }
        ],
        validation_artifacts=[],
        artifact_url_prefix="http://mlflow/run1/artifactPath/",
        environment={
            "python": "3.11.9",
            "platform": "Linux",
            "machine": "x86_64",
            "packages": {"scikit-learn": "1.9.1"},
        },
        config_recorded=True,
        snapshot_status={i["key"]: "present, sha256 verified" for i in inputs or []},
        decisions=[
            DecisionLink(
                "promoted",
                "2026-01-02T00:00:00+00:00",
                "none",
                "2026-02",
                "100",
                ["all gates passed"],
                "http://mlflow/run2",
                "http://prefect/run/2",
            )
        ],
        champion_events=[ChampionEvent(_ms("2026-01-02T00:00:00"), "3", "promotion", "http://mlflow/run2")],
        current_champion="3",
        served=[],
    )
    return RecordedFacts(**{**facts.__dict__, **changes})


def test_the_chain_cross_checks_its_links(recorded_inputs) -> None:
    _, inputs = recorded_inputs
    lineage = assemble_lineage(_facts(inputs, {"t/2026-01": inputs[0]["sha256"]}))
    assert lineage.consistent and lineage.gaps == []
    assert [c.what for c in lineage.checks] == [
        "version tag `snapshots` = hashes the run ingested",
        "training fingerprint = hash(config hash, snapshot hashes)",
        "snapshot t/2026-01 holds the trained bytes",
        "every suite passed",
    ]
    [link] = lineage.inputs
    assert (link.sha256, link.size, link.snapshot_key) == (
        inputs[0]["sha256"],
        inputs[0]["size"],
        inputs[0]["key"],
    )
    assert lineage.validation[0].result_url == "http://mlflow/run1/artifactPath/validation/t.json"
    assert lineage.champion_periods[0].end == "now"
    assert json.loads(json.dumps(lineage.as_json()))["training"]["git_commit"] == "abc"
    markdown = lineage_markdown(lineage)
    assert inputs[0]["sha256"] in markdown and "promoted" in markdown and "Not recorded" not in markdown

    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(lineage_tree(lineage))
    assert inputs[0]["sha256"] in console.export_text()


def test_a_version_tag_that_disagrees_with_the_run_fails_its_check(recorded_inputs) -> None:
    _, inputs = recorded_inputs
    lineage = assemble_lineage(_facts(inputs, {"t/2026-01": "0" * 64}))
    assert not lineage.consistent
    assert [c.what for c in lineage.checks if not c.ok] == [
        "version tag `snapshots` = hashes the run ingested"
    ]


def test_missing_records_are_listed_as_not_recorded(recorded_inputs) -> None:
    lineage = assemble_lineage(
        _facts(
            None,
            {},
            environment=None,
            config_recorded=False,
            validation=None,
            validation_artifacts=["validation/t.json"],
            decisions=[],
            champion_events=[],
            current_champion=None,
            served=None,
        )
    )
    joined = "\n".join(lineage.gaps)
    for missing in (
        "lineage/inputs.json",
        "environment/packages.json",
        "config/resolved.json",
        "validation/summary.json",
        "gate decision",
        "prediction log",
    ):
        assert missing in joined
    assert lineage.training.packages is None and lineage.training.python == NOT_RECORDED
    assert lineage.validation[0].suite == NOT_RECORDED
    assert lineage.champion_periods == []
    assert "### Not recorded" in lineage_markdown(lineage)
