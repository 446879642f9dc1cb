"""The compose stack and infra/, checked statically (no Docker engine on the development or CI
machines; the same topology runs as processes under `mlops up --profile production`).

Each rule is a checker function returning the problems it finds, so that every rule is shown
to fail on a small bad example as well as to pass on the real files.
"""

from __future__ import annotations

import configparser
import importlib.util
import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from mlops.config import ProjectConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = INFRA / "Dockerfile"
PRODUCTION_CONFIG = INFRA / "mlops.production.yaml"

ONE_SHOT = "service_completed_successfully"
CONDITIONS = {"service_healthy", ONE_SHOT}
LOOPBACK = {"127.0.0.1", "[::1]", "::1"}
# Environment names whose values are credentials: only a ${VAR} from .env may fill them.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|AUTH_STRING|(^|_)KEY($|_)")
VAR_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(?::?[-?+])[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)")
# A credential's value: ${VAR} or ${VAR:?message}, never a default that would put a value inline.
SECRET_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^}]*)?\}")
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")


# --- checkers ------------------------------------------------------------------------------


def variables_used(text: str) -> set[str]:
    """Names compose interpolates: ${VAR}, ${VAR:-default}, ${VAR:?message}, $VAR; not $$ (a literal $)."""
    unescaped = text.replace("$$", "")
    return {braced or bare for braced, bare in VAR_REFERENCE.findall(unescaped)}


def is_var_reference(value: Any) -> bool:
    """The whole value is one ${VAR} reference (a required one at most), nothing inline."""
    return isinstance(value, str) and SECRET_REFERENCE.fullmatch(value) is not None


def strings_in(node: Any) -> list[str]:
    """Every string value of a parsed compose file (what compose interpolates; not comments)."""
    if isinstance(node, dict):
        return [text for value in node.values() for text in strings_in(value)]
    if isinstance(node, list):
        return [text for value in node for text in strings_in(value)]
    return [node] if isinstance(node, str) else []


def environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", "KEY"]
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return dict(env)


def one_shot_services(compose: dict[str, Any]) -> set[str]:
    """Jobs that run to completion: others wait for them to finish, and they never restart."""
    services = compose.get("services") or {}
    awaited = {
        name
        for service in services.values()
        if isinstance(service.get("depends_on"), dict)
        for name, spec in service["depends_on"].items()
        if isinstance(spec, dict) and spec.get("condition") == ONE_SHOT
    }
    return {name for name in awaited if str(services.get(name, {}).get("restart", "no")) == "no"}


def healthcheck_problems(compose: dict[str, Any]) -> list[str]:
    jobs = one_shot_services(compose)
    problems = []
    for name, service in (compose.get("services") or {}).items():
        check = service.get("healthcheck")
        if name in jobs:
            continue  # a job's health is its exit code (service_completed_successfully)
        if not check or check.get("disable") or check.get("test") in (None, ["NONE"], "NONE"):
            problems.append(f"{name}: no healthcheck")
    return problems


def depends_on_problems(compose: dict[str, Any]) -> list[str]:
    services = compose.get("services") or {}
    jobs = one_shot_services(compose)
    problems = []
    for name, service in services.items():
        depends = service.get("depends_on")
        if depends is None:
            continue
        if not isinstance(depends, dict):
            problems.append(f"{name}: depends_on without conditions (short syntax)")
            continue
        for target, spec in depends.items():
            condition = (spec or {}).get("condition")
            if target not in services:
                problems.append(f"{name}: depends on unknown service {target!r}")
            elif condition not in CONDITIONS:
                problems.append(f"{name}: depends on {target} with condition {condition!r}")
            elif condition == "service_healthy" and not services[target].get("healthcheck"):
                problems.append(f"{name}: waits for {target} to be healthy, which has no healthcheck")
            elif condition == ONE_SHOT and target not in jobs:
                problems.append(f"{name}: waits for {target} to finish, which restarts")
    return problems


def host_ip(port: Any) -> str | None:
    """The host address a published port binds to; None when it binds every interface."""
    if isinstance(port, dict):  # long syntax
        return port.get("host_ip")
    spec = str(port).split("/")[0]
    match = re.match(r"^(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):(.+):(.+)$", spec)
    return match.group(1) if match else None


def port_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in (compose.get("services") or {}).items():
        if service.get("network_mode") == "host":
            problems.append(f"{name}: network_mode host publishes every port it opens")
        for port in service.get("ports") or []:
            if host_ip(port) not in LOOPBACK:
                problems.append(f"{name}: port {port!r} is not bound to 127.0.0.1")
    return problems


def image_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in (compose.get("services") or {}).items():
        image = service.get("image")
        if not image:
            problems.append(f"{name}: no image name (a build gets no pinned tag)")
            continue
        if "@sha256:" in image:
            continue
        repository, _, tag = image.rpartition(":")
        if not repository or "/" in tag:  # "host:5000/name" has a port, not a tag
            problems.append(f"{name}: image {image!r} has no tag")
        elif tag == "latest" or "$" in tag:
            problems.append(f"{name}: image {image!r} is not pinned")
    return problems


def inline_secret_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in (compose.get("services") or {}).items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key) and not is_var_reference(value):
                problems.append(f"{name}: {key} is set inline, not from .env")
    # A password inside a URL anywhere (command lines, URLs in the environment).
    for url_password in re.findall(r"[a-z0-9+]+://[^/\s:@'\"]+:([^@\s'\"]+)@", yaml.safe_dump(compose)):
        if not is_var_reference(url_password):
            problems.append(f"a URL holds an inline password {url_password[:2]}...")
    return problems


def volume_problems(compose: dict[str, Any]) -> list[str]:
    declared = set(compose.get("volumes") or {})
    problems = []
    for name, service in (compose.get("services") or {}).items():
        for volume in service.get("volumes") or []:
            if isinstance(volume, dict):
                source, read_only = volume.get("source", ""), volume.get("read_only", False)
            else:
                parts = str(volume).split(":")
                source, read_only = parts[0], len(parts) > 2 and "ro" in parts[2].split(",")
            if source.startswith((".", "/", "~")):
                if not read_only:  # state belongs in named volumes; files from the repo are config
                    problems.append(f"{name}: bind mount {source} is writable")
            elif source not in declared:
                problems.append(f"{name}: volume {source!r} is not declared under volumes:")
    return problems


def env_example_problems(compose: dict[str, Any], env_example: str) -> list[str]:
    listed: dict[str, str] = {}
    for line in env_example.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            listed[key.strip()] = value.strip()
    used = variables_used("\n".join(strings_in(compose)))
    problems = [f"${{{var}}} is not in .env.example" for var in sorted(used - set(listed))]
    problems += [f"{var} in .env.example is not used" for var in sorted(set(listed) - used)]
    problems += [
        f".env.example holds a value for {key}"
        for key, value in listed.items()
        if value and SECRET_NAME.search(key) and not key.endswith("_ID")  # an access key ID is a name
    ]
    return problems


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_problems(text: str) -> list[str]:
    instructions = dockerfile_instructions(text)
    args = {}  # ARG defaults before the first FROM may name the base images
    for keyword, rest in instructions:
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value
    stages = [rest.split() for keyword, rest in instructions if keyword == "FROM"]
    names = {stage[-1].lower() for stage in stages if len(stage) >= 3 and stage[-2].upper() == "AS"}
    problems = []
    if len(stages) < 2:
        problems.append("one stage: build tools and caches end up in the image")
    for stage in stages:
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), stage[0])
        unpinned = ":" not in image or image.rpartition(":")[2] in ("", "latest")
        problem = f"base image {image!r} is not pinned by tag"
        if image.lower() not in names and unpinned and problem not in problems:  # FROM <stage> is fine
            problems.append(problem)
    last_from = max((i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"), default=-1)
    users = [rest for keyword, rest in instructions[last_from + 1 :] if keyword == "USER"]
    if not users:
        problems.append("the final stage has no USER: it runs as root")
    elif users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"the final stage runs as USER {users[-1]}")
    return problems


def build_context_problems(dockerfile: str, dockerignore: str) -> list[str]:
    """Every file the Dockerfile copies from the context is let through by its .dockerignore
    (written as: exclude everything, then `!path` for what the image needs)."""
    allowed = [line[1:].strip().rstrip("/") for line in dockerignore.splitlines() if line.startswith("!")]
    problems = []
    for keyword, rest in dockerfile_instructions(dockerfile):
        arguments = rest.split()
        if keyword != "COPY" or any(arg.startswith("--from") for arg in arguments):
            continue
        for source in [arg for arg in arguments[:-1] if not arg.startswith("--")]:
            source = source.rstrip("/")
            if not any(source == path or source.startswith(f"{path}/") for path in allowed):
                problems.append(f"COPY {source}: excluded from the build context")
    return problems


def template_problems(template: dict[str, Any]) -> list[str]:
    """Every {{ placeholder }} of a Prefect base job template is a declared variable."""
    declared = set(template.get("variables", {}).get("properties", {}))
    used = set(PLACEHOLDER.findall(json.dumps(template.get("job_configuration", {}))))
    return [
        f"{{{{ {name} }}}} is not a declared variable"
        for name in sorted(used - declared)
        if not name.startswith("prefect.")  # {{ prefect.variables.x }}, {{ prefect.blocks.x }}
    ]


# --- the real files ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def production() -> ProjectConfig:
    return load_config(PRODUCTION_CONFIG)


def command_of(compose: dict[str, Any], service: str) -> list[str]:
    command = compose["services"][service]["command"]
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def option(command: list[str], name: str) -> str:
    """`--name=value` or `--name value` from a command line."""
    for i, part in enumerate(command):
        if part.startswith(f"{name}="):
            return part.split("=", 1)[1]
        if part == name:
            return command[i + 1]
    raise AssertionError(f"{name} not in {command}")


def test_the_topology_is_all_there(compose: dict[str, Any]) -> None:
    expected = {"postgres", "minio", "minio-init", "mlflow", "prefect-server", "prefect-worker", "api"}
    assert expected <= set(compose["services"])


@pytest.mark.parametrize(
    "checker",
    [
        healthcheck_problems,
        depends_on_problems,
        port_problems,
        image_problems,
        inline_secret_problems,
        volume_problems,
    ],
)
def test_compose_file_passes(compose: dict[str, Any], checker: Any) -> None:
    assert checker(compose) == []


def test_every_variable_is_in_env_example(compose: dict[str, Any]) -> None:
    assert env_example_problems(compose, ENV_EXAMPLE.read_text()) == []


def test_env_file_is_ignored_by_git() -> None:
    ignored = {line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()}
    assert ".env" in ignored


def test_each_server_is_probed_and_published_on_the_port_it_listens_on(compose: dict[str, Any]) -> None:
    checked = []
    for name, service in compose["services"].items():
        command = command_of(compose, name) if "command" in service else []
        if "--port" not in " ".join(command):
            continue
        port = option(command, "--port")
        assert f"127.0.0.1:{port}/" in json.dumps(service["healthcheck"]["test"]), name
        for published in service.get("ports", []):
            assert str(published).endswith(f":{port}"), (name, published)
        checked.append(name)
    assert sorted(checked) == ["api", "mlflow", "prefect-server"]
    worker = compose["services"]["prefect-worker"]
    assert f":{worker['environment']['PREFECT_WORKER_WEBSERVER_PORT']}/" in json.dumps(worker["healthcheck"])


def test_the_image_installs_only_locked_versions() -> None:
    """The Dockerfile installs pyproject's run-time dependencies with the lock as constraints:
    each must be pinned there, or the image would get whatever is newest."""
    import tomllib

    def name(requirement: str) -> str:
        return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    pinned = {
        name(line)
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {name(dependency) for dependency in dependencies} - pinned == set()
    assert "--constraint requirements.lock" in DOCKERFILE.read_text()


def test_stateful_services_keep_data_on_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    for name in ("postgres", "minio", "prefect-worker"):
        sources = {str(volume).split(":")[0] for volume in compose["services"][name]["volumes"]}
        assert sources & declared, f"{name} keeps its state in the container"


def test_dockerfile_is_multi_stage_and_non_root() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    dockerignore = (INFRA / "Dockerfile.dockerignore").read_text()
    rules = [line for line in dockerignore.splitlines() if line.strip() and not line.startswith("#")]
    assert rules[0] == "*", "the context starts empty (no .venv, state or .env)"
    assert build_context_problems(DOCKERFILE.read_text(), dockerignore) == []
    bad = "FROM a:1 AS b\nCOPY mlops ./mlops\nCOPY flows/ tasks ./\nFROM a:1\nCOPY --from=b /x /x\n"
    assert build_context_problems(bad, "*\n!mlops\n!flows\n") == [
        "COPY tasks: excluded from the build context"
    ]


def test_production_config_loads_and_computes_what_the_repo_config_does(production: ProjectConfig) -> None:
    base = load_config(ROOT / "mlops.yaml")
    # Only where it runs differs: the same data, features, candidates, gates and monitoring.
    assert production.fingerprint == base.fingerprint
    assert production.promotion == base.promotion
    assert production.monitoring == base.monitoring
    assert production.serving.model_dump(exclude={"prediction_log_uri"}) == base.serving.model_dump(
        exclude={"prediction_log_uri"}
    )
    assert production.path(production.expectations_dir) == (ROOT / "expectations").resolve()


def test_production_config_points_at_the_compose_services(
    compose: dict[str, Any], production: ProjectConfig
) -> None:
    services = compose["services"]
    for url, service in [
        (production.stack.api_url, "prefect-server"),
        (production.stack.tracking_uri, "mlflow"),
        (production.data.s3.endpoint_url, "minio"),
    ]:
        parts = urlsplit(url)
        assert parts.hostname == service, url
        # The service listens where its own healthcheck (or MinIO's fixed API port) says.
        listens = json.dumps(services[service]["healthcheck"]["test"]) if service != "minio" else ":9000"
        assert f":{parts.port}" in listens, (url, listens)
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == production.data.s3.endpoint_url
    # Nothing in a container starts servers of its own; they are the compose services.
    assert production.stack.prefect_api_url and production.stack.mlflow_tracking_uri


def test_buckets_in_use_are_created_and_granted(compose: dict[str, Any], production: ProjectConfig) -> None:
    init = (INFRA / "minio" / "init.sh").read_text()
    created = set(re.search(r"mc mb --ignore-existing (.+)", init).group(1).replace("stack/", "").split())
    policy = json.loads((INFRA / "minio" / "mlops-buckets-policy.json").read_text())
    granted = {
        resource.removeprefix("arn:aws:s3:::").split("/")[0]
        for statement in policy["Statement"]
        for resource in statement["Resource"]
    }
    artifacts = option(command_of(compose, "mlflow"), "--artifacts-destination")
    uris = [
        artifacts,
        production.data.landing_uri,
        production.data.snapshot_uri,
        production.data.quarantine_uri,
        production.serving.prediction_log_uri,
    ]
    used = {urlsplit(uri).netloc for uri in uris}
    assert used == {"landing", "mlflow-artifacts"}
    assert used <= created
    assert used <= granted


def test_databases_in_use_are_created(compose: dict[str, Any]) -> None:
    init = (INFRA / "postgres" / "init-databases.sh").read_text()
    created = dict(re.findall(r"CREATE DATABASE (\w+) OWNER (\w+);", init))
    assert created == {"prefect": "prefect", "mlflow": "mlflow"}
    backend = urlsplit(option(command_of(compose, "mlflow"), "--backend-store-uri"))
    auth = configparser.ConfigParser()
    auth.read(INFRA / "mlflow" / "basic_auth.ini")
    auth_db = urlsplit(auth["mlflow"]["database_uri"])
    prefect_env = compose["services"]["prefect-server"]["environment"]
    for uri in (backend, auth_db):
        # Passwords come from PGPASSWORD; the driver is named (SQLAlchemy 2.1 defaults to psycopg 3).
        assert uri.scheme == "postgresql+psycopg2" and uri.password is None, uri.geturl()
        assert (uri.path.strip("/"), uri.username) == ("mlflow", "mlflow")
    assert created[prefect_env["PREFECT_SERVER_DATABASE_NAME"]] == prefect_env["PREFECT_SERVER_DATABASE_USER"]
    assert is_var_reference(compose["services"]["mlflow"]["environment"]["PGPASSWORD"])


def test_mlflow_auth_is_on_with_the_admin_password_from_env(compose: dict[str, Any]) -> None:
    mlflow = compose["services"]["mlflow"]
    assert option(command_of(compose, "mlflow"), "--app-name") == "basic-auth"
    assert "--serve-artifacts" in command_of(compose, "mlflow")
    auth = configparser.ConfigParser()
    auth.read(INFRA / "mlflow" / "basic_auth.ini")
    assert "admin_password" not in auth["mlflow"]  # from MLFLOW_AUTH_ADMIN_PASSWORD only
    assert is_var_reference(mlflow["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"])
    assert mlflow["environment"]["MLFLOW_AUTH_CONFIG_PATH"] == "/app/infra/mlflow/basic_auth.ini"
    assert "COPY infra/mlflow ./infra/mlflow" in DOCKERFILE.read_text()
    for path in [COMPOSE_FILE, ENV_EXAMPLE, *INFRA.rglob("*")]:
        if path.is_file():
            assert "password1234" not in path.read_text(errors="ignore"), path  # MLflow's old default


def test_worker_runs_the_projects_deployments_on_its_pool(compose: dict[str, Any]) -> None:
    spec = importlib.util.spec_from_file_location("infra_deploy", INFRA / "prefect" / "deploy.py")
    deploy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(deploy)
    # The deployment list is flows/deployments.py's, not a copy.
    assert deploy.build_deployments.__module__ == "flows.deployments"
    worker = command_of(compose, "prefect-worker")
    register = command_of(compose, "prefect-deploy")
    assert option(worker, "--pool") == option(register, "--pool") == deploy.DEFAULT_POOL
    assert option(worker, "--type") == "process"
    config_in_image = "/app/" + PRODUCTION_CONFIG.relative_to(ROOT).as_posix()
    assert option(register, "--config") == config_in_image
    assert compose["services"]["prefect-worker"]["environment"]["MLOPS_CONFIG"] == config_in_image
    assert f"MLOPS_CONFIG={config_in_image}" in DOCKERFILE.read_text()


def test_kubernetes_worker_values_and_job_template() -> None:
    values = yaml.safe_load((INFRA / "k8s" / "values.yaml").read_text())
    worker = values["worker"]
    assert worker["config"]["type"] == "kubernetes"
    assert worker["selfHostedServerApiConfig"]["basicAuth"]["enabled"] is True
    tag = worker["image"]["prefectTag"]
    assert re.match(r"^\d+\.\d+\.\d+-", tag), f"worker image {tag!r} is not pinned to a release"
    template = json.loads((INFRA / "k8s" / "base-job-template.json").read_text())
    assert template_problems(template) == []
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    user = re.search(r"^USER (\d+)", DOCKERFILE.read_text(), re.MULTILINE).group(1)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == user  # the image's own user


# --- each checker fails on a bad example ---------------------------------------------------

BAD_COMPOSE = yaml.safe_load(
    """
services:
  db:
    image: postgres
    ports: ["5432:5432"]
    environment:
      POSTGRES_PASSWORD: inline-secret
      DATABASE_URL: postgresql://app:inline-secret@db/app
    volumes: ["./data:/var/lib/postgresql/data", "cache:/cache"]
  web:
    image: nginx:latest
    ports: ["0.0.0.0:80:80", {target: 443, published: 443}]
    depends_on: [db]
    healthcheck: {test: ["NONE"]}
  api:
    image: registry.local:5000/api
    network_mode: host
    environment: ["API_TOKEN=abc", "OK_TOKEN=${OK_TOKEN}"]
    depends_on:
      db: {condition: service_started}
      ghost: {condition: service_healthy}
      init: {condition: service_completed_successfully}
    healthcheck: {test: ["CMD", "true"]}
  init:
    image: busybox:1.36
    restart: always
"""
)


def test_checkers_find_each_problem_in_a_bad_example() -> None:
    assert healthcheck_problems(BAD_COMPOSE) == [
        "db: no healthcheck",
        "web: no healthcheck",
        "init: no healthcheck",
    ]
    assert depends_on_problems(BAD_COMPOSE) == [
        "web: depends_on without conditions (short syntax)",
        "api: depends on db with condition 'service_started'",
        "api: depends on unknown service 'ghost'",
        "api: waits for init to finish, which restarts",
    ]
    assert port_problems(BAD_COMPOSE) == [
        "db: port '5432:5432' is not bound to 127.0.0.1",
        "web: port '0.0.0.0:80:80' is not bound to 127.0.0.1",
        "web: port {'target': 443, 'published': 443} is not bound to 127.0.0.1",
        "api: network_mode host publishes every port it opens",
    ]
    assert image_problems(BAD_COMPOSE) == [
        "db: image 'postgres' has no tag",
        "web: image 'nginx:latest' is not pinned",
        "api: image 'registry.local:5000/api' has no tag",
    ]
    assert inline_secret_problems(BAD_COMPOSE) == [
        "db: POSTGRES_PASSWORD is set inline, not from .env",
        "api: API_TOKEN is set inline, not from .env",
        "a URL holds an inline password in...",
    ]
    assert volume_problems(BAD_COMPOSE) == [
        "db: bind mount ./data is writable",
        "db: volume 'cache' is not declared under volumes:",
    ]


def test_a_healthy_wait_needs_a_healthcheck_and_a_job_is_exempt_from_one() -> None:
    compose = yaml.safe_load(
        """
services:
  job: {image: "busybox:1.36", restart: "no"}
  server: {image: "busybox:1.36"}
  app:
    image: busybox:1.36
    healthcheck: {test: ["CMD", "true"]}
    depends_on:
      job: {condition: service_completed_successfully}
      server: {condition: service_healthy}
"""
    )
    assert healthcheck_problems(compose) == ["server: no healthcheck"]
    assert depends_on_problems(compose) == ["app: waits for server to be healthy, which has no healthcheck"]


def test_ports_on_loopback_pass() -> None:
    compose = {
        "services": {
            "a": {
                "ports": [
                    "127.0.0.1:${PORT:-80}:80",
                    "[::1]:81:81/tcp",
                    {"target": 1, "host_ip": "127.0.0.1"},
                ]
            }
        }
    }
    assert port_problems(compose) == []


def test_variables_used_reads_every_interpolation_form_and_skips_escapes() -> None:
    text = "a: ${A}\nb: ${B:-x}\nc: ${C:?set C}\nd: $D\ne: $${NOT_ONE} $$NOR_THIS\nf: ${F-y}"
    assert variables_used(text) == {"A", "B", "C", "D", "F"}
    assert is_var_reference("${A:?set A in .env}") and is_var_reference("${A}")
    assert is_var_reference("${A?set A}")
    assert not is_var_reference("admin:${A}") and not is_var_reference("inline-secret")
    assert not is_var_reference("${A:-inline-default}")  # a default is a value in the file


def test_env_example_problems_are_found() -> None:
    compose = {"x": "${USED}", "y": ["${MISSING}", {"z": "${DB_PASSWORD}"}]}
    env_example = "# comment\nUSED=1\nDB_PASSWORD=inline-secret\nSTALE=2\nS3_ACCESS_KEY_ID=app\n"
    assert env_example_problems(compose, env_example) == [
        "${MISSING} is not in .env.example",
        "S3_ACCESS_KEY_ID in .env.example is not used",
        "STALE in .env.example is not used",
        ".env.example holds a value for DB_PASSWORD",
    ]


@pytest.mark.parametrize(
    ("dockerfile", "problems"),
    [
        ("FROM python:3.11-slim\nRUN pip install .\n", ["one stage", "no USER"]),
        ("FROM python AS b\nFROM b\nUSER app\n", ["'python' is not pinned"]),
        (
            "ARG BASE=python:latest\nFROM ${BASE} AS b\nFROM ${BASE}\nUSER app\n",
            ["'python:latest' is not pinned"],
        ),
        ("FROM a:1 AS b\nUSER app\nFROM a:1\nRUN x\n", ["no USER"]),
        ("FROM a:1 AS b\nFROM a:1\nUSER app\nUSER 0:0\n", ["runs as USER 0:0"]),
        ("FROM a:1 AS b\nFROM a:1\nUSER root\n", ["runs as USER root"]),
        ("ARG BASE=a:1\nFROM ${BASE} AS b\nFROM ${BASE}\nRUN useradd \\\n  app\nUSER 10001:10001\n", []),
    ],
)
def test_dockerfile_problems_are_found(dockerfile: str, problems: list[str]) -> None:
    found = dockerfile_problems(dockerfile)
    assert len(found) == len(problems), found
    for expected in problems:
        assert any(expected in problem for problem in found), (expected, found)


def test_template_problems_are_found() -> None:
    template = {
        "job_configuration": {"image": "{{ image }}", "x": "{{nope}}", "v": "{{ prefect.variables.a }}"},
        "variables": {"properties": {"image": {"type": "string"}}},
    }
    assert template_problems(template) == ["{{ nope }} is not a declared variable"]
