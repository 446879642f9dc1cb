"""A live view of a flow run's tasks on the command line, read from the Prefect API.

The flow runs in the calling thread as usual; a background thread polls the API for the
newest run of that flow and redraws a table of its task runs. The flow knows nothing of it.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TypeVar

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

T = TypeVar("T")
STATE_STYLE = {
    "Completed": "green",
    "Cached": "cyan",
    "Running": "yellow",
    "Failed": "red",
    "Crashed": "red",
    "Retrying": "magenta",
}


def _task_table(flow_run_name: str, runs: list) -> Table:
    table = Table(title=f"flow run {flow_run_name}", title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("step")
    table.add_column("state")
    table.add_column("seconds", justify="right")
    now = datetime.now(UTC)
    for run in sorted(runs, key=lambda r: r.expected_start_time or now):
        state = run.state.name if run.state else "Pending"
        if run.end_time and run.start_time:
            seconds = (run.end_time - run.start_time).total_seconds()
        elif run.start_time:
            seconds = (now - run.start_time).total_seconds()
        else:
            seconds = 0.0
        table.add_row(run.name, f"[{STATE_STYLE.get(state, 'white')}]{state}[/]", f"{seconds:.1f}")
    return table


def _poll(flow_name: str, since: datetime, live: Live, stop: threading.Event) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterId,
    )
    from prefect.client.schemas.sorting import FlowRunSort, TaskRunSort

    with get_client(sync_client=True) as client:
        flow_run = None
        while not stop.wait(1.0):
            try:
                if flow_run is None:
                    found = client.read_flow_runs(
                        flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                        flow_run_filter=FlowRunFilter(
                            expected_start_time=FlowRunFilterExpectedStartTime(after_=since)
                        ),
                        sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                        limit=1,
                    )
                    flow_run = found[0] if found else None
                    continue
                runs = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])),
                    sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                    limit=200,  # the API maximum
                )
                live.update(_task_table(flow_run.name, runs))
            except Exception:  # a display must never break the run it displays
                continue


@contextmanager
def _quiet_prefect_console() -> Iterator[None]:
    """Prefect's INFO lines would tear the live table; the UI keeps every log line."""
    import logging

    loggers = [logging.getLogger(name) for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs")]
    handlers = [h for lg in loggers for h in lg.handlers if type(h).__name__ == "PrefectConsoleHandler"]
    levels = [h.level for h in handlers]
    for handler in handlers:
        handler.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for handler, level in zip(handlers, levels, strict=True):
            handler.setLevel(level)


def run_with_progress(flow_name: str, run: Callable[[], T], console: Console) -> T:
    """Call `run` (which runs the flow) while showing the flow's task runs live."""
    try:
        return _run_live(flow_name, run, console)
    finally:
        console.print()  # the table's last line would otherwise run into what follows


def _run_live(flow_name: str, run: Callable[[], T], console: Console) -> T:
    since = datetime.now(UTC)
    stop = threading.Event()
    with (
        _quiet_prefect_console(),
        Live(Text(f"starting {flow_name}…"), console=console, refresh_per_second=2) as live,
    ):
        # Prefect's settings (the API URL) live in context variables, which a new thread
        # does not inherit: run the poller in a copy of this context.
        context = contextvars.copy_context()
        poller = threading.Thread(target=context.run, args=(_poll, flow_name, since, live, stop), daemon=True)
        poller.start()
        try:
            return run()
        finally:
            stop.set()
            poller.join(timeout=5)
