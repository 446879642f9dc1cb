"""Validation cost: the GX suite as the pipeline runs it (`tasks.validate.validate_frame`)
against the same checks written directly in pandas, on the 2013 flights (336,776 rows).

    python bench/validation.py [--repeats 3] [--sample 1.0] [--out results.json]

Variants, all on the same frames already in memory:

- pandas: every expectation of `expectations/flights_batch.json` (plus the period check the
  pipeline adds) evaluated with vectorised pandas, same bounds, same `mostly`;
- GX suite, one batch: `validate_frame` on the whole year as one frame;
- GX suite, monthly: `validate_frame` on each month, as the training flow validates them
  (rows/s over the twelve batches; the fixed cost per batch shows here);
- GX as before: the earlier `validate_frame` (a new data source per call, SUMMARY results
  with example values for every expectation), to show what the change bought.

The suite caps a monthly file at 60,000 rows; the one-batch variants lift that single bound
to the batch's size (a year is not a month), every other check is unchanged. Both sides must
agree: the pandas pass must find the same failed expectations as GX on a corrupted month.
Times are the best of `--repeats` (the machine is shared: the least disturbed run).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype, is_datetime64_any_dtype

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, machine_line, write_result
from tasks.validate import (
    _gx_context,
    _gx_expectation,
    load_suite_json,
    period_expectation,
    validate_frame,
)

SEED = 0


def _type_ok(column: pd.Series, type_list: list[str]) -> bool:
    """GX's type-list check: the column's dtype by name, or for object columns each value."""
    dtype = column.dtype
    if str(dtype) in type_list or type(dtype).__name__ in type_list:
        return True
    if pd.api.types.is_object_dtype(dtype):
        inferred = infer_dtype(column, skipna=True)  # one C pass over the values
        return ("str" in type_list and inferred in {"string", "empty"}) or (
            "int" in type_list and inferred in {"integer", "empty"}
        )
    return False


def _share(ok: pd.Series | np.ndarray, total: int) -> float:
    return float(np.count_nonzero(ok)) / total if total else 1.0


def pandas_check(frame: pd.DataFrame, spec: dict[str, Any]) -> bool:
    """One expectation of the suite, in pandas. Nulls are left out of per-value checks, as GX does."""
    kind, kw = spec["type"], spec["kwargs"]
    mostly = kw.get("mostly", 1.0)
    if kind == "expect_table_columns_to_match_set":
        wanted, have = set(kw["column_set"]), set(frame.columns)
        return wanted == have if kw.get("exact_match", True) else wanted <= have
    if kind == "expect_table_row_count_to_be_between":
        return (kw.get("min_value") or 0) <= len(frame) <= (kw.get("max_value") or np.inf)
    if kind == "expect_compound_columns_to_be_unique":
        return not frame.duplicated(subset=kw["column_list"], keep=False).any()
    column_name = kw["column"]
    if column_name not in frame.columns:
        return False
    column = frame[column_name]
    if kind == "expect_column_values_to_not_be_null":
        return _share(column.notna().to_numpy(), len(column)) >= mostly
    values = column.dropna()
    if kind == "expect_column_values_to_be_in_type_list":
        return _type_ok(column, kw["type_list"])
    if kind == "expect_column_values_to_be_of_type":
        return kw["type_"] == "Timestamp" and is_datetime64_any_dtype(column)
    if kind == "expect_column_values_to_be_between":
        low, high = kw.get("min_value"), kw.get("max_value")
        if is_datetime64_any_dtype(values):
            low = pd.Timestamp(low) if low is not None else None
            high = pd.Timestamp(high) if high is not None else None
        ok = np.ones(len(values), dtype=bool)
        if low is not None:
            ok &= (values > low if kw.get("strict_min") else values >= low).to_numpy()
        if high is not None:
            ok &= (values < high if kw.get("strict_max") else values <= high).to_numpy()
        return _share(ok, len(values)) >= mostly
    if kind == "expect_column_values_to_be_in_set":
        return _share(values.isin(kw["value_set"]).to_numpy(), len(values)) >= mostly
    if kind == "expect_column_value_lengths_to_equal":
        return _share((values.str.len() == kw["value"]).to_numpy(), len(values)) >= mostly
    if kind == "expect_column_value_lengths_to_be_between":
        lengths = values.str.len()
        low, high = kw.get("min_value"), kw.get("max_value")
        ok = ((lengths >= low) if low is not None else True) & (
            (lengths <= high) if high is not None else True
        )
        return _share(np.asarray(ok), len(values)) >= mostly
    if kind == "expect_column_values_to_match_regex":
        return _share(values.str.contains(kw["regex"], regex=True).to_numpy(), len(values)) >= mostly
    if kind == "expect_column_values_to_be_unique":
        return not values.duplicated(keep=False).any()
    raise NotImplementedError(f"no pandas version of {kind}")


def pandas_suite(frame: pd.DataFrame, specs: list[dict[str, Any]]) -> list[str]:
    """The failed expectations, as 'type:column' labels."""
    failed = []
    for spec in specs:
        if not pandas_check(frame, spec):
            failed.append(f"{spec['type']}:{spec['kwargs'].get('column', '')}")
    return failed


def gx_as_before(frame: pd.DataFrame, suite: dict[str, Any], specs: list[dict[str, Any]]) -> bool:
    """The earlier `validate_frame` body: a data source per call and SUMMARY results."""
    import great_expectations as gx

    gx_suite = gx.ExpectationSuite(
        name=suite["name"], expectations=[_gx_expectation(suite["name"], s) for s in specs]
    )
    context = _gx_context()
    source_name = f"batch-{uuid.uuid4().hex[:12]}"
    source = context.data_sources.add_pandas(source_name)
    try:
        batch_def = source.add_dataframe_asset(name="before").add_batch_definition_whole_dataframe("whole")
        result = batch_def.get_batch(batch_parameters={"dataframe": frame}).validate(
            gx_suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": 10}
        )
    finally:
        context.data_sources.delete(source_name)
    return bool(result.success)


def best_of(repeats: int, run: Callable[[], Any]) -> tuple[float, float, Any]:
    """Best wall time and best CPU time (this process, all threads) of `repeats` runs. CPU time
    barely moves when other processes take the cores, so its ratios are the steadier ones."""
    times, cpu, result = [], [], None
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = run()
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return min(times), min(cpu), result


def year_suite(suite: dict[str, Any], rows: int) -> dict[str, Any]:
    """The batch suite with its monthly row-count cap lifted to `rows` (a year is not a month)."""
    lifted = copy.deepcopy(suite)
    for spec in lifted["expectations"]:
        if spec["type"] == "expect_table_row_count_to_be_between":
            spec["kwargs"]["max_value"] = max(spec["kwargs"].get("max_value") or 0, rows)
    return lifted


def agreement(month: pd.DataFrame, suite: dict[str, Any], period: str) -> tuple[list[str], list[str]]:
    """Corrupt a month in four ways; GX and pandas must name the same failed expectations."""
    bad = month.copy()
    bad.loc[bad.index[:40], "distance"] = 9000
    bad.loc[bad.index[:5], "origin"] = "XXX"
    bad.loc[bad.index[:3], "carrier"] = None
    bad = pd.concat([bad, bad.head(2)], ignore_index=True)  # duplicated keys
    specs = [*suite["expectations"], period_expectation("time_hour", period)]
    ours = sorted(pandas_suite(bad, specs))
    report = validate_frame(bad, suite, "corrupted", "time_hour", period)
    theirs = sorted(f"{f.expectation}:{f.column or ''}" for f in report.failures)
    return ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sample", type=float, default=1.0, help="share of the flights (smoke runs)")
    parser.add_argument(
        "--months", type=int, default=12, help="months in the monthly variant (smoke runs: fewer)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from app.seed import load_source

    flights = load_source("flights")
    if args.sample < 1:
        flights = flights.sample(frac=args.sample, random_state=SEED).sort_index()
    flights = flights.reset_index(drop=True)
    suite = load_suite_json(ROOT / "expectations", "flights_batch")
    rows = len(flights)
    whole = year_suite(suite, rows)
    year_period = None  # the year spans twelve periods: no single-month check on it
    months = {
        f"2013-{m:02d}": flights[flights["month"] == m].reset_index(drop=True)
        for m in range(1, args.months + 1)
    }
    monthly_rows = sum(len(frame) for frame in months.values())
    if args.sample < 1:  # a sample's months are below the suite's floor of 500 rows
        suite = year_suite(suite, rows)
        for spec in suite["expectations"]:
            if spec["type"] == "expect_table_row_count_to_be_between":
                spec["kwargs"]["min_value"] = 1
        whole = suite
    print(f"machine: {machine_line()}")
    print(f"{rows:,} rows, suite {suite['name']!r} ({len(suite['expectations'])} expectations)", flush=True)

    validate_frame(flights.head(1000), whole, "warm-up")  # GX imports and context: not per batch
    ours, theirs = agreement(months["2013-01"], suite, "2013-01")
    if ours != theirs:
        raise SystemExit(f"pandas and GX disagree on a corrupted month:\n pandas {ours}\n GX     {theirs}")

    variants: dict[str, Callable[[], Any]] = {
        "pandas, same checks": lambda: pandas_suite(flights, whole["expectations"]),
        "GX suite, one batch": lambda: validate_frame(flights, whole, "2013", None, year_period).success,
        f"GX suite, {len(months)} monthly batches": lambda: all(
            validate_frame(frame, suite, period, "time_hour", period).success
            for period, frame in months.items()
        ),
        "GX as before, one batch": lambda: gx_as_before(flights, whole, whole["expectations"]),
    }
    results: dict[str, dict[str, Any]] = {}
    for name, run in variants.items():
        seconds, cpu_seconds, outcome = best_of(args.repeats, run)
        passed = outcome == [] if isinstance(outcome, list) else bool(outcome)
        batch_rows = monthly_rows if "monthly" in name else rows
        results[name] = {
            "rows": batch_rows,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "rows_per_second": batch_rows / seconds,
            "rows_per_cpu_second": batch_rows / cpu_seconds,
            "passed": passed,
        }
        print(
            f"  {name:32s} {seconds:7.2f} s (CPU {cpu_seconds:6.2f} s) {batch_rows / seconds:12,.0f} rows/s"
            f" {batch_rows / cpu_seconds:12,.0f} rows per CPU s  passed={passed}",
            flush=True,
        )
    base = results["pandas, same checks"]
    for figures in results.values():  # per row: the monthly variant may cover fewer rows
        figures["x_pandas"] = figures["seconds"] / figures["rows"] / (base["seconds"] / rows)
        figures["x_pandas_cpu"] = figures["cpu_seconds"] / figures["rows"] / (base["cpu_seconds"] / rows)
    gx_one = results["GX suite, one batch"]
    print(
        f"GX / pandas = {gx_one['x_pandas']:.1f}x; GX {gx_one['rows_per_second']:,.0f} rows/s"
        f" (target >= 1,000,000); before the change {results['GX as before, one batch']['rows_per_second']:,.0f}"
    )
    write_result(
        args.out,
        "validation",
        {
            "rows": rows,
            "sample": args.sample,
            "seed": SEED,
            "repeats": args.repeats,
            "expectations": len(whole["expectations"]),
            "variants": results,
            "ratio": gx_one["x_pandas"],
            "cpu_ratio": gx_one["x_pandas_cpu"],
            "gx_rows_per_second": gx_one["rows_per_second"],
            "gx_rows_per_cpu_second": gx_one["rows_per_cpu_second"],
            "agreement": ours,
        },
    )


if __name__ == "__main__":
    main()
