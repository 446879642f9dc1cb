"""The 2013 flights at any size: the real rows resampled with noise, seeded, written as a
landing zone the pipeline reads like the real one.

    python bench/scale_data.py --rows 1000000 --out /tmp/flights-1m [--seed 0]

How a size is made (deterministic for a given `--rows` and `--seed`):

- each month gets its share of `rows` in proportion to its real size;
- below the real size a month is a sample without replacement; above it, the month is
  copied whole `k` times and the remainder sampled without replacement;
- copy `c` (0 is the real row) gets flight number `flight + 10000 * c`, so the suite's key
  (year, month, day, carrier, flight, sched_dep_time, origin) stays unique, and Gaussian
  noise on `dep_delay` and `arr_delay` (sd 5 minutes, rounded, clipped to the suite's
  bounds; missing values stay missing, so cancelled flights stay cancelled);
- weather and planes are written as they are (the joins find every row they found before).

The suites in `expectations/` describe real monthly files: a month holds at most 60,000
rows and flight numbers stop at 9999. The script writes a copy of the suites next to the
data with exactly those two bounds widened for the size (and the training frame's row cap),
every other check unchanged; point `expectations_dir` at it (`bench/scaling.py` does).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT

FLIGHT_STRIDE = 10_000
DELAY_NOISE_MINUTES = 5.0


def scale_month(month: pd.DataFrame, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """`rows` rows from one month: whole copies, then a sample, then noise on the copies."""
    copies, remainder = divmod(rows, len(month))
    parts = [month.assign(_copy=c) for c in range(copies)]
    if remainder:
        picked = rng.choice(len(month), size=remainder, replace=False)
        parts.append(month.iloc[np.sort(picked)].assign(_copy=copies))
    frame = pd.concat(parts, ignore_index=True)
    copy_index = frame.pop("_copy").to_numpy()
    frame["flight"] = frame["flight"] + FLIGHT_STRIDE * copy_index
    noisy = copy_index > 0
    for column, (low, high) in {"dep_delay": (-120, 1440), "arr_delay": (-120, 600)}.items():
        values = frame[column].to_numpy(dtype=float, copy=True)
        noise = np.round(rng.normal(0.0, DELAY_NOISE_MINUTES, size=len(frame)))
        values[noisy] = np.clip(values[noisy] + noise[noisy], low, high)  # NaN + x stays NaN
        frame[column] = values
    # Arrival order within the month, as a real file comes.
    return frame.sort_values(["day", "sched_dep_time"], kind="stable").reset_index(drop=True)


def month_sizes(counts: pd.Series, rows: int) -> dict[int, int]:
    """Each month's share of `rows`, in proportion to its real size, summing to `rows`."""
    exact = counts / counts.sum() * rows
    sizes = np.floor(exact).astype(int)
    short = rows - int(sizes.sum())
    for month in (exact - sizes).sort_values(ascending=False).index[:short]:
        sizes[month] += 1
    return {int(m): int(n) for m, n in sizes.items()}


def scaled_suites(source_dir: Path, out_dir: Path, largest_month: int, copies: int, rows: int) -> Path:
    """The suites with the month's row cap, the flight-number cap and the training frame's
    row cap widened for this size; every other expectation as it is."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(source_dir.glob("*.json")):
        suite = json.loads(path.read_text())
        for spec in suite["expectations"]:
            kwargs: dict[str, Any] = spec["kwargs"]
            if spec["type"] == "expect_table_row_count_to_be_between" and suite["name"] in {
                "flights_batch",
                "flights_training",
            }:
                kwargs["max_value"] = max(kwargs["max_value"], 2 * largest_month, rows)
            if spec["type"] == "expect_column_values_to_be_between" and kwargs.get("column") == "flight":
                kwargs["max_value"] = FLIGHT_STRIDE * (copies + 1)
        (out_dir / path.name).write_text(json.dumps(suite, indent=2))
    return out_dir


def generate(rows: int, out: Path, seed: int = 0, config_path: Path = ROOT / "mlops.yaml") -> dict[str, Any]:
    """Write a landing zone of `rows` flights (plus weather and planes) and scaled suites
    under `out`; return what was written."""
    from app.seed import load_source, to_parquet_bytes
    from mlops.config import load_config
    from mlops.storage import open_store

    config = load_config(config_path)
    rng = np.random.default_rng(seed)
    flights = load_source("flights")
    sizes = month_sizes(flights["month"].value_counts().sort_index(), rows)
    landing = open_store(str(out / "landing"), config.data.s3)
    spec = config.data.tables[config.data.batch_table]
    copies = 0
    for month, size in sizes.items():
        real = flights[flights["month"] == month].reset_index(drop=True)
        copies = max(copies, size // len(real))
        landing.write_bytes(spec.key(f"2013-{month:02d}"), to_parquet_bytes(scale_month(real, size, rng)))
    for table in ("weather", "planes"):
        landing.write_bytes(config.data.tables[table].key(), to_parquet_bytes(load_source(table)))
    suites = scaled_suites(
        config.path(config.expectations_dir), out / "expectations", max(sizes.values()), copies, rows
    )
    return {
        "rows": rows,
        "seed": seed,
        "months": sizes,
        "landing": str(out / "landing"),
        "expectations": str(suites),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="a folder outside git (e.g. under /tmp)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    written = generate(args.rows, args.out, args.seed)
    print(json.dumps(written, indent=2))


if __name__ == "__main__":
    main()
