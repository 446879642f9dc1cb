"""The reliability suite's harness: the fault report every fault test adds to.

Each fault test calls `fault_report.record(fault, runs, violations, rows_lost)` with what the
invariants (`invariants.py`) found after its runs. At the end of the session the table
(fault, runs, invariant violations, data lost) is printed in the terminal summary and written
as JSON and Markdown to `$RELIABILITY_REPORT` (a path ending in .json; the .md goes beside it),
or by default to `reliability-report.json` in the session's pytest temp folder.

Every test in this folder carries the `reliability` marker; the long ones also carry `long`,
which `make test` deselects and `make reliability` runs.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

REPORT_ENV = "RELIABILITY_REPORT"
HERE = Path(__file__).resolve().parent
report_key = pytest.StashKey["FaultReport"]()


@dataclass
class FaultRow:
    fault: str
    runs: int = 0
    violations: int = 0
    rows_lost: int = 0
    figures: dict[str, object] = field(default_factory=dict)  # e.g. requests/s of a load test


class FaultReport:
    """Per-fault totals, summed over every `record` call for that fault (thread-safe)."""

    def __init__(self) -> None:
        self.rows: dict[str, FaultRow] = {}
        self.path: Path | None = Path(os.environ[REPORT_ENV]) if os.environ.get(REPORT_ENV) else None
        self._lock = threading.Lock()

    def record(self, fault: str, runs: int, violations: int, rows_lost: int) -> None:
        with self._lock:
            row = self.rows.setdefault(fault, FaultRow(fault))
            row.runs += runs
            row.violations += violations
            row.rows_lost += rows_lost

    def note(self, fault: str, **figures: object) -> None:
        """Figures measured under a fault (requests/s, errors...), shown beside its row."""
        with self._lock:
            self.rows.setdefault(fault, FaultRow(fault)).figures.update(figures)

    def table(self) -> list[dict[str, object]]:
        return [asdict(r) for r in self.rows.values()]

    def markdown(self) -> str:
        lines = [
            "| fault | runs | invariant violations | data lost (rows) | figures |",
            "| --- | ---: | ---: | ---: | --- |",
            *(
                f"| {r.fault} | {r.runs} | {r.violations} | {r.rows_lost} | {_figures(r)} |"
                for r in self.rows.values()
            ),
        ]
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        width = max([len("fault"), *(len(f) for f in self.rows)])
        lines = [f"{'fault':<{width}}  {'runs':>5}  {'violations':>10}  {'rows lost':>9}"]
        lines += [
            f"{r.fault:<{width}}  {r.runs:>5}  {r.violations:>10}  {r.rows_lost:>9}  {_figures(r)}".rstrip()
            for r in self.rows.values()
        ]
        return "\n".join(lines)

    def write(self) -> Path | None:
        if self.path is None or not self.rows:
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"faults": self.table()}, indent=2) + "\n")
        self.path.with_suffix(".md").write_text(self.markdown())
        return self.path


def _figures(row: FaultRow) -> str:
    return ", ".join(f"{k}={v}" for k, v in row.figures.items())


def pytest_configure(config: pytest.Config) -> None:
    config.stash[report_key] = FaultReport()  # markers `reliability` and `long`: pyproject.toml


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(scope="session")
def fault_report(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> FaultReport:
    report = request.config.stash[report_key]
    if report.path is None:
        report.path = tmp_path_factory.getbasetemp() / "reliability-report.json"
    return report


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    report = config.stash.get(report_key, None)
    if report is None or not report.rows:
        return
    terminalreporter.section("reliability: faults injected and invariants checked")
    terminalreporter.write_line(report.text())
    total = sum(r.violations for r in report.rows.values()), sum(r.rows_lost for r in report.rows.values())
    terminalreporter.write_line(f"total invariant violations: {total[0]}, rows lost: {total[1]}")
    if (path := report.write()) is not None:
        terminalreporter.write_line(f"report: {path} and {path.with_suffix('.md')}")
