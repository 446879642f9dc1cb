"""What `mlops up --profile production` says when its surroundings are wrong: the config, an
unreachable PostgreSQL, a refused PostgreSQL user, a missing bucket, MLflow credentials. Each
message names the thing and what to do; nothing here starts a Prefect or MLflow server.
"""

from __future__ import annotations

import secrets

import pytest
import yaml
from typer.testing import CliRunner

from app.cli import app
from app.production import (
    ADMIN_PASSWORD_ENV,
    check_admin_password,
    check_artifact_bucket,
    ensure_databases,
    with_profile,
)
from mlops.config import ProductionStackConfig, ProjectConfig, load_config, save_config
from mlops.errors import ConfigError, ServiceUnavailableError
from tests.conftest import REPO_ROOT
from tests.e2e.conftest import Postgres, drop_databases
from tests.ports import free_port, with_free_ports

pytestmark = pytest.mark.e2e


def settings(**changes: object) -> ProductionStackConfig:
    base = {"database_url": "postgresql://postgres@127.0.0.1:5432", "artifacts_uri": "s3://mlflow-artifacts"}
    return ProductionStackConfig.model_validate({**base, **changes})


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"database_url": "postgresql://postgres:hunter2@db:5432"}, "PGPASSWORD"),  # pragma: allowlist secret
        ({"database_url": "mysql://root@db:3306"}, "postgresql://"),
        ({"database_url": "postgresql://postgres@db:5432/mlflow"}, "prefect_database and mlflow_database"),
        ({"mlflow_database": "MLflow; DROP"}, "PostgreSQL identifier"),
        ({"artifacts_uri": "/var/mlflow"}, "s3://bucket"),
    ],
)
def test_bad_production_settings_name_the_fix(changes: dict[str, object], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        settings(**changes)


def test_the_profile_flag_overrides_the_config_and_needs_its_section(tmp_path) -> None:
    config = load_config(REPO_ROOT / "mlops.yaml")
    assert with_profile(config, "production").stack.profile == "production"
    bare = config.model_copy(update={"stack": config.stack.model_copy(update={"production": None})})
    with pytest.raises(ConfigError, match=r"needs a stack\.production section"):
        with_profile(bare, "production")
    raw = yaml.safe_load((REPO_ROOT / "mlops.yaml").read_text())
    raw["stack"]["profile"] = "production"
    del raw["stack"]["production"]  # loading must name what is missing
    path = tmp_path / "mlops.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["--config", str(path), "status"])
    assert result.exit_code == 1 and "needs a stack.production section" in result.output


def test_unreachable_postgresql_says_where_and_what_to_do() -> None:
    nowhere = settings(database_url=f"postgresql://postgres@127.0.0.1:{free_port()}")
    with pytest.raises(
        ServiceUnavailableError, match=r"PostgreSQL at 127\.0\.0\.1:\d+ is unreachable.*database_url"
    ):
        ensure_databases(nowhere, ["prefect"])


def test_a_refused_postgresql_user_is_named(postgres: Postgres) -> None:
    stranger = settings(database_url=f"postgresql://no_such_user_e2e@{postgres.host}:{postgres.port}")
    with pytest.raises(ConfigError, match=r"refused user 'no_such_user_e2e'.*PGPASSWORD"):
        ensure_databases(stranger, ["prefect"])


def test_databases_are_created_once(postgres: Postgres) -> None:
    name = f"mlops_e2e_create_{secrets.token_hex(4)}"
    server = settings(database_url=postgres.url)
    try:
        assert ensure_databases(server, [name, name]) == [name]
        assert ensure_databases(server, [name]) == []  # exists now: nothing to do
    finally:
        drop_databases(postgres, [name])


def test_a_missing_bucket_is_named(moto_s3: str) -> None:
    absent = settings(
        artifacts_uri=f"s3://no-such-bucket-{secrets.token_hex(4)}", s3={"endpoint_url": moto_s3}
    )
    with pytest.raises(
        ConfigError, match=r"bucket 'no-such-bucket-\w+' does not exist at http://127\.0\.0\.1:\d+"
    ):
        check_artifact_bucket(absent)


def test_an_unreachable_s3_endpoint_is_named(moto_s3: str) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    nowhere = settings(s3={"endpoint_url": endpoint, "max_attempts": 1, "connect_timeout": 1})
    with pytest.raises(ServiceUnavailableError, match=f"S3 endpoint {endpoint} is unreachable"):
        check_artifact_bucket(nowhere)


@pytest.mark.parametrize(("password", "says"), [("", "is not set"), ("password1234", "well-known default")])
def test_the_mlflow_admin_password_must_be_set_and_not_a_default(
    monkeypatch: pytest.MonkeyPatch, password: str, says: str
) -> None:
    monkeypatch.setenv(ADMIN_PASSWORD_ENV, password)
    with pytest.raises(ConfigError, match=says):
        check_admin_password(settings())


def test_the_cli_reports_a_missing_bucket_in_one_line(moto_s3: str, postgres: Postgres, tmp_path) -> None:
    base = load_config(REPO_ROOT / "mlops.yaml")
    bucket = f"absent-{secrets.token_hex(4)}"
    stack = {
        **base.stack.model_dump(),
        "state_dir": str(tmp_path / "state"),
        "production": settings(
            database_url=postgres.url,
            prefect_database=f"never_{secrets.token_hex(4)}",
            mlflow_database=f"never_{secrets.token_hex(4)}",
            artifacts_uri=f"s3://{bucket}",
            s3={"endpoint_url": moto_s3},
            mlflow_auth=False,
        ).model_dump(),
    }
    config = with_free_ports(
        ProjectConfig.model_validate({**base.model_dump(exclude={"root"}), "stack": stack, "root": REPO_ROOT})
    )
    path = save_config(config, tmp_path / "mlops.yaml")
    result = CliRunner().invoke(app, ["--config", str(path), "up", "--profile", "production"])
    assert result.exit_code == 1, result.output
    assert f"the MLflow artifact bucket '{bucket}' does not exist" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "state" / "run" / "prefect.pid").exists()  # nothing was started
