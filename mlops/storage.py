"""One interface over a local folder and an S3 prefix, so every step reads and writes
the same way wherever the data lives.

Keys are relative, '/'-separated, and confined to the store's root: a `..` or an
absolute key is refused rather than resolved outside it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from mlops.config import ProjectConfig, S3Settings
from mlops.errors import ConfigError, LandingError, ServiceUnavailableError


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def safe_key(key: str) -> str:
    """Refuse keys that would escape the store's root."""
    path = PurePosixPath(key)
    if not key or path.is_absolute() or ".." in path.parts or "\\" in key:
        raise ConfigError(f"key {key!r} must be a relative path inside its store (no '..', no leading '/')")
    return str(path)


class MissingKeyError(LandingError):
    """The key is not in the store (and only that: not a permission or server error)."""


class Store(Protocol):
    uri: str

    def read_bytes(self, key: str) -> bytes: ...
    def write_bytes(self, key: str, data: bytes) -> str: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def uri_for(self, key: str) -> str: ...


@dataclass
class LocalStore:
    root: Path

    @property
    def uri(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / safe_key(key)

    def uri_for(self, key: str) -> str:
        return str(self._path(key))

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise LandingError(f"{path} does not exist") from None
        except OSError as exc:
            raise LandingError(f"cannot read {path}: {exc.strerror}") from None

    def write_bytes(self, key: str, data: bytes) -> str:
        """Write to a temp file and rename, so a half-written file is never seen as complete."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise LandingError(
                f"cannot write {path}: {exc.strerror}; check that {self.root} is writable"
                " and its disk has room, then run again"
            ) from None
        return str(path)

    def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            return path.is_file()
        except OSError as exc:  # e.g. a folder it may not enter: an error, not "missing"
            raise LandingError(
                f"cannot check {path}: {exc.strerror}; check the permissions of {self.root}"
            ) from None

    def list(self, prefix: str = "") -> list[str]:
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return []
        return sorted(
            str(p.relative_to(self.root).as_posix())
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store:
    """An S3 prefix through boto3. Any S3-compatible endpoint works (MinIO, moto)."""

    def __init__(self, uri: str, settings: S3Settings) -> None:
        import boto3
        from botocore.config import Config

        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise ConfigError(f"S3 URI {uri!r} has no bucket (expected s3://bucket/prefix)")
        self.uri = uri.rstrip("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.settings = settings
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            region_name=settings.region,
            config=Config(
                # total_max_attempts counts the first try too, unlike retries.max_attempts
                retries={"total_max_attempts": settings.max_attempts, "mode": settings.retry_mode},
                connect_timeout=settings.connect_timeout,
                read_timeout=settings.read_timeout,
                # boto3 >= 1.36 adds checksums that older MinIO releases reject
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def _key(self, key: str) -> str:
        key = safe_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _call(self, what: str, fn, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", ""), error.get("Message", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in {"NoSuchKey", "404", "NotFound"}:
                raise MissingKeyError(f"{what}: not found") from None
            if code == "NoSuchBucket":
                raise LandingError(f"{what}: bucket {self.bucket!r} does not exist") from None
            if code in {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
                raise LandingError(
                    f"{what}: access denied ({code} {message}): give these credentials read/write"
                    f" access to bucket {self.bucket!r}, or check AWS_ACCESS_KEY_ID/AWS_PROFILE"
                ) from None
            if status >= 500:
                raise ServiceUnavailableError(
                    f"{what}: S3 answered {status} {code} {message} after {self.settings.max_attempts}"
                    f" attempt(s); try again later, or raise data.s3.max_attempts"
                ) from None
            raise LandingError(f"{what}: {code} {message}") from None
        except BotoCoreError as exc:
            raise ServiceUnavailableError(
                f"{what}: S3 endpoint {self.client.meta.endpoint_url} did not answer after"
                f" {self.settings.max_attempts} attempt(s) ({exc}); check that it is up and"
                " data.s3.endpoint_url, or raise data.s3.read_timeout / max_attempts"
            ) from None

    def read_bytes(self, key: str) -> bytes:
        resp = self._call(f"reading {self.uri_for(key)}", self.client.get_object, Key=self._key(key))
        return resp["Body"].read()

    def write_bytes(self, key: str, data: bytes) -> str:
        # A PUT is atomic on S3: the object appears whole or not at all.
        self._call(f"writing {self.uri_for(key)}", self.client.put_object, Key=self._key(key), Body=data)
        return self.uri_for(key)

    def exists(self, key: str) -> bool:
        try:
            self._call(f"checking {self.uri_for(key)}", self.client.head_object, Key=self._key(key))
        except MissingKeyError:  # only "not found" is False: a 403 or a 5xx is an error, not absence
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        keys: list[str] = []
        token: dict[str, str] = {}
        while True:
            resp = self._call(
                f"listing {self.uri}/{prefix}", self.client.list_objects_v2, Prefix=full, **token
            )
            for item in resp.get("Contents", []):
                keys.append(item["Key"][len(self.prefix) + 1 :] if self.prefix else item["Key"])
            if not resp.get("IsTruncated"):
                return sorted(keys)
            token = {"ContinuationToken": resp["NextContinuationToken"]}

    def delete(self, key: str) -> None:
        self._call(f"deleting {self.uri_for(key)}", self.client.delete_object, Key=self._key(key))


def open_store(uri: str, s3: S3Settings) -> Store:
    """A local folder for a path, an S3 prefix for an s3:// URI."""
    if uri.startswith("s3://"):
        return S3Store(uri, s3)
    if "://" in uri:
        raise ConfigError(f"unsupported storage URI {uri!r}: use a local path or s3://bucket/prefix")
    return LocalStore(Path(uri))


@dataclass(frozen=True)
class Stores:
    """The project's stores, opened from its config: where batches land, their immutable
    snapshots, rejected files, the prediction log and the log with its ground truth joined."""

    landing: Store
    snapshots: Store
    quarantine: Store
    predictions: Store
    labelled_predictions: Store

    @classmethod
    def from_config(cls, config: ProjectConfig) -> Stores:
        data = config.data
        return cls(
            open_store(config.store_uri(data.landing_uri), data.s3),
            open_store(config.store_uri(data.snapshot_uri), data.s3),
            open_store(config.store_uri(data.quarantine_uri), data.s3),
            open_store(config.store_uri(config.serving.prediction_log_uri), data.s3),
            open_store(config.store_uri(config.serving.labelled_log_location), data.s3),
        )
