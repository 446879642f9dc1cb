"""The harness itself: the invariant checks catch what they claim to catch.

Checked on real stores (a local folder) and plain registry-like records, so a broken check
cannot pass every fault test silently.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from mlops.errors import BadBatchError
from mlops.storage import LocalStore
from tasks.ingest import ingest_file

from .invariants import audit_landing, champion_problems, decision_passed, duplicate_registrations


def _parquet(rows: int) -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame({"a": range(rows), "b": [1.5] * rows}).to_parquet(buffer)
    return buffer.getvalue()


def _stores(tmp_path: Path) -> tuple[LocalStore, LocalStore, LocalStore]:
    return tuple(LocalStore(tmp_path / n) for n in ("landing", "snapshots", "quarantine"))  # type: ignore[return-value]


def test_landing_audit_finds_lost_and_half_written_files(tmp_path: Path, fault_report) -> None:
    landing, snapshots, quarantine = _stores(tmp_path)
    landing.write_bytes("t/good.parquet", _parquet(7))
    landing.write_bytes("t/bad.parquet", b"not parquet")
    landing.write_bytes("t/lost.parquet", _parquet(5))
    landing.write_bytes("t/half.parquet", _parquet(3))
    ingest_file(landing, snapshots, quarantine, "t", None, "t/good.parquet")
    with pytest.raises(BadBatchError):  # quarantined, then raised: as designed
        ingest_file(landing, snapshots, quarantine, "t", None, "t/bad.parquet")
    # A snapshot whose data was written but whose manifest was not: not complete.
    snapshot, _ = ingest_file(landing, snapshots, quarantine, "t", None, "t/half.parquet")
    snapshots.delete(snapshot.manifest_key)

    audit = audit_landing(landing, snapshots, quarantine)

    assert audit.snapshotted == ["t/good.parquet"]
    assert audit.quarantined == ["t/bad.parquet"]
    assert audit.lost == ["t/half.parquet", "t/lost.parquet"]
    assert audit.rows_lost == 8
    fault_report.record("harness: audit of a planted loss", runs=1, violations=0, rows_lost=0)


def test_quarantine_without_reason_counts_as_lost(tmp_path: Path) -> None:
    landing, snapshots, quarantine = _stores(tmp_path)
    landing.write_bytes("t/bad.csv", b"")
    quarantine.write_bytes("t/static/abc/bad.csv", b"")  # no reason.json beside it
    assert audit_landing(landing, snapshots, quarantine).lost == ["t/bad.csv"]
    quarantine.write_bytes("t/static/abc/reason.json", json.dumps({"reason": "empty"}).encode())
    assert audit_landing(landing, snapshots, quarantine).quarantined == ["t/bad.csv"]


def test_registry_checks() -> None:
    versions = [
        SimpleNamespace(version="1", tags={"training_fingerprint": "f1"}),
        SimpleNamespace(version="2", tags={"training_fingerprint": "f2"}),
        SimpleNamespace(version="3", tags={"training_fingerprint": "f1"}),
    ]
    assert duplicate_registrations(versions) == {"f1": ["1", "3"]}

    passed = {"promotion": "promoted", "promotion.gate.quality.roc_auc": "passed: 0.73 >= 0.65"}
    failed = {"promotion": "rejected", "promotion.gate.quality.roc_auc": "failed: 0.6 < 0.65"}
    assert decision_passed(passed) and not decision_passed(failed) and not decision_passed({})
    first = passed | {"promotion.gate.champion.roc_auc_gain": "skipped: no champion yet"}
    assert decision_passed(first)  # skipped gates never block a promotion
    sneaked = first | {"promotion.gate.slices.origin": "failed: EWR drops 0.05"}
    assert not decision_passed(sneaked)
    assert champion_problems({"champion": "1"}, {"1": passed}) == []
    assert champion_problems({"challenger": "2"}, {"2": failed}) == []
    assert len(champion_problems({"champion": "2"}, {"2": failed})) == 1
    assert len(champion_problems({"champion": "9"}, {"2": failed})) == 1
