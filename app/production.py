"""The production profile of the stack: what `mlops up --profile production` needs beyond the
local one, the docker-compose topology as local processes.

- Prefect's server and MLflow's tracking store live in PostgreSQL (`stack.production`), each in
  its own database, created here when missing;
- MLflow stores artifacts in an S3 bucket and serves them to clients (`--serve-artifacts`), so
  only the server holds S3 credentials; the bucket must exist;
- MLflow's basic-auth app guards every request. Its config file is written under the state
  folder without any secret: the server reads the admin's password from
  MLFLOW_AUTH_ADMIN_PASSWORD (used once, when it creates the admin), clients send
  MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (the processes the stack starts default to
  the admin's).

Every check runs before a server starts and fails with what is wrong and what to do, rather than
with a server log full of driver tracebacks. Heavy imports (psycopg2, boto3) stay inside the
functions: the CLI imports this module for the local profile too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from mlops.config import ProductionStackConfig, ProjectConfig, StackConfig
from mlops.errors import ConfigError, ServiceUnavailableError

if TYPE_CHECKING:
    from psycopg2.extensions import connection

ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"  # read by MLflow's auth app itself
CLIENT_USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"  # read by every MLflow client
CLIENT_PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
FLASK_SECRET_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"  # signs the auth app's CSRF tokens
# The admin password MLflow shipped before 3.x; a stack that used it is open to anyone.
KNOWN_DEFAULT_PASSWORDS = frozenset({"password", "password1234"})
CONNECT_TIMEOUT = 5  # seconds to reach PostgreSQL


def with_profile(config: ProjectConfig, profile: str | None) -> ProjectConfig:
    """The config with `stack.profile` overridden (the CLI's --profile), validated again."""
    if profile is None or profile == config.stack.profile:
        return config
    if profile not in {"local", "production"}:
        raise ConfigError(f"--profile must be 'local' or 'production', got {profile!r}")
    if profile == "production" and config.stack.production is None:
        raise ConfigError(
            "--profile production needs a stack.production section in the config"
            " (database_url, artifacts_uri; see mlops.yaml)"
        )
    stack = StackConfig.model_validate({**config.stack.model_dump(), "profile": profile})
    return config.model_copy(update={"stack": stack})


def settings_of(config: ProjectConfig) -> ProductionStackConfig | None:
    """The production settings when the production profile is on, else None."""
    return config.stack.production if config.stack.profile == "production" else None


def _server(settings: ProductionStackConfig) -> tuple[str, str, int]:
    parts = urlsplit(settings.database_url)
    return parts.username or "postgres", parts.hostname or "127.0.0.1", parts.port or 5432


def database_url(settings: ProductionStackConfig, database: str, driver: str | None = None) -> str:
    """A SQLAlchemy URL of one database; the password stays in PGPASSWORD, which every driver
    used here (libpq through psycopg2, asyncpg) reads by itself."""
    user, host, port = _server(settings)
    scheme = f"postgresql+{driver}" if driver else "postgresql"
    return f"{scheme}://{user}@{host}:{port}/{database}"


def prefect_database_url(settings: ProductionStackConfig) -> str:
    return database_url(settings, settings.prefect_database, driver="asyncpg")


def mlflow_backend_store_uri(settings: ProductionStackConfig) -> str:
    # Named, not implied: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which the
    # project does not install.
    return database_url(settings, settings.mlflow_database, driver="psycopg2")


def auth_config_path(config: ProjectConfig) -> Path:
    return config.state_dir / "mlflow" / "basic_auth.ini"


def mlflow_server_env(config: ProjectConfig) -> dict[str, str]:
    """What the MLflow server process needs on top of the caller's environment."""
    settings = config.stack.production
    assert settings is not None
    env = {"AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", settings.s3.region)}
    if settings.s3.endpoint_url:
        env["MLFLOW_S3_ENDPOINT_URL"] = settings.s3.endpoint_url
    if settings.mlflow_auth:
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config_path(config))
        if not os.environ.get(FLASK_SECRET_ENV):
            env[FLASK_SECRET_ENV] = _flask_secret(config)
    return env


def _flask_secret(config: ProjectConfig) -> str:
    """The auth app's CSRF signing key when the environment sets none: made once, kept in the
    state folder (owner-only), so tokens stay valid across restarts."""
    path = config.state_dir / "mlflow" / "flask_secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another `mlops` made it meanwhile
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def client_env(config: ProjectConfig) -> dict[str, str]:
    """Credentials for the processes the stack starts (deployments, prediction service): the
    caller's MLFLOW_TRACKING_USERNAME/PASSWORD, else the admin's."""
    settings = settings_of(config)
    if settings is None or not settings.mlflow_auth:
        return {}
    if os.environ.get(CLIENT_USERNAME_ENV) and os.environ.get(CLIENT_PASSWORD_ENV):
        return {}  # inherited as they are
    password = os.environ.get(ADMIN_PASSWORD_ENV)
    if not password:
        return {}  # `check_auth` refuses to start without it
    return {CLIENT_USERNAME_ENV: settings.mlflow_admin_username, CLIENT_PASSWORD_ENV: password}


# --- checks and set-up before the servers start ------------------------------------------


def _connect(settings: ProductionStackConfig, database: str) -> connection:
    import psycopg2

    user, host, port = _server(settings)
    try:
        return psycopg2.connect(
            dbname=database, user=user, host=host, port=port, connect_timeout=CONNECT_TIMEOUT
        )
    except psycopg2.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer"
        if any(word in reason for word in ("password", "authentication", "role")):
            raise ConfigError(
                f"PostgreSQL at {host}:{port} refused user {user!r} ({reason}): set PGPASSWORD,"
                " or the user in stack.production.database_url"
            ) from None
        raise ServiceUnavailableError(
            f"PostgreSQL at {host}:{port} is unreachable ({reason}): start it (e.g. `docker compose"
            " up -d postgres`) or point stack.production.database_url at a running server"
        ) from None


def ensure_databases(settings: ProductionStackConfig, databases: list[str]) -> list[str]:
    """Create the databases that do not exist yet; returns the ones created."""
    from psycopg2 import sql
    from psycopg2.errors import DuplicateDatabase, InsufficientPrivilege

    connection = _connect(settings, "postgres")
    connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    created = []
    try:
        with connection.cursor() as cursor:
            for name in dict.fromkeys(databases):
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone():
                    continue
                try:
                    cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                except DuplicateDatabase:
                    continue  # created by someone else meanwhile
                except InsufficientPrivilege:
                    user, host, port = _server(settings)
                    raise ConfigError(
                        f"database {name!r} does not exist on {host}:{port} and user {user!r} may not"
                        " create it: create it as an administrator, or use a user with CREATEDB"
                    ) from None
                created.append(name)
    finally:
        connection.close()
    return created


def check_artifact_bucket(settings: ProductionStackConfig) -> None:
    """The artifact bucket exists and these credentials may use it."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from mlops.storage import S3Store

    store = S3Store(settings.artifacts_uri, settings.s3)
    where = settings.s3.endpoint_url or "AWS S3"
    try:
        store.client.head_bucket(Bucket=store.bucket)
    except NoCredentialsError:
        raise ConfigError(
            f"no S3 credentials for the MLflow artifact bucket {store.bucket!r}: set"
            " AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
        ) from None
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in {"404", "NoSuchBucket", "NotFound"}:
            raise ConfigError(
                f"the MLflow artifact bucket {store.bucket!r} does not exist at {where}: create it"
                f" (`aws s3 mb s3://{store.bucket}`; the compose stack's bucket init does) or set"
                " stack.production.artifacts_uri"
            ) from None
        if code in {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
            raise ConfigError(
                f"S3 at {where} refused the credentials for bucket {store.bucket!r} ({code}): check"
                " AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            ) from None
        raise ServiceUnavailableError(f"S3 at {where} answered {code} for bucket {store.bucket!r}") from None
    except BotoCoreError as exc:
        raise ServiceUnavailableError(
            f"S3 endpoint {where} is unreachable ({exc}): start it (e.g. `docker compose up -d minio`)"
            " or set stack.production.s3.endpoint_url"
        ) from None


def check_auth(settings: ProductionStackConfig) -> None:
    """MLflow's auth app can start: its extra is installed and an admin password is set."""
    if importlib.util.find_spec("flask_wtf") is None:
        raise ConfigError(
            "MLflow's basic-auth app needs Flask-WTF, which is not installed: install"
            " `mlflow[auth]`, or set stack.production.mlflow_auth: false"
        )
    check_admin_password(settings)


def check_admin_password(settings: ProductionStackConfig) -> None:
    password = os.environ.get(ADMIN_PASSWORD_ENV, "")
    if not password:
        raise ConfigError(
            f"MLflow auth is on but {ADMIN_PASSWORD_ENV} is not set: export a strong password for"
            f" the admin user {settings.mlflow_admin_username!r} (never commit it)"
        )
    if password in KNOWN_DEFAULT_PASSWORDS:
        raise ConfigError(f"{ADMIN_PASSWORD_ENV} is a well-known default password: choose another")


def write_auth_config(config: ProjectConfig) -> Path:
    """MLflow's auth config: its users live in the MLflow database (own tables and migration
    history); no password is written, the server reads it from the environment."""
    settings = config.stack.production
    assert settings is not None
    path = auth_config_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "[mlflow]\n"
        f"default_permission = {settings.mlflow_default_permission}\n"
        f"database_uri = {mlflow_backend_store_uri(settings)}\n"
        f"admin_username = {settings.mlflow_admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return path


def prepare(config: ProjectConfig, prefect: bool, mlflow: bool) -> None:
    """Everything the servers about to start (`prefect`, `mlflow`) need, checked and set up."""
    settings = config.stack.production
    assert settings is not None
    # Checks that change nothing first: a failure leaves no database behind.
    if mlflow and settings.mlflow_auth:
        check_auth(settings)
    if mlflow:
        check_artifact_bucket(settings)
    databases = ([settings.prefect_database] if prefect else []) + (
        [settings.mlflow_database] if mlflow else []
    )
    if databases:
        ensure_databases(settings, databases)
    if mlflow and settings.mlflow_auth:
        write_auth_config(config)


def check_tracking_credentials(tracking_uri: str, env: dict[str, str] | None = None) -> None:
    """The tracking server accepts this process's MLflow credentials (or needs none)."""
    import httpx

    env = {**os.environ, **(env or {})}
    username, password = env.get(CLIENT_USERNAME_ENV), env.get(CLIENT_PASSWORD_ENV)
    auth = (username, password) if username and password else None
    url = f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/experiments/search"
    try:
        answer = httpx.get(url, params={"max_results": 1}, auth=auth, timeout=10, trust_env=False)
    except httpx.HTTPError as exc:
        raise ServiceUnavailableError(
            f"MLflow tracking server at {tracking_uri} does not answer ({exc})"
        ) from None
    if answer.status_code == 401:
        who = f"user {username!r}" if auth else "a request without credentials"
        raise ConfigError(
            f"MLflow at {tracking_uri} refused {who}: set {CLIENT_USERNAME_ENV} and"
            f" {CLIENT_PASSWORD_ENV} to an MLflow user (the admin's password is the one the"
            " server was first started with)"
        )
    if answer.status_code == 403:
        raise ConfigError(f"MLflow at {tracking_uri} denies user {username!r} access: grant it a permission")
