"""S3Store against a moto server over real HTTP: the same contract as the local store."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pandas as pd
import pytest

from app.seed import seed_landing
from mlops.config import ProjectConfig, S3Settings, load_config
from mlops.errors import ConfigError, LandingError
from mlops.storage import S3Store, open_store

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(moto_s3: str) -> S3Settings:
    # One attempt and short timeouts: a failure should show at once, not after retries.
    return S3Settings(endpoint_url=moto_s3, max_attempts=1, connect_timeout=2, read_timeout=10)


@pytest.fixture
def bucket(settings: S3Settings) -> str:
    import boto3

    name = f"landing-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=settings.endpoint_url, region_name=settings.region).create_bucket(
        Bucket=name
    )
    return name


def test_write_read_list_exists_delete(settings: S3Settings, bucket: str) -> None:
    store = open_store(f"s3://{bucket}/landing/", settings)
    assert isinstance(store, S3Store)
    assert store.uri == f"s3://{bucket}/landing"

    uri = store.write_bytes("flights/2013-01.parquet", b"one")
    store.write_bytes("flights/2013-02.parquet", b"two")
    store.write_bytes("weather.parquet", b"three")
    assert uri == f"s3://{bucket}/landing/flights/2013-01.parquet"
    assert store.read_bytes("flights/2013-02.parquet") == b"two"
    assert store.exists("weather.parquet")
    assert store.list() == ["flights/2013-01.parquet", "flights/2013-02.parquet", "weather.parquet"]
    assert store.list("flights") == ["flights/2013-01.parquet", "flights/2013-02.parquet"]

    store.delete("weather.parquet")
    assert not store.exists("weather.parquet")
    assert store.list() == ["flights/2013-01.parquet", "flights/2013-02.parquet"]


def test_prefix_isolates_stores_in_one_bucket(settings: S3Settings, bucket: str) -> None:
    a = S3Store(f"s3://{bucket}/a", settings)
    b = S3Store(f"s3://{bucket}/b", settings)
    a.write_bytes("x.bin", b"a")
    assert b.list() == []
    assert not b.exists("x.bin")


def test_missing_key_is_a_landing_error(settings: S3Settings, bucket: str) -> None:
    store = S3Store(f"s3://{bucket}/landing", settings)
    with pytest.raises(LandingError, match="not found"):
        store.read_bytes("flights/2099-01.parquet")
    assert not store.exists("flights/2099-01.parquet")


def test_missing_bucket_names_the_bucket(settings: S3Settings) -> None:
    store = S3Store("s3://no-such-bucket-here/landing", settings)
    with pytest.raises(LandingError, match="bucket 'no-such-bucket-here' does not exist"):
        store.write_bytes("x.bin", b"x")
    with pytest.raises(LandingError, match="does not exist"):
        store.list()


def test_keys_cannot_escape_the_prefix(settings: S3Settings, bucket: str) -> None:
    store = S3Store(f"s3://{bucket}/landing", settings)
    with pytest.raises(ConfigError):
        store.write_bytes("../outside.bin", b"x")


def test_uri_without_bucket_is_a_config_error(settings: S3Settings) -> None:
    with pytest.raises(ConfigError, match="no bucket"):
        S3Store("s3:///prefix", settings)


def test_seed_landing_into_s3(settings: S3Settings, bucket: str) -> None:
    base = load_config(REPO_ROOT / "mlops.yaml")
    config: ProjectConfig = base.model_copy(
        update={
            "data": base.data.model_copy(update={"landing_uri": f"s3://{bucket}/landing", "s3": settings})
        }
    )
    store = open_store(config.store_uri(config.data.landing_uri), config.data.s3)

    written = seed_landing(config, store, ["2013-02"], sample_fraction=0.02, seed=7)
    month_key = config.data.tables["flights"].key("2013-02")
    assert written == [month_key, config.data.tables["weather"].key(), config.data.tables["planes"].key()]
    assert sorted(store.list()) == sorted(written)

    month = pd.read_parquet(io.BytesIO(store.read_bytes(month_key)))
    assert 400 < len(month) < 700  # 2% of February's 24,951 flights
    assert set(month["month"]) == {2}
    assert str(month["time_hour"].dt.tz) == "UTC"

    # Same request again: every file is already there byte for byte.
    assert seed_landing(config, store, ["2013-02"], sample_fraction=0.02, seed=7) == []
