"""Snapshot → validated batch: run a Great Expectations suite from `expectations/`.

Row counts are checked before GX runs, because per-row expectations pass on an empty
table. A failure names each failed expectation with its counts and example values.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task

from mlops.errors import ConfigError

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no phoning home from a pipeline
_GX_LOCK = threading.Lock()  # the GX context is shared by validation tasks running in threads


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
            return f"{self.batch}: suite {self.suite!r} passed ({self.evaluated} expectations, {self.rows} rows)"
        lines = [f"{self.batch}: suite {self.suite!r} failed {len(self.failures)} of {self.evaluated} expectations"]
        lines += [f"  - {failure.describe()}" for failure in self.failures]
        return "\n".join(lines)

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
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    return context


def _min_rows(suite: dict[str, Any]) -> int:
    for exp in suite.get("expectations", []):
        if exp["type"] == "expect_table_row_count_to_be_between":
            return int(exp["kwargs"].get("min_value") or 1)
    return 1


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


def validate_frame(frame: pd.DataFrame, suite: dict[str, Any], batch: str) -> ValidationReport:
    """Run one suite on one table and return every failure, plainly described."""
    import great_expectations as gx

    name = suite["name"]
    digest = hashlib.sha256(json.dumps(suite, sort_keys=True).encode()).hexdigest()
    min_rows = _min_rows(suite)
    if len(frame) < min_rows:
        failure = FailedExpectation(
            "expect_table_row_count_to_be_between", None, {"min_value": min_rows}, observed=len(frame)
        )
        return ValidationReport(name, digest, batch, len(frame), 1, [failure], {"success": False})

    gx_suite = gx.ExpectationSuite(
        name=name,
        expectations=[
            gx.expectations.registry.get_expectation_impl(exp["type"])(**exp["kwargs"])
            for exp in suite["expectations"]
        ],
    )
    with _GX_LOCK:
        context = _gx_context()
        source_name = f"batch-{uuid.uuid4().hex[:12]}"
        source = context.data_sources.add_pandas(source_name)
        try:
            asset = source.add_dataframe_asset(name=batch)
            batch_def = asset.add_batch_definition_whole_dataframe("whole")
            gx_batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
            result = gx_batch.validate(
                gx_suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": 10}
            )
        finally:
            context.data_sources.delete(source_name)

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


@task(task_run_name="validate {batch}")
def validate_batch(frame: pd.DataFrame, suite: dict[str, Any], batch: str) -> ValidationReport:
    return validate_frame(frame, suite, batch)
