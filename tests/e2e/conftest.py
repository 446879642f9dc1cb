"""The production topology as processes, for the end-to-end tests: PostgreSQL, a moto server
standing in for MinIO, and the stack of `mlops up --profile production` on free ports.

PostgreSQL is the machine's at 127.0.0.1:5432 when it answers (development and CI machines run
one, trust auth). On a machine with none, or with MLOPS_E2E_OWN_POSTGRES=1, a server of its own is
initialised in a temp dir (the system's `initdb`/`pg_ctl`, else the binaries bundled with the
`pgserver` package) and listens on a free loopback port: the tests never skip for want of one.
Each session works in databases of its own (random names), dropped at the end.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.production import ADMIN_PASSWORD_ENV, CLIENT_PASSWORD_ENV, CLIENT_USERNAME_ENV
from app.stack import StackInfo
from mlops.config import ProjectConfig, load_config, save_config
from mlops.storage import Store, open_store
from tests.conftest import REPO_ROOT, SAMPLE_FRACTION, running_stack
from tests.ports import free_ports, with_free_ports

MACHINE_POSTGRES = ("127.0.0.1", 5432)
ARTIFACT_BUCKET = "mlflow-artifacts"  # the names docker-compose.yml uses
LANDING_BUCKET = "landing"
ADMIN = "admin"
START_TIMEOUT = 300.0
# Six months to train on (see tests/conftest.py), the seventh for the promotion gates.
E2E_PERIODS = [f"2013-{month:02d}" for month in range(1, 8)]


@dataclass(frozen=True)
class Postgres:
    url: str  # postgresql://user@host:port, no database
    host: str
    port: int
    user: str


def _answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
        return True
    return False


def _postgres_bin_dir() -> Path:
    """Where initdb and pg_ctl are: the system's, else pgserver's bundled build."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    from pgserver._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH


@contextlib.contextmanager
def _own_postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL server (trust auth, loopback only), stopped and deleted after."""
    bin_dir = _postgres_bin_dir()
    # PostgreSQL refuses to run as root: run it as an unprivileged user then, in a folder
    # outside pytest's temp root (0700, owned by root) that the user can reach.
    run_as = None
    if os.geteuid() == 0:
        names = {entry.pw_name for entry in pwd.getpwall()}
        run_as = next(name for name in ("postgres", "nobody") if name in names)
    root = Path(tempfile.mkdtemp(prefix="mlops-e2e-pg-"))
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    if run_as is not None:
        account = pwd.getpwnam(run_as)
        for path in (root, sockets):
            os.chown(path, account.pw_uid, account.pw_gid)
    (port,) = free_ports(1)

    def pg(*args: str) -> None:
        subprocess.run(
            [str(bin_dir / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            user=run_as,
            cwd=root,
            timeout=120,
        )

    pg("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    pg(
        "pg_ctl", "-D", str(data), "-l", str(root / "postgres.log"), "-w", "-t", "60",
        "-o", f"-h 127.0.0.1 -p {port} -k {sockets}", "start",
    )  # fmt: skip
    try:
        yield Postgres(f"postgresql://postgres@127.0.0.1:{port}", "127.0.0.1", port, "postgres")
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server: the machine's, or one started for this session."""
    host, port = MACHINE_POSTGRES
    if os.environ.get("MLOPS_E2E_OWN_POSTGRES") != "1" and _answers(host, port):
        yield Postgres(f"postgresql://postgres@{host}:{port}", host, port, "postgres")
        return
    with _own_postgres() as server:
        yield server


def drop_databases(server: Postgres, names: list[str]) -> None:
    import psycopg2
    from psycopg2 import sql

    connection = psycopg2.connect(dbname="postgres", user=server.user, host=server.host, port=server.port)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for name in names:
                # FORCE: a server's pooled connection that outlived it must not keep the database.
                cursor.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
    finally:
        connection.close()


@pytest.fixture(scope="module")
def credentials() -> Iterator[dict[str, str]]:
    """MLflow's admin password (a fresh random one, never a default), and the same user and
    password as this process's MLflow client credentials, for this module only."""
    password = secrets.token_urlsafe(18)
    with pytest.MonkeyPatch.context() as env:
        env.setenv(ADMIN_PASSWORD_ENV, password)
        env.setenv(CLIENT_USERNAME_ENV, ADMIN)
        env.setenv(CLIENT_PASSWORD_ENV, password)
        yield {"username": ADMIN, "password": password}


@pytest.fixture(scope="module")
def production_config(
    postgres: Postgres, moto_s3: str, tmp_path_factory: pytest.TempPathFactory
) -> ProjectConfig:
    """The repo's mlops.yaml in the production profile: PostgreSQL databases of this session,
    S3 (moto) for the landing zone and MLflow's artifacts, MLflow auth, free ports.
    Fewer candidates (the majority baseline and one search round of gradient boosting) keep
    training short; the gates are the repo's, with looser operational limits (below)."""
    base = load_config(REPO_ROOT / "mlops.yaml")
    tmp = tmp_path_factory.mktemp("production")
    suffix = secrets.token_hex(4)
    s3 = {"endpoint_url": moto_s3}
    stack = {
        **base.stack.model_dump(),
        "profile": "production",
        "state_dir": str(tmp / "state"),
        "host": "127.0.0.1",
        "prefect_api_url": None,
        "mlflow_tracking_uri": None,
        "evidently_ui": False,
        "serve_deployments": True,  # the deployments run the flows the test triggers
        "serve_predictions": False,  # the test starts `mlops serve` itself
        "production": {
            "database_url": postgres.url,
            "prefect_database": f"prefect_e2e_{suffix}",
            "mlflow_database": f"mlflow_e2e_{suffix}",
            "artifacts_uri": f"s3://{ARTIFACT_BUCKET}",
            "s3": s3,
            "mlflow_auth": True,
            "mlflow_admin_username": ADMIN,
        },
    }
    data = {
        **base.data.model_dump(),
        "landing_uri": f"s3://{LANDING_BUCKET}/incoming",
        "snapshot_uri": f"s3://{LANDING_BUCKET}/snapshots",
        "quarantine_uri": f"s3://{LANDING_BUCKET}/quarantine",
        "s3": s3,
    }
    keep = {"majority", "hist_gb"}
    candidates = [{**c.model_dump(), "n_iter": 1} for c in base.training.candidates if c.name in keep]
    # Fewer permutation-importance and latency rounds: the same steps, less of each.
    training = {
        **base.training.model_dump(),
        "candidates": candidates,
        "importance_rows": 1000,
        "importance_repeats": 1,
    }
    promotion = base.promotion.model_dump()
    # Latency and throughput limits far above the repo's: under test here is the topology, not
    # the model's speed on a CI machine shared with other jobs (tests/integration/test_promotion
    # covers that gate); at load 15 on two cores a one-row p95 of 50 ms is not met.
    promotion["operational"].update(
        latency_calls=50, batch_rows=2000, max_p95_latency_ms=2000.0, min_rows_per_second=100.0
    )
    serving = {
        **base.serving.model_dump(),
        "poll_seconds": 1.0,
        "prediction_log_uri": str(tmp / "predictions"),
    }
    registry = {"model_name": "flight-delay-e2e", "experiment": "flight-delay-e2e"}
    raw = {
        **base.model_dump(exclude={"root"}),
        "stack": stack,
        "data": data,
        "training": training,
        "promotion": promotion,
        "serving": serving,
        "registry": registry,
        "expectations_dir": str(base.path(base.expectations_dir)),
    }
    return with_free_ports(ProjectConfig.model_validate({**raw, "root": tmp}))


@pytest.fixture(scope="module")
def production_config_file(
    production_config: ProjectConfig, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The config as the deployments and the prediction service read it."""
    return save_config(production_config, tmp_path_factory.mktemp("production-config") / "mlops.yaml")


@pytest.fixture(scope="module")
def s3_buckets(production_config: ProjectConfig, moto_s3: str) -> None:
    """The buckets the compose stack's MinIO init creates."""
    import boto3

    client = boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1")
    for bucket in (ARTIFACT_BUCKET, LANDING_BUCKET):
        client.create_bucket(Bucket=bucket)


@pytest.fixture(scope="module")
def s3_landing(production_config: ProjectConfig, s3_buckets: None) -> Store:
    """The landing zone on S3, seeded with the 8% sample of January-July."""
    from app.seed import seed_landing

    store = open_store(production_config.data.landing_uri, production_config.data.s3)
    seed_landing(production_config, store, E2E_PERIODS, sample_fraction=SAMPLE_FRACTION, seed=0)
    return store


@pytest.fixture(scope="module")
def production_stack(
    postgres: Postgres,
    production_config: ProjectConfig,
    production_config_file: Path,
    credentials: dict[str, str],
    s3_buckets: None,
) -> Iterator[StackInfo]:
    """`mlops up --profile production`, stopped and its databases dropped at the end."""
    settings = production_config.stack.production
    assert settings is not None
    try:
        # Generous: migrating two fresh databases on a shared, busy CI machine takes a while.
        with running_stack(
            production_config, timeout=START_TIMEOUT, config_file=production_config_file
        ) as info:
            yield info
    finally:
        drop_databases(postgres, [settings.prefect_database, settings.mlflow_database])
