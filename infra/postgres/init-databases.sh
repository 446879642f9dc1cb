#!/bin/sh
# Creates the databases of the compose stack, each owned by its own login role, so that Prefect
# and MLflow cannot read each other's data. The postgres image runs this once, on an empty data
# volume (docker-entrypoint-initdb.d), as the superuser POSTGRES_USER. Passwords come from the
# environment (.env); psql quotes them (:'var'), so any character is safe.
set -eu

: "${PREFECT_DB_PASSWORD:?set PREFECT_DB_PASSWORD in .env}"
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD in .env}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v prefect_password="$PREFECT_DB_PASSWORD" -v mlflow_password="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE prefect LOGIN PASSWORD :'prefect_password';
CREATE DATABASE prefect OWNER prefect;
REVOKE ALL ON DATABASE prefect FROM PUBLIC;

-- MLflow's tracking store and its basic-auth tables share this database (separate alembic
-- version tables: alembic_version and alembic_version_auth).
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;

-- Prefect's migrations create pg_trgm; done here as the superuser so its role needs no more.
\connect prefect
CREATE EXTENSION IF NOT EXISTS pg_trgm;
SQL
