"""Fault 3: the S3 endpoint answers errors or times out for a while.

boto3 (through `S3Store` and the `data.s3` settings) talks to a fault-injecting proxy on
loopback in front of the moto server. A transient window of 500/503 answers or of requests
held beyond the read timeout is absorbed by botocore's retries; a persistent one fails with an
error naming the bucket and key and what to do. `exists()` answers False only for "not found":
a permission error or a 5xx on a snapshot manifest must not read as "not snapshotted yet".
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from mlops.config import S3Settings
from mlops.errors import LandingError, ServiceUnavailableError
from mlops.storage import LocalStore, S3Store, open_store
from tasks.ingest import ingest_file

from .invariants import audit_landing
from .s3_fault_proxy import S3FaultProxy

ATTEMPTS = 4  # botocore's total attempts: three retries
READ_TIMEOUT = 1.0  # a held request longer than this is a timeout for the client
HOLD = READ_TIMEOUT + 1.5


@pytest.fixture
def proxy(moto_s3: str) -> Iterator[S3FaultProxy]:
    with S3FaultProxy(moto_s3) as running:
        yield running


@pytest.fixture
def settings(proxy: S3FaultProxy) -> S3Settings:
    return S3Settings(
        endpoint_url=proxy.url,
        max_attempts=ATTEMPTS,
        connect_timeout=1,
        read_timeout=READ_TIMEOUT,
        retry_mode="standard",
    )


@pytest.fixture
def bucket(moto_s3: str) -> str:
    """A fresh bucket, created on moto directly (not through the proxy)."""
    import boto3

    name = f"faults-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def _parquet(rows: int, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame({"flight": range(seed, seed + rows), "distance": [100.0 + seed] * rows}).to_parquet(buffer)
    return buffer.getvalue()


# -- the store ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503])
def test_transient_errors_are_retried(
    proxy: S3FaultProxy, settings: S3Settings, bucket: str, status: int, fault_report
) -> None:
    store = S3Store(f"s3://{bucket}/landing", settings)
    proxy.fail(status, times=ATTEMPTS - 1)  # every attempt but the last of one call fails
    store.write_bytes("a.bin", b"payload")
    proxy.fail(status, times=ATTEMPTS - 1)
    assert store.read_bytes("a.bin") == b"payload"
    proxy.fail(status, times=ATTEMPTS - 1)
    assert store.exists("a.bin")
    proxy.fail(status, times=ATTEMPTS - 1)
    assert store.list() == ["a.bin"]

    assert proxy.injected == 4 * (ATTEMPTS - 1)
    fault_report.record(f"3 S3 transient {status}", runs=4, violations=0, rows_lost=0)


def test_transient_timeouts_are_retried(
    proxy: S3FaultProxy, settings: S3Settings, bucket: str, fault_report
) -> None:
    store = S3Store(f"s3://{bucket}/landing", settings)
    proxy.delay(HOLD, times=2)  # two attempts time out, the third goes through
    store.write_bytes("a.bin", b"payload")
    proxy.delay(HOLD, times=2)
    assert store.read_bytes("a.bin") == b"payload"
    assert proxy.injected == 4
    fault_report.record("3 S3 transient timeout", runs=2, violations=0, rows_lost=0)


def test_a_time_window_of_errors_is_ridden_out(
    proxy: S3FaultProxy, moto_s3: str, bucket: str, fault_report
) -> None:
    """A window measured in time (the endpoint is down for a moment), not in requests:
    enough attempts (botocore's standard backoff: up to 2^n s, capped at 20 s) outlast it."""
    store = S3Store(f"s3://{bucket}/landing", S3Settings(endpoint_url=proxy.url, max_attempts=10))
    proxy.fail(503, seconds=1.5)
    store.write_bytes("a.bin", b"payload")
    assert store.read_bytes("a.bin") == b"payload"
    assert proxy.injected >= 1
    fault_report.record("3 S3 503 for 1.5 s", runs=1, violations=0, rows_lost=0)


def test_persistent_errors_fail_naming_the_key_and_what_to_do(
    proxy: S3FaultProxy, settings: S3Settings, bucket: str, fault_report
) -> None:
    store = S3Store(f"s3://{bucket}/landing", settings)
    proxy.fail(503)
    with pytest.raises(ServiceUnavailableError) as failed:
        store.read_bytes("flights/2013-01.parquet")
    message = str(failed.value)
    assert f"s3://{bucket}/landing/flights/2013-01.parquet" in message
    assert "503" in message and f"after {ATTEMPTS} attempt" in message and "max_attempts" in message
    assert proxy.injected == ATTEMPTS  # every attempt was made, none more

    proxy.clear()
    proxy.delay(HOLD)
    with pytest.raises(ServiceUnavailableError) as timed_out:
        store.write_bytes("flights/2013-01.parquet", b"x")
    message = str(timed_out.value)
    assert f"s3://{bucket}/landing/flights/2013-01.parquet" in message
    assert "did not answer" in message and "endpoint_url" in message
    fault_report.record("3 S3 persistent 503 / timeout", runs=2, violations=0, rows_lost=0)


def test_exists_is_false_only_for_a_missing_key(
    proxy: S3FaultProxy, settings: S3Settings, bucket: str
) -> None:
    """A 403 or a 5xx on a manifest is an error, never "not snapshotted yet"."""
    store = S3Store(f"s3://{bucket}/snapshots", settings)
    store.write_bytes("flights/abc.parquet.json", b"{}")
    assert store.exists("flights/abc.parquet.json")
    assert not store.exists("flights/other.parquet.json")  # a real 404 through the proxy

    proxy.fail(403, method="HEAD")
    with pytest.raises(LandingError, match="access denied") as denied:
        store.exists("flights/abc.parquet.json")
    assert f"s3://{bucket}/snapshots/flights/abc.parquet.json" in str(denied.value)
    assert bucket in str(denied.value) and "credentials" in str(denied.value)

    proxy.clear()
    proxy.fail(500, method="HEAD")
    with pytest.raises(ServiceUnavailableError, match="500"):
        store.exists("flights/abc.parquet.json")


# -- through the ingest step ----------------------------------------------------------------


@pytest.fixture
def s3_landing(settings: S3Settings, bucket: str, tmp_path: Path) -> tuple[S3Store, LocalStore, LocalStore]:
    landing = open_store(f"s3://{bucket}/landing", settings)
    assert isinstance(landing, S3Store)
    for month in range(1, 4):
        landing.write_bytes(f"flights/2013-0{month}.parquet", _parquet(50 + month, seed=month))
    return landing, LocalStore(tmp_path / "snapshots"), LocalStore(tmp_path / "quarantine")


def test_ingest_from_s3_rides_out_a_fault_window(
    proxy: S3FaultProxy, s3_landing: tuple[S3Store, LocalStore, LocalStore], fault_report
) -> None:
    landing, snapshots, quarantine = s3_landing
    keys = landing.list("flights")
    faults = [
        lambda: proxy.fail(503, times=2),
        lambda: proxy.fail(500, times=3),
        lambda: proxy.delay(HOLD, times=1),
    ]
    for key, inject in zip(keys, faults, strict=True):
        inject()
        snapshot, frame = ingest_file(landing, snapshots, quarantine, "flights", key[8:15], key)
        assert snapshot.rows == len(frame) > 0

    assert proxy.injected == 6
    audit = audit_landing(landing, snapshots, quarantine)
    fault_report.record(
        "3 S3 faults during ingest", runs=len(keys), violations=audit.violations, rows_lost=audit.rows_lost
    )
    assert audit.snapshotted == keys, audit.problems


def test_ingest_fails_clearly_on_a_persistent_fault_and_a_rerun_completes(
    proxy: S3FaultProxy, s3_landing: tuple[S3Store, LocalStore, LocalStore], bucket: str, fault_report
) -> None:
    landing, snapshots, quarantine = s3_landing
    key = "flights/2013-02.parquet"
    proxy.fail(503, method="GET")  # the file is found (HEAD), but cannot be read
    with pytest.raises(ServiceUnavailableError) as failed:
        ingest_file(landing, snapshots, quarantine, "flights", "2013-02", key)
    assert f"s3://{bucket}/landing/{key}" in str(failed.value)
    # Nothing half-done: no snapshot, and an S3 outage is not the file's fault (no quarantine).
    assert snapshots.list() == [] and quarantine.list() == []

    proxy.clear()
    ingest_file(landing, snapshots, quarantine, "flights", "2013-02", key)  # the rerun
    audit = audit_landing(landing, snapshots, quarantine, keys=[key])
    fault_report.record(
        "3 S3 persistent fault, then rerun", runs=2, violations=audit.violations, rows_lost=audit.rows_lost
    )
    assert audit.snapshotted == [key], audit.problems
