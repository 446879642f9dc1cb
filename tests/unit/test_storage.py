"""LocalStore: writes are atomic and keys cannot escape the store's root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlops.errors import ConfigError, LandingError
from mlops.storage import LocalStore, open_store


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_write_then_read(store: LocalStore) -> None:
    uri = store.write_bytes("a/b/c.parquet", b"data")
    assert uri == str(store.root / "a" / "b" / "c.parquet")
    assert store.read_bytes("a/b/c.parquet") == b"data"
    assert store.exists("a/b/c.parquet")


def test_write_leaves_no_temp_file(store: LocalStore) -> None:
    store.write_bytes("x.bin", b"1")
    store.write_bytes("x.bin", b"2")
    assert [p.name for p in store.root.iterdir()] == ["x.bin"]
    assert store.read_bytes("x.bin") == b"2"


def test_failed_write_keeps_the_old_file(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.write_bytes("x.bin", b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(LandingError, match="No space left"):
        store.write_bytes("x.bin", b"new")
    monkeypatch.undo()
    assert store.read_bytes("x.bin") == b"old"
    assert [p.name for p in store.root.iterdir()] == ["x.bin"]  # the temp file was removed


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "", "a\\..\\x"])
def test_keys_outside_the_root_are_refused(store: LocalStore, key: str) -> None:
    for op in (store.read_bytes, store.exists, store.delete, store.uri_for):
        with pytest.raises(ConfigError, match="relative path inside its store"):
            op(key)
    with pytest.raises(ConfigError):
        store.write_bytes(key, b"escape")
    assert not (store.root.parent / "x").exists()


def test_missing_key_is_a_landing_error(store: LocalStore) -> None:
    with pytest.raises(LandingError, match="does not exist"):
        store.read_bytes("absent.parquet")
    assert not store.exists("absent.parquet")


def test_list_is_sorted_recursive_and_skips_hidden(store: LocalStore) -> None:
    for key in ["flights/2013-02.parquet", "flights/2013-01.parquet", "weather.parquet"]:
        store.write_bytes(key, b"x")
    (store.root / "flights" / ".2013-03.parquet.tmp").write_bytes(b"partial")
    assert store.list() == ["flights/2013-01.parquet", "flights/2013-02.parquet", "weather.parquet"]
    assert store.list("flights") == ["flights/2013-01.parquet", "flights/2013-02.parquet"]
    assert store.list("nothing-here") == []


def test_list_of_a_store_not_created_yet_is_empty(tmp_path: Path) -> None:
    assert LocalStore(tmp_path / "never-written").list() == []


def test_delete_is_idempotent(store: LocalStore) -> None:
    store.write_bytes("x.bin", b"1")
    store.delete("x.bin")
    store.delete("x.bin")
    assert not store.exists("x.bin")


def test_open_store_refuses_unknown_schemes(tmp_path: Path) -> None:
    from mlops.config import S3Settings

    assert isinstance(open_store(str(tmp_path), S3Settings()), LocalStore)
    with pytest.raises(ConfigError, match="unsupported storage URI"):
        open_store("gs://bucket/prefix", S3Settings())
