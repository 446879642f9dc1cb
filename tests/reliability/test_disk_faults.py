"""Fault 6: the snapshot or quarantine folder is full or refuses writes.

Each fault must end in a clear error naming the path, never in a half-written snapshot that
counts as complete (the store writes a temp file and renames it; ingest writes the manifest
last), and a rerun once the fault is gone must complete with no landing file lost.

How the faults are made real here, on any machine and as any user (the tests may run as root,
for whom `chmod` blocks nothing, and cannot rely on mounting a small file system):

- disk full: the ingest runs in a child process with RLIMIT_FSIZE lowered (`resource`), so
  the write past the limit fails with EFBIG from the kernel, through the same `write` call and
  error path as ENOSPC;
- permission denied: the folder is made read-only (or unreadable) and the ingest runs in a
  child process; as root the child first drops every capability (capset(2)), so the kernel
  checks the folder's mode bits for it too and really refuses with EACCES;
- a file where the folder should be: ENOTDIR / EEXIST from `mkdir`, in process.
"""

from __future__ import annotations

import io
import json
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from mlops.errors import LandingError
from mlops.storage import LocalStore
from tasks.ingest import ingest_file

from .invariants import audit_landing

REPO_ROOT = Path(__file__).resolve().parents[2]
TABLE = "flights"
KEY = "flights/2013-01.parquet"


class Folders:
    """Landing, snapshot and quarantine folders under one root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.landing, self.snapshots, self.quarantine = (
            root / n for n in ("landing", "snapshots", "quarantine")
        )
        for folder in (self.landing, self.snapshots, self.quarantine):
            folder.mkdir()

    def stores(self) -> tuple[LocalStore, LocalStore, LocalStore]:
        return LocalStore(self.landing), LocalStore(self.snapshots), LocalStore(self.quarantine)

    def land(self, key: str, data: bytes) -> None:
        path = self.landing / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def leftovers(self) -> list[str]:
        """Temp files a failed write left behind (the store hides dot files from listings)."""
        return sorted(str(p) for p in self.root.rglob(".*.tmp"))


@pytest.fixture
def folders(tmp_path: Path) -> Iterator[Folders]:
    yield Folders(tmp_path)
    for path in [tmp_path, *tmp_path.rglob("*")]:  # give back what a test locked, for the cleanup
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


def _parquet(rows: int) -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame({"flight": range(rows), "distance": [1400.0] * rows, "carrier": ["UA"] * rows}).to_parquet(
        buffer
    )
    return buffer.getvalue()


def run_child(
    folders: Folders, key: str, max_file_bytes: int | None = None, unprivileged: bool = False
) -> dict:
    """Ingest `key` in a child process under the fault; returns its JSON outcome."""
    command = [sys.executable, "-m", "tests.reliability.fs_fault_child"]
    command += [str(folders.landing), str(folders.snapshots), str(folders.quarantine), TABLE, key]
    if max_file_bytes is not None:
        command += ["--max-file-bytes", str(max_file_bytes)]
    if unprivileged:
        command.append("--drop-privileges")
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    lines = done.stdout.strip().splitlines()
    assert lines, f"the child printed nothing (exit {done.returncode}):\n{done.stderr[-3000:]}"
    return json.loads(lines[-1])


def _rerun_and_audit(folders: Folders, fault: str, fault_report, runs: int = 2) -> None:
    landing, snapshots, quarantine = folders.stores()
    snapshot, frame = ingest_file(landing, snapshots, quarantine, TABLE, None, KEY)
    assert snapshot.rows == len(frame)
    audit = audit_landing(landing, snapshots, quarantine)
    fault_report.record(fault, runs=runs, violations=audit.violations, rows_lost=audit.rows_lost)
    assert audit.snapshotted == [KEY], audit.problems
    assert folders.leftovers() == []


def test_disk_full_while_writing_the_snapshot(folders: Folders, fault_report) -> None:
    data = _parquet(2000)
    folders.land(KEY, data)
    outcome = run_child(folders, KEY, max_file_bytes=len(data) // 2)

    assert outcome["ok"] is False and outcome["error"] == "LandingError", outcome
    assert "File too large" in outcome["message"] and str(folders.snapshots / "flights") in outcome["message"]
    assert "writable" in outcome["message"] and "room" in outcome["message"]  # says what to check
    # Nothing half-written is left, let alone taken as complete.
    assert folders.leftovers() == []
    assert list((folders.snapshots / "flights").iterdir()) == []
    assert audit_landing(*folders.stores()).lost == [KEY]  # not snapshotted: the rerun must do it
    _rerun_and_audit(folders, "6 disk full (EFBIG) on the snapshot", fault_report)


def test_disk_full_while_writing_the_manifest(folders: Folders, fault_report) -> None:
    """The data fits, its manifest does not: the snapshot stays incomplete until a rerun."""
    data = b"flight,distance\n1,1400\n2,1000\n"  # a file smaller than its manifest
    key = "flights/2013-01.csv"
    folders.land(key, data)
    outcome = run_child(folders, key, max_file_bytes=len(data) + 16)

    assert outcome["ok"] is False and "File too large" in outcome["message"], outcome
    assert ".csv.json" in outcome["message"]  # the manifest's path
    written = sorted(p.name for p in (folders.snapshots / "flights").iterdir())
    assert len(written) == 1 and written[0].endswith(".csv")  # the data only, no manifest
    assert folders.leftovers() == []
    audit = audit_landing(*folders.stores())
    assert audit.lost == [key]  # a data file without its manifest is not a snapshot

    landing, snapshots, quarantine = folders.stores()
    ingest_file(landing, snapshots, quarantine, TABLE, None, key)  # the rerun writes the manifest
    audit = audit_landing(landing, snapshots, quarantine)
    fault_report.record("6 disk full (EFBIG) on the manifest", 2, audit.violations, audit.rows_lost)
    assert audit.snapshotted == [key], audit.problems


@pytest.mark.parametrize("mode", [0o555, 0o000], ids=["read-only", "unreadable"])
def test_permission_denied_on_the_snapshot_folder(folders: Folders, mode: int, fault_report) -> None:
    folders.land(KEY, _parquet(500))
    folders.snapshots.chmod(mode)
    outcome = run_child(folders, KEY, unprivileged=True)
    folders.snapshots.chmod(0o755)

    assert outcome["ok"] is False and outcome["error"] == "LandingError", outcome
    assert "Permission denied" in outcome["message"] and str(folders.snapshots) in outcome["message"]
    assert list(folders.snapshots.iterdir()) == [] and folders.leftovers() == []
    _rerun_and_audit(
        folders, f"6 permission denied ({stat.filemode(mode | stat.S_IFDIR)}) on snapshots", fault_report
    )


def test_permission_denied_on_the_quarantine_folder(folders: Folders, fault_report) -> None:
    """A bad file that cannot be quarantined fails loudly and stays in the landing zone."""
    key = "flights/2013-02.parquet"
    folders.land(key, b"PAR1 truncated")
    folders.quarantine.chmod(0o555)
    outcome = run_child(folders, key, unprivileged=True)
    folders.quarantine.chmod(0o755)

    assert outcome["ok"] is False and outcome["error"] == "LandingError", outcome
    assert "Permission denied" in outcome["message"] and str(folders.quarantine) in outcome["message"]
    assert (folders.landing / key).exists()  # never moved away while it could not be kept

    landing, snapshots, quarantine = folders.stores()
    with pytest.raises(Exception, match="not a complete Parquet file"):  # the rerun quarantines it
        ingest_file(landing, snapshots, quarantine, TABLE, "2013-02", key)
    audit = audit_landing(landing, snapshots, quarantine)
    fault_report.record("6 permission denied on quarantine", 2, audit.violations, audit.rows_lost)
    assert audit.quarantined == [key], audit.problems


def test_a_file_where_the_snapshot_folder_should_be(folders: Folders, fault_report) -> None:
    folders.land(KEY, _parquet(100))
    (folders.snapshots / "flights").write_bytes(b"not a folder")
    landing, snapshots, quarantine = folders.stores()
    with pytest.raises(LandingError, match="cannot write") as failed:
        ingest_file(landing, snapshots, quarantine, TABLE, None, KEY)
    assert str(folders.snapshots / "flights") in str(failed.value)
    assert folders.leftovers() == []

    (folders.snapshots / "flights").unlink()
    _rerun_and_audit(folders, "6 file where the snapshot folder should be", fault_report)
