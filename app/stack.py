"""The local stack: a Prefect server and an MLflow tracking server as background processes,
beside them the Evidently UI over the monitoring workspace, and the process that serves the
flows' deployments (their schedules and the drift trigger run only while it runs).

Each process runs detached in its own session (so `mlops up` can exit and a process-group
signal stops it with every child it spawned), logs to `<state_dir>/logs/<name>.log`
and records its pid in `<state_dir>/run/<name>.pid`. Everything (ports, host, folders)
comes from `config.stack`; a URL override (`prefect_api_url`, `mlflow_tracking_uri`) marks
that server as external: it is checked, never started or stopped. `evidently_ui` and
`serve_deployments` turn the other two off. `stack.profile: production` runs the same
processes on PostgreSQL, S3 and MLflow auth (`app/production.py` checks and prepares those).

Only the standard library is imported at module level so the CLI stays fast. How a process's
Prefect and MLflow clients find these servers is `mlops/clients.py`.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from app.production import (
    check_tracking_credentials,
    client_env,
    mlflow_backend_store_uri,
    mlflow_server_env,
    prefect_database_url,
)
from app.production import prepare as prepare_production
from app.production import settings_of as production_settings
from mlops.clients import prefect_storage_dir
from mlops.config import ProjectConfig, save_config
from mlops.errors import ConfigError, ServiceUnavailableError

PREFECT = "prefect"
MLFLOW = "mlflow"
EVIDENTLY = "evidently"
DEPLOYMENTS = "deployments"
SERVE = "serve"  # the prediction service, `mlops serve`
START_TIMEOUT = 90.0  # seconds until the servers must answer their health check (and again for
# the deployments, which start once Prefect answers: importing every flow takes a while)
STOP_TIMEOUT = 20.0  # seconds between SIGTERM and SIGKILL
HEALTH_TIMEOUT = 2.0  # seconds one health request may take
POLL_INTERVAL = 0.25

# All Prefect background services stay on. Turning off the ones this project does not use
# (foreman, DB vacuum) did not shorten start-up measurably (2.7-3.1 s warm either way),
# and the rest are needed: the scheduler and triggers serve deployments, and task runs
# reach the database through the task-run recorder.

# Child processes started by this interpreter, kept so they are reaped (not left as
# zombies, which would look alive to a signal-0 probe) and never garbage-collected running.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    url: str  # the UI to open in a browser
    health_url: str
    pid: int | None  # None when not running, or when the server is external
    managed: bool  # started and stopped by this stack (False: a configured external URL)
    running: bool
    healthy: bool
    log: Path | None


@dataclass(frozen=True)
class StackInfo:
    prefect_ui_url: str
    prefect_api_url: str
    mlflow_url: str
    prefect_pid: int | None
    mlflow_pid: int | None
    started: list[str] = field(default_factory=list)  # empty when all were already up
    seconds: float = 0.0  # wall time until every service was healthy
    evidently_url: str | None = None  # None when the Evidently UI is turned off
    evidently_pid: int | None = None
    deployments_pid: int | None = None  # the process serving the deployments
    serving_url: str | None = None  # the prediction service; None when turned off
    serving_pid: int | None = None


@dataclass(frozen=True)
class _Service:
    """How to start, probe and recognise one server."""

    name: str
    url: str
    health_url: str
    port: int
    managed: bool
    command: list[str]
    env: dict[str, str]
    pid_file: Path
    log_file: Path
    enabled: bool = True  # part of the stack per the config (evidently_ui, serve_deployments)
    markers: tuple[str, ...] = (" server ",)  # what its command line holds besides its name
    needs_servers: bool = False  # started once Prefect and MLflow answer
    cwd: Path | None = None


# --- paths and service definitions -------------------------------------------------------


def _dirs(config: ProjectConfig) -> dict[str, Path]:
    state = config.state_dir
    return {
        "logs": state / "logs",
        "run": state / "run",
        "prefect": state / "prefect",
        "prefect_storage": prefect_storage_dir(config),
        "mlflow": state / "mlflow",
        "artifacts": state / "mlflow" / "artifacts",
        "evidently": state / config.monitoring.workspace_dir,
    }


def _written_config(config: ProjectConfig) -> Path:
    """Where the deployments' config is written when the stack was given no config file."""
    return config.state_dir / "deployments.yaml"


def _venv_script(name: str) -> str:
    """The console script next to this interpreter, so a non-activated venv still works."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _base_env() -> dict[str, str]:
    # Inherited PREFECT_* settings (a profile, another API URL) would make the server
    # depend on the caller's shell; the stack is defined by the config alone.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PYTHONUNBUFFERED"] = "1"  # log lines reach the log file as they happen
    return env


def _services(config: ProjectConfig, config_file: Path | None = None) -> list[_Service]:
    """Every service the stack knows, the ones turned off in the config included (not
    enabled), so that `stop` still finds one started before it was turned off."""
    stack = config.stack
    dirs = _dirs(config)
    prefect_home = dirs["prefect"]
    prefect_env = {
        **_base_env(),
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}",
        "PREFECT_UI_API_URL": stack.api_url,  # the browser UI calls this URL
        "PREFECT_CLI_COLORS": "false",  # plain text in the log file
        "PREFECT_CLI_PROMPT": "false",
        "PREFECT_LOGGING_COLORS": "false",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    }
    mlflow_command = [
        _venv_script("mlflow"),
        "server",
        "--host",
        stack.host,
        "--port",
        str(stack.mlflow_port),
        "--backend-store-uri",
        f"sqlite:///{dirs['mlflow'] / 'mlflow.db'}",
        "--artifacts-destination",
        str(dirs["artifacts"]),  # clients upload through the server (proxied artifacts)
        "--workers",
        "1",  # one uvicorn worker starts fastest; Flask handlers still run in a thread pool
    ]
    if stack.host not in {"127.0.0.1", "localhost", "::1", "0.0.0.0"}:
        # MLflow's default Host-header check allows only loopback and private addresses.
        port = stack.mlflow_port
        mlflow_command += ["--allowed-hosts", f"{stack.host},{stack.host}:{port},localhost:{port}"]
    mlflow_env = {
        **_base_env(),
        # The job runner spawns a pool of huey consumers in their own sessions (GenAI
        # jobs); a stop would orphan them, and nothing here uses them.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    if (production := production_settings(config)) is not None:
        # PostgreSQL for both servers, S3 behind MLflow, MLflow's basic-auth app.
        prefect_env["PREFECT_API_DATABASE_CONNECTION_URL"] = prefect_database_url(production)
        mlflow_command[mlflow_command.index("--backend-store-uri") + 1] = mlflow_backend_store_uri(production)
        mlflow_command[mlflow_command.index("--artifacts-destination") + 1] = production.artifacts_uri
        mlflow_command += ["--serve-artifacts"]
        if production.mlflow_auth:
            mlflow_command += ["--app-name", "basic-auth"]
        mlflow_env.update(mlflow_server_env(config))
    clients_env = {**_base_env(), **client_env(config)}  # MLflow credentials in production
    return [
        _Service(
            name=PREFECT,
            url=stack.ui_url,
            health_url=f"{stack.api_url}/health",
            port=stack.prefect_port,
            managed=stack.prefect_api_url is None,
            command=[
                _venv_script("prefect"),
                "server",
                "start",
                "--host",
                stack.host,
                "--port",
                str(stack.prefect_port),
            ],
            env=prefect_env,
            pid_file=dirs["run"] / f"{PREFECT}.pid",
            log_file=dirs["logs"] / f"{PREFECT}.log",
        ),
        _Service(
            name=MLFLOW,
            url=stack.tracking_uri,
            health_url=f"{stack.tracking_uri.rstrip('/')}/health",
            port=stack.mlflow_port,
            managed=stack.mlflow_tracking_uri is None,
            command=mlflow_command,
            env=mlflow_env,
            pid_file=dirs["run"] / f"{MLFLOW}.pid",
            log_file=dirs["logs"] / f"{MLFLOW}.log",
        ),
        _Service(
            name=EVIDENTLY,
            url=stack.evidently_url,
            health_url=f"{stack.evidently_url}/api/version",
            port=stack.evidently_port,
            managed=True,
            enabled=stack.evidently_ui,
            command=[
                _venv_script("evidently"),
                "ui",
                "--workspace",
                str(dirs["evidently"]),
                "--host",
                stack.host,
                "--port",
                str(stack.evidently_port),
            ],
            env={**_base_env(), "DO_NOT_TRACK": "1"},  # Evidently's usage telemetry stays off
            pid_file=dirs["run"] / f"{EVIDENTLY}.pid",
            log_file=dirs["logs"] / f"{EVIDENTLY}.log",
            markers=(" ui ",),
        ),
        _Service(
            name=DEPLOYMENTS,
            url=f"{stack.ui_url}/deployments",
            health_url=f"http://{stack.host}:{stack.runner_port}/health",
            port=stack.runner_port,
            managed=True,
            enabled=stack.serve_deployments,
            command=[
                sys.executable,
                "-m",
                "flows.deployments",
                "--config",
                str((config_file or _written_config(config)).resolve()),
            ],
            env=clients_env,
            pid_file=dirs["run"] / f"{DEPLOYMENTS}.pid",
            log_file=dirs["logs"] / f"{DEPLOYMENTS}.log",
            markers=("flows.deployments",),
            needs_servers=True,
            cwd=config.root,
        ),
        # Started before any model exists: it answers /health at once, /ready once the
        # registry has a champion (it polls), so `mlops up` need not wait for training.
        _Service(
            name=SERVE,
            url=f"http://{config.serving.host}:{config.serving.port}",
            health_url=f"http://{config.serving.host}:{config.serving.port}/health",
            port=config.serving.port,
            managed=True,
            enabled=stack.serve_predictions,
            command=[
                _venv_script("mlops"),
                "--config",
                str((config_file or _written_config(config)).resolve()),
                "serve",
            ],
            env=clients_env,
            pid_file=dirs["run"] / f"{SERVE}.pid",
            log_file=dirs["logs"] / f"{SERVE}.log",
            markers=("mlops",),
            needs_servers=True,
            cwd=config.root,
        ),
    ]


# --- process probes ----------------------------------------------------------------------


def _healthy(url: str, timeout: float = HEALTH_TIMEOUT) -> bool:
    # No proxies: the servers are local, and an HTTP(S)_PROXY in the shell must not intercept.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _port_in_use(host: str, port: int) -> bool:
    """Try to bind as the server will: a connect probe is fooled by NAT'd or proxied networks."""
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except socket.gaierror:
        raise ConfigError(f"stack.host {host!r} does not resolve: use 127.0.0.1") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        # SO_REUSEADDR: a port left in TIME_WAIT by a server just stopped is free to use.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror}): set stack.host to an address"
                " of this machine, e.g. 127.0.0.1"
            ) from None
    return False


def _alive(pid: int) -> bool:
    """True for a running process; reaps our own children so a dead one is not a zombie."""
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None  # poll() reaps; the exit code stays readable
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():  # Linux: a zombie still answers signal 0
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return True
    return True


def _cmdline(pid: int) -> str | None:
    """The process's command line on Linux; None where /proc is unavailable (macOS)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def _is_ours(pid: int, service: _Service) -> bool:
    """Guard against a recycled pid: the process must be this kind of server."""
    args = _cmdline(pid)
    if args is None:
        return True
    return service.name in args and all(marker in f"{args} " for marker in service.markers)


def _read_pid(service: _Service) -> int | None:
    """The pid of this service's live process, removing a stale pid file."""
    try:
        pid = int(service.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        service.pid_file.unlink(missing_ok=True)
        return None
    if _alive(pid) and _is_ours(pid, service):
        return pid
    service.pid_file.unlink(missing_ok=True)
    return None


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    tail = " | ".join(line.strip() for line in text[-lines:] if line.strip())
    return f" (last lines: {tail})" if tail else ""


# --- start / stop / status ---------------------------------------------------------------


def _spawn(service: _Service) -> int:
    service.log_file.parent.mkdir(parents=True, exist_ok=True)
    service.pid_file.parent.mkdir(parents=True, exist_ok=True)
    with service.log_file.open("ab") as log:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"\n--- {stamp} mlops: starting {' '.join(service.command)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                service.command,
                env=service.env,
                cwd=service.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: survives the CLI, stops as a unit
                close_fds=True,
            )
        except OSError as exc:
            raise ServiceUnavailableError(
                f"cannot start the {service.name} server ({service.command[0]}): {exc.strerror};"
                " is the project installed in this environment (`make venv`)?"
            ) from None
    _children[proc.pid] = proc
    service.pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def _exit_code(pid: int) -> int | None:
    child = _children.get(pid)
    return child.returncode if child is not None else None


def start_stack(
    config: ProjectConfig, timeout: float = START_TIMEOUT, config_file: Path | None = None
) -> StackInfo:
    """Start whichever services are not running yet, and wait until each answers.

    A service that is already running (per its pid file) is reused, so calling this twice
    is a no-op returning the same pids. On failure, the services this call started are
    stopped again, and the error names the log file to read. The deployments are served
    with `config_file` as their default config (the config is written to the state folder
    when there is no file).
    """
    t0 = time.monotonic()
    for path in _dirs(config).values():
        path.mkdir(parents=True, exist_ok=True)
    if config_file is None and (config.stack.serve_deployments or config.stack.serve_predictions):
        config_file = save_config(config, _written_config(config))
    services = [s for s in _services(config, config_file) if s.enabled]
    pids: dict[str, int | None] = {}
    started: list[str] = []

    try:
        to_start: list[_Service] = []
        for service in services:  # check every port before starting anything
            if not service.managed:
                pids[service.name] = None
                continue
            pid = _read_pid(service)
            args = _cmdline(pid) if pid is not None else None
            if (
                args is not None
                and "--port" in service.command
                and f"--port {service.port} " not in f"{args} "
            ):
                raise ConfigError(
                    f"the running {service.name} server (pid {pid}) listens on another port than"
                    f" stack.{service.name}_port={service.port}: run `mlops down`, then `mlops up`"
                )
            if pid is None and _port_in_use(config.stack.host, service.port):
                raise ConfigError(
                    f"port {service.port} on {config.stack.host} is already in use by a process"
                    f" that is not this project's {service.name} service"
                    f" (no live pid in {service.pid_file}): stop that process or set"
                    f" {_port_setting(service)} in the config"
                )
            pids[service.name] = pid
            if pid is None:
                to_start.append(service)
        servers = [s for s in services if not s.needs_servers]
        starting = {s.name for s in to_start}
        if production_settings(config) is not None and starting & {PREFECT, MLFLOW}:
            # Databases, bucket and auth settings, checked before a server fails on them.
            prepare_production(config, prefect=PREFECT in starting, mlflow=MLFLOW in starting)
        for service in to_start:
            if not service.needs_servers:
                pids[service.name] = _spawn(service)
                started.append(service.name)
        _wait_healthy(servers, pids, t0 + timeout, timeout)
        if production_settings(config) is not None:
            # What the deployments and the prediction service will authenticate with.
            check_tracking_credentials(config.stack.tracking_uri, client_env(config))
        dependents = [s for s in services if s.needs_servers]
        for service in to_start:
            if service.needs_servers:
                pids[service.name] = _spawn(service)
                started.append(service.name)
        _wait_healthy(dependents, pids, time.monotonic() + timeout, timeout)
    except BaseException:
        # Leave nothing half-started behind (e.g. when a test fixture fails to start).
        _stop_services([s for s in services if s.name in started])
        raise

    by_name = {s.name: s for s in services}
    return StackInfo(
        prefect_ui_url=by_name[PREFECT].url,
        prefect_api_url=config.stack.api_url,
        mlflow_url=by_name[MLFLOW].url,
        prefect_pid=pids[PREFECT],
        mlflow_pid=pids[MLFLOW],
        started=started,
        seconds=round(time.monotonic() - t0, 2),
        evidently_url=by_name[EVIDENTLY].url if EVIDENTLY in by_name else None,
        evidently_pid=pids.get(EVIDENTLY),
        deployments_pid=pids.get(DEPLOYMENTS),
        serving_url=by_name[SERVE].url if SERVE in by_name else None,
        serving_pid=pids.get(SERVE),
    )


def _port_setting(service: _Service) -> str:
    return {DEPLOYMENTS: "stack.runner_port", SERVE: "serving.port"}.get(
        service.name, f"stack.{service.name}_port"
    )


def _wait_healthy(
    services: list[_Service], pids: dict[str, int | None], deadline: float, timeout: float
) -> None:
    pending = list(services)
    while pending:
        for service in list(pending):
            pid = pids[service.name]
            if pid is not None and not _alive(pid):
                code = _exit_code(pid)
                how = f"exited with code {code}" if code is not None else "exited"
                raise ServiceUnavailableError(
                    f"the {service.name} server {how} during start-up: see {service.log_file}"
                    f"{_log_tail(service.log_file)}"
                )
            if _healthy(service.health_url):
                pending.remove(service)
            elif pid is None:  # external: nothing to wait for
                raise ServiceUnavailableError(
                    f"{service.name} at {service.health_url} does not answer: start it, or remove"
                    " the URL override from the stack section of the config"
                )
        if not pending:
            return
        if time.monotonic() > deadline:
            names = ", ".join(f"{s.name} (log: {s.log_file})" for s in pending)
            raise ServiceUnavailableError(
                f"timed out after {timeout:.0f} s waiting for {names} to answer its health check"
            )
        time.sleep(POLL_INTERVAL)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        pgid = pid  # leader gone, children may remain: the group keeps the leader's id
    try:
        # start_new_session made the server its own process-group leader.
        if pgid == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pid: int) -> bool:
    if _alive(pid):
        return True
    try:
        os.killpg(pid, 0)  # children of the leader may still be shutting down
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _wait_gone(pids: list[int], deadline: float) -> list[int]:
    remaining = list(pids)
    while remaining and time.monotonic() < deadline:
        remaining = [pid for pid in remaining if _group_alive(pid)]
        if remaining:
            time.sleep(POLL_INTERVAL)
    return remaining


def _stop_services(services: list[_Service], timeout: float = STOP_TIMEOUT) -> list[str]:
    running = {s.name: pid for s in services if (pid := _read_pid(s)) is not None}
    for pid in running.values():
        _signal_group(pid, signal.SIGTERM)
    left = _wait_gone(list(running.values()), time.monotonic() + timeout)
    for pid in left:
        _signal_group(pid, signal.SIGKILL)
    _wait_gone(left, time.monotonic() + 5.0)
    for service in services:
        if service.name in running:
            service.pid_file.unlink(missing_ok=True)
    return sorted(running)


def stop_stack(
    config: ProjectConfig, timeout: float = STOP_TIMEOUT, only: set[str] | None = None
) -> list[str]:
    """Stop the services this stack started (SIGTERM, then SIGKILL), or `only` those named.
    Returns their names."""
    services = [s for s in _services(config) if s.managed and (only is None or s.name in only)]
    return _stop_services(services, timeout)


def stack_status(config: ProjectConfig) -> list[ServiceStatus]:
    """Each server's URL, pid, and whether it is running and answers its health check."""
    statuses = []
    for service in _services(config):
        pid = _read_pid(service) if service.managed else None
        if not service.enabled and pid is None:
            continue  # turned off and not running: not part of this stack
        healthy = _healthy(service.health_url)
        statuses.append(
            ServiceStatus(
                name=service.name,
                url=service.url,
                health_url=service.health_url,
                pid=pid,
                managed=service.managed,
                running=pid is not None if service.managed else healthy,
                healthy=healthy,
                log=service.log_file if service.managed else None,
            )
        )
    return statuses


# --- clients -----------------------------------------------------------------------------


def require_servers(config: ProjectConfig) -> None:
    """Fail fast, with what to do, when a server a flow needs is down."""
    stack = config.stack
    if not _healthy(f"{stack.api_url}/health"):
        raise ServiceUnavailableError(f"Prefect API at {stack.api_url} does not answer: run `mlops up`")
    if not _healthy(f"{stack.tracking_uri.rstrip('/')}/health"):
        raise ServiceUnavailableError(
            f"MLflow tracking server at {stack.tracking_uri} does not answer: run `mlops up`"
        )
    if stack.tracking_uri.startswith("http"):
        check_tracking_credentials(stack.tracking_uri)  # an auth-enabled server (production profile)
