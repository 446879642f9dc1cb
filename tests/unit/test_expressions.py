"""Derived-feature expressions: the allowed operations give pandas' own answers, and
anything else is refused when the config loads, naming the expression and the part."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops.config import FeaturesConfig
from mlops.errors import ConfigError
from mlops.expressions import ExpressionError, parse_expression

FRAME = pd.DataFrame(
    {
        "year": [2013, 2013, 2013, 2013],
        "plane_year": [2004.0, np.nan, 1999.0, 2013.0],
        "distance": [1400.0, 200.0, 17.0, 2475.0],
        "carrier": ["UA", " aa", "B6", "DL"],
        "time_hour": pd.to_datetime(
            ["2013-01-01 05:00", "2013-06-30 23:00", "2013-07-04 02:00", "2013-12-31 04:00"], utc=True
        ),
    }
)


@pytest.mark.parametrize(
    "text",
    [
        "year - plane_year",
        'time_hour.dt.tz_convert("America/New_York").dt.dayofweek',
        "time_hour.dt.hour * 60 + time_hour.dt.minute",
        "distance / 100 // 3 % 2 ** 2",
        "-distance + 1",
        "(distance > 300) & (distance <= 2000)",
        "100 < distance < 2000",
        "(distance < 100) | ~(year == 2013)",
        "log1p(distance) + sqrt(abs(-distance))",
        "carrier.str.strip().str.upper().str.len()",
    ],
)
def test_allowed_expressions_answer_as_pandas_eval_does(text: str) -> None:
    ours = parse_expression(text)(FRAME)
    theirs = FRAME.eval(text, engine="python") if "str." not in text and "log1p" not in text else None
    if theirs is None:  # pandas.eval has neither .str chains nor log1p: pandas directly
        theirs = (
            np.log1p(FRAME["distance"]) + np.sqrt(np.abs(-FRAME["distance"]))
            if "log1p" in text
            else FRAME["carrier"].str.strip().str.upper().str.len()
        )
    pd.testing.assert_series_equal(pd.Series(ours), pd.Series(theirs), check_names=False)


def test_the_columns_an_expression_reads_are_known_before_it_runs() -> None:
    assert parse_expression("year - plane_year").columns == ("year", "plane_year")
    assert parse_expression('time_hour.dt.tz_convert("UTC").dt.hour + time_hour.dt.day').columns == (
        "time_hour",
    )


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("__import__('os').system('true')", "this call"),
        ("year.__class__", "attribute '__class__'"),
        ("distance.apply(print)", "this call"),
        ("time_hour.dt.tz_convert(zone)", "without one time-zone name"),
        ("time_hour.dt.strftime('%Y')", "this call"),
        ("[year, year]", "list"),
        ("lambda: 1", "lambda"),
        ("year if year else 0", "ifexp"),
        ("abs(year, 2)", "abs() with 2 arguments"),
        ("year -", "does not parse"),
        ("carrier.str.cat(carrier)", "this call"),
    ],
)
def test_anything_else_is_refused_naming_the_part(text: str, named: str) -> None:
    with pytest.raises(ExpressionError, match=named.replace("(", r"\(").replace(")", r"\)")):
        parse_expression(text)


def test_the_config_refuses_an_expression_at_load_naming_it() -> None:
    with pytest.raises(ValueError, match=r"derived\.sneaky: .*__import__"):
        FeaturesConfig(numeric=["x"], derived={"sneaky": "__import__('os').getcwd()"})


def test_a_missing_column_is_a_config_error_at_training_naming_the_feature() -> None:
    from tasks.features import add_derived

    with pytest.raises(ConfigError, match=r"features\.derived\.age: .*'built'"):
        add_derived(FRAME, {"age": "year - built"})
