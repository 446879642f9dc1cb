"""`bench/report.py` rebuilds REPORT.md from the results it has, and keeps the sections it
has none for from the report it replaces (a partial `make bench` must not erase figures)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.report import write_report

EARLIER = """# Benchmarks

## 3. Drift

_Run 2026-11-25 02:40 UTC on 2 cores._

| drift flow vs scipy | 2.6x |

## 5. Scaling

- `scaling`: **not run** in this report (no result in `bench/results/`).
"""


def test_a_section_not_rerun_keeps_its_figures_and_one_never_measured_says_so(tmp_path: Path) -> None:
    results, report = tmp_path / "results", tmp_path / "REPORT.md"
    results.mkdir()
    report.write_text(EARLIER)
    write_report(results, report)
    text = report.read_text()
    drift = text.split("## 3. Drift", 1)[1].split("## ", 1)[0]
    assert "_Run 2026-11-25 02:40 UTC on 2 cores._" in drift and "| drift flow vs scipy | 2.6x |" in drift
    scaling = text.split("## 5. Scaling", 1)[1].split("## ", 1)[0]
    assert "`scaling`: **not run**" in scaling


def test_a_section_whose_script_failed_replaces_the_earlier_figures(tmp_path: Path) -> None:
    results, report = tmp_path / "results", tmp_path / "REPORT.md"
    results.mkdir()
    report.write_text(EARLIER)
    failure = {"run_at": "2026-12-07 17:00 UTC", "error": "exit 1", "log_tail": "boom"}
    (results / "drift.failed.json").write_text(json.dumps(failure))
    write_report(results, report)
    drift = report.read_text().split("## 3. Drift", 1)[1].split("## ", 1)[0]
    assert "**failed**" in drift and "2.6x" not in drift
