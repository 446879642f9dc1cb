"""The benchmark harness on tiny sizes, so it does not rot: the cheap sections run for real
through `bench/run.py`, and the report names every section with finite figures. Speed is not
checked here (no wall-clock thresholds); `make bench` measures it."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.seed import load_source
from bench.common import loglog_slope
from bench.scale_data import generate, scale_month, scaled_suites
from tasks.validate import load_suite_json, validate_frame

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY = ["year", "month", "day", "carrier", "flight", "sched_dep_time", "origin"]
SECTION_TITLES = [
    "## 1. Training pipeline overhead",
    "## 2. Validation",
    "## 3. Drift",
    "## 4. Serving",
    "## 5. Scaling",
    "## 6. Cold start",
]


def _numbers(value: object) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


def test_harness_writes_the_report_with_every_section(tmp_path: Path) -> None:
    results, report = tmp_path / "results", tmp_path / "out" / "REPORT.md"
    command = [sys.executable, str(REPO_ROOT / "bench" / "run.py"), "--smoke", "--scripts", "validation"]
    command += ["drift", "--results", str(results), "--report", str(report)]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT
    )
    try:
        output, _ = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        proc.terminate()  # run.py passes it on, so the running script stops cleanly
        output, _ = proc.communicate(timeout=120)
        raise
    assert proc.returncode == 0, output
    for name in ("validation", "drift"):
        assert not (results / f"{name}.failed.json").exists(), (results / f"{name}.log").read_text()[-2000:]
        data = json.loads((results / f"{name}.json").read_text())
        assert data["machine"]["cores"] >= 1 and data["machine"]["memory_gb"] > 0
        numbers = _numbers({k: v for k, v in data.items() if k != "machine"})
        assert numbers and all(math.isfinite(n) for n in numbers), name
    validation = json.loads((results / "validation.json").read_text())
    assert all(v["passed"] for v in validation["variants"].values())
    assert validation["rows"] > 0 and validation["gx_rows_per_second"] > 0

    text = report.read_text()
    positions = [text.index(title) for title in SECTION_TITLES]
    assert positions == sorted(positions)
    assert "Smoke run" in text and "cores" in text
    assert "GX / pandas" in text and "Flow / scipy" in text
    assert not re.search(r"\bnan\b", text, re.I) and "n/a" not in text  # every figure finite
    # The sections the smoke run skips are listed as not run, never filled in.
    for skipped in ("training_overhead", "task_overhead", "serving", "scaling", "cold_start"):
        assert f"`{skipped}`: **not run**" in text
    png = (report.parent / "plots" / "ratios.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_scaled_data_is_seeded_and_passes_the_scaled_suites(tmp_path: Path) -> None:
    written = generate(6_000, tmp_path / "small", seed=3)  # below the real size: a sample
    assert sum(written["months"].values()) == 6_000
    march = pd.read_parquet(Path(written["landing"]) / "flights" / "2013-03.parquet")
    assert len(march) == written["months"][3]

    # Above the real size: whole copies plus a sample, noise on the copies, keys kept unique.
    flights = load_source("flights")
    january = flights[flights["month"] == 1].reset_index(drop=True)
    rows = len(january) * 3 // 2
    first = scale_month(january, rows, np.random.default_rng(3))
    pd.testing.assert_frame_equal(first, scale_month(january, rows, np.random.default_rng(3)))
    assert len(first) == rows and not first.duplicated(KEY).any()
    suites = scaled_suites(REPO_ROOT / "expectations", tmp_path / "suites", rows, 1, rows)
    report = validate_frame(first, load_suite_json(suites, "flights_batch"), "scaled", "time_hour", "2013-01")
    assert report.success, report.summary()


def test_growth_exponent_is_the_log_log_slope() -> None:
    sizes = [1e4, 1e5, 1e6]
    assert loglog_slope(sizes, [2 * s for s in sizes]) == pytest.approx(1.0)
    assert loglog_slope(sizes, [s**1.5 for s in sizes]) == pytest.approx(1.5)
    assert loglog_slope([1e4], [1.0]) is None
