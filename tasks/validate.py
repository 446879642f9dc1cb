"""Snapshot → validated batch: run a Great Expectations suite from `expectations/`.

Row counts are checked before GX runs, because per-row expectations pass on an empty
table. A failure names each failed expectation with its counts and example values.
`render_data_docs` turns a report back into GX's own Data Docs HTML for people to read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd
from pandas.api.types import infer_dtype

from mlops.errors import ConfigError
from mlops.periods import MONTHS, Periods

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no phoning home from a pipeline
_GX_LOCK = threading.Lock()  # the GX context is shared by validation tasks running in threads

# A monthly file is cut on local dates, but time columns are UTC instants: a flight at
# 21:00 in New York on the 31st is 02:00 UTC on the 1st. UTC offsets span -12h..+14h, so
# the period check widens the UTC month by 14 hours each side. A wrong month or a future
# date is still caught; a day of drift is not the check's job.
PERIOD_SLACK = pd.Timedelta(hours=14)


@dataclass(frozen=True)
class FailedExpectation:
    expectation: str
    column: str | None
    kwargs: dict[str, Any]
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    observed: Any = None
    examples: list[Any] = field(default_factory=list)

    def describe(self) -> str:
        if self.expectation == "expect_table_columns_to_match_set" and isinstance(self.observed, list):
            # two lists of 19 names side by side hide the one that differs: name it
            expected, observed = set(self.kwargs.get("column_set") or []), {str(c) for c in self.observed}
            text = f"{self.expectation} on table: missing columns {sorted(expected - observed)}"
            if self.kwargs.get("exact_match"):
                text += f", unexpected columns {sorted(observed - expected)}"
            return text
        where = f"column {self.column!r}" if self.column else "table"
        bounds = {k: v for k, v in self.kwargs.items() if k not in {"column", "batch_id"}}
        text = f"{self.expectation} on {where} {bounds}"
        if self.unexpected_count is not None:
            pct = f" ({self.unexpected_percent:.2f}%)" if self.unexpected_percent is not None else ""
            text += f": {self.unexpected_count} unexpected rows{pct}"
        if self.observed is not None:
            text += f": observed {self.observed}"
        if self.examples:
            text += f", e.g. {self.examples[:5]}"
        return text


@dataclass(frozen=True)
class ValidationReport:
    suite: str
    suite_sha256: str
    batch: str
    rows: int
    evaluated: int
    failures: list[FailedExpectation]
    result: dict[str, Any]

    @property
    def success(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        if self.success:
            return (
                f"{self.batch}: suite {self.suite!r} passed ({self.evaluated} expectations, {self.rows} rows)"
            )
        lines = [
            f"{self.batch}: suite {self.suite!r} failed {len(self.failures)} of {self.evaluated} expectations"
        ]
        lines += [f"  - {failure.describe()}" for failure in self.failures]
        return "\n".join(lines)

    def rejection_message(self, file: str, quarantine_uri: str) -> str:
        """What an operator reads about a failed batch: what failed, the file upstream must
        replace, and where the rejected copy went."""
        return f"{self.summary()}\n  file {file}\n  quarantined at {quarantine_uri}"

    def rows_for_table(self) -> list[dict[str, Any]]:
        """One row per failed expectation, for a Prefect table artifact."""
        return [
            {
                "expectation": f.expectation,
                "column": f.column or "(table)",
                "unexpected": f.unexpected_count if f.unexpected_count is not None else "",
                "observed": "" if f.observed is None else str(f.observed),
                "examples": ", ".join(map(str, f.examples[:5])),
            }
            for f in self.failures
        ]


def suite_path(expectations_dir: Path, name: str) -> Path:
    path = expectations_dir / f"{name}.json"
    if not path.is_file():
        raise ConfigError(f"expectation suite {name!r} not found at {path}")
    return path


def load_suite_json(expectations_dir: Path, name: str) -> dict[str, Any]:
    path = suite_path(expectations_dir, name)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None


@cache
def _gx_context():
    """One ephemeral GX context per process: the suites live in git, not in a GX store."""
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    # Some GX modules pin their own logger to INFO at import; the parent's level misses them.
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("great_expectations.") and isinstance(logger, logging.Logger):
            logger.setLevel(logging.NOTSET)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    return context


@cache
def _gx_batch_definition():
    """One pandas batch definition per process, reused by every validation: adding and
    deleting a data source per call cost more than the checks on a small batch."""
    source = _gx_context().data_sources.add_pandas("mlops-frames")
    return source.add_dataframe_asset(name="frame").add_batch_definition_whole_dataframe("whole")


def _row_bounds(suite: dict[str, Any]) -> dict[str, int]:
    """The suite's row-count bounds (at least one row, always)."""
    for exp in suite.get("expectations", []):
        if exp["type"] == "expect_table_row_count_to_be_between":
            kwargs = exp["kwargs"]
            bounds = {"min_value": int(kwargs.get("min_value") or 1)}
            if kwargs.get("max_value") is not None:
                bounds["max_value"] = int(kwargs["max_value"])
            return bounds
    return {"min_value": 1}


def _exception_message(info: dict[str, Any] | None) -> str | None:
    """GX nests exception details by metric id; return the first message, if any."""
    if not info:
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message", "")).split("\n")[0]
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message", "")).split("\n")[0]
    return None


def period_expectation(
    time_column: str, period: str, periods: Periods = MONTHS, timezone: str = "UTC"
) -> dict[str, Any]:
    """An expectation that every `time_column` value lies in `period`, which begins and ends
    at midnight in `timezone` (the column holds UTC instants once ingested)."""
    start = pd.Timestamp(periods.start(period)).tz_localize(timezone)
    end = pd.Timestamp(periods.end(period)).tz_localize(timezone)
    return {
        "type": "expect_column_values_to_be_between",
        "kwargs": {
            "column": time_column,
            "min_value": (start - PERIOD_SLACK).to_pydatetime(),
            "max_value": (end + PERIOD_SLACK).to_pydatetime(),
            "strict_max": True,
        },
        "meta": {"notes": f"every {time_column} falls in {period} ({timezone}, +/- {PERIOD_SLACK})"},
    }


def _gx_expectation(suite_name: str, spec: dict[str, Any]):
    """Build one GX expectation from its JSON form; a typo names the suite and the entry."""
    import great_expectations as gx
    from great_expectations.exceptions import GreatExpectationsError

    kind = spec.get("type")
    try:
        impl = gx.expectations.registry.get_expectation_impl(kind)
    except GreatExpectationsError:
        raise ConfigError(
            f"suite {suite_name!r}: {kind!r} is not a GX expectation (check the spelling in expectations/)"
        ) from None
    meta = spec.get("meta") or {}
    try:
        # the notes travel into the GX result, so whoever reads it later sees why a check exists
        return impl(**spec.get("kwargs", {}), meta=meta or None, notes=meta.get("notes"))
    except Exception as exc:  # pydantic reports a bad argument; GX wraps some of them
        raise ConfigError(f"suite {suite_name!r}: bad arguments for {kind}: {exc}") from None


def _string_columns(suite: dict[str, Any]) -> set[str]:
    """Columns whose every type-list expectation accepts pandas' string dtype: those can be
    handed to GX as that dtype, whose type check reads the dtype once. On an `object` column
    GX instead calls a Python lambda per value (1.3M calls on a year of four text columns)."""
    accepts: dict[str, bool] = {}
    for exp in suite.get("expectations", []):
        if exp["type"] != "expect_column_values_to_be_in_type_list":
            continue
        kwargs = exp.get("kwargs", {})
        ok = bool({"StringDtype", "string"} & set(kwargs.get("type_list") or []))
        accepts[kwargs.get("column")] = accepts.get(kwargs.get("column"), True) and ok
    return {column for column, ok in accepts.items() if ok}


def _as_string_dtype(frame: pd.DataFrame, columns: set[str]) -> pd.DataFrame:
    """`frame` with those of `columns` that hold only text (one C pass to tell) as pandas'
    string dtype. A column that mixes text with numbers stays `object`, so GX still finds
    and names the values of the wrong type."""
    typed = {
        name: frame[name].astype(pd.StringDtype())
        for name in columns
        if name in frame.columns
        and frame[name].dtype == object
        and infer_dtype(frame[name], skipna=True) in {"string", "empty"}
    }
    return frame.assign(**typed) if typed else frame


def _config_key(config: Any) -> str:
    """An expectation's type and arguments, to find its result again in a second run."""
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    return json.dumps([config.type, kwargs], sort_keys=True, default=str)


def validate_frame(
    frame: pd.DataFrame,
    suite: dict[str, Any],
    batch: str,
    time_column: str | None = None,
    period: str | None = None,
    periods: Periods = MONTHS,
    timezone: str = "UTC",
) -> ValidationReport:
    """Run one suite on one table and return every failure, plainly described.

    With both `time_column` and `period`, also expect every time to lie in that period.
    """
    import great_expectations as gx

    name = suite["name"]
    digest = hashlib.sha256(json.dumps(suite, sort_keys=True).encode()).hexdigest()
    # A table of the wrong size is the wrong file: per-row checks would pass on an empty one,
    # and spend seconds on one ten times too big (ten months in one file) to say nothing more.
    bounds = _row_bounds(suite)
    if not bounds["min_value"] <= len(frame) <= bounds.get("max_value", len(frame)):
        failure = FailedExpectation("expect_table_row_count_to_be_between", None, bounds, observed=len(frame))
        return ValidationReport(name, digest, batch, len(frame), 1, [failure], {"success": False})

    specs = list(suite["expectations"])
    if time_column and period:
        specs.append(period_expectation(time_column, period, periods, timezone))
    expectations = [_gx_expectation(name, spec) for spec in specs]
    checked = _as_string_dtype(frame, _string_columns(suite))  # outside the lock: no GX state
    with _GX_LOCK:
        gx_batch = _gx_batch_definition().get_batch(batch_parameters={"dataframe": checked})
        # Every expectation is checked in full either way; BOOLEAN_ONLY skips collecting
        # counts and example values, which took half the time. Only the expectations that
        # failed run again to say how they failed.
        result = gx_batch.validate(
            gx.ExpectationSuite(name=name, expectations=expectations),
            result_format={"result_format": "BOOLEAN_ONLY"},
        )
        failed = {
            _config_key(item.expectation_config): i
            for i, item in enumerate(result.results)
            if not item.success
        }
        if failed:
            rerun = [e for e in expectations if _config_key(e.configuration) in failed]
            detailed = gx_batch.validate(
                gx.ExpectationSuite(name=name, expectations=rerun),
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": 10},
            )
            for item in detailed.results:  # GX does not keep the suite's order: match by config
                result.results[failed[_config_key(item.expectation_config)]] = item
    result.meta["batch"] = batch  # the shared batch definition does not carry the batch's name

    failures = []
    for item in result.results:
        if item.success:
            continue
        config = item.expectation_config
        details = item.result or {}
        error = _exception_message(item.exception_info)
        if error:  # GX reports a missing column as an exception on the expectation
            details = {"observed_value": error}
        failures.append(
            FailedExpectation(
                expectation=config.type,
                column=config.kwargs.get("column"),
                kwargs={k: v for k, v in config.kwargs.items() if k != "batch_id"},
                unexpected_count=details.get("unexpected_count"),
                unexpected_percent=details.get("unexpected_percent"),
                observed=details.get("observed_value"),
                examples=list(details.get("partial_unexpected_list") or []),
            )
        )
    return ValidationReport(
        suite=name,
        suite_sha256=digest,
        batch=batch,
        rows=len(frame),
        evaluated=len(result.results),
        failures=failures,
        result=result.to_json_dict(),
    )


def _path_part(text: str) -> str:
    """A batch name as one safe path segment of the docs site."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "batch"


def render_data_docs(report: ValidationReport, out_dir: Path) -> Path | None:
    """Write GX's Data Docs site for one validation into `out_dir`; return the result's page.

    Returns None when there is no GX result to render: a batch rejected on its row count
    before GX ran. The site (index, static assets, one validation page) is GX's own
    SiteBuilder output; nothing is kept in the in-memory context afterwards.
    """
    if "results" not in report.result:
        return None
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResultSchema,
    )
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    out_dir = Path(out_dir).resolve()
    result = ExpectationSuiteValidationResultSchema().load(report.result)
    run_id = RunIdentifier(run_name=_path_part(report.batch), run_time=datetime.now(UTC))
    result.meta["run_id"] = run_id  # the page header shows the run name and time from here
    key = ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=report.suite),
        run_id=run_id,
        batch_identifier=_path_part(report.batch),
    )
    site = f"mlops-{uuid.uuid4().hex[:12]}"
    site_config = {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(out_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    with _GX_LOCK:
        context = _gx_context()
        context.add_data_docs_site(site, site_config)
        try:
            context.validation_results_store.set(key, result)
            context.build_data_docs(site_names=[site], resource_identifiers=[key])
            urls = context.get_docs_sites_urls(resource_identifier=key, site_names=[site])
        finally:
            # the shared context lives as long as the process: leave nothing behind in it
            context.validation_results_store.remove_key(key)
            context.delete_data_docs_site(site)
    # GX ships 3 MB of tutorial animations that no validation page shows.
    for gif in (out_dir / "static" / "images").glob("*.gif"):
        gif.unlink()
    page = next((u["site_url"] for u in urls if u.get("site_url")), None)
    if not page:
        return None
    path = Path(unquote(urlparse(page).path))  # GX hands back a file:// URL
    return path if path.is_file() else None
