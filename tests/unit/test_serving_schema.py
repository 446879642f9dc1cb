"""The request contract: what /predict accepts, how it says what is wrong, and the frame it builds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from mlops.config import FeaturesConfig
from mlops.errors import ConfigError
from serving.samples import to_arrow_stream, to_dataframe_split
from serving.schema import ARROW_STREAM, FeatureSchema, InputError

FEATURES = FeaturesConfig(numeric=["distance", "temp"], categorical=["carrier", "origin"])
GOOD = {"distance": 1400.0, "temp": 21.5, "carrier": "UA", "origin": "EWR"}


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return FeatureSchema(FEATURES)


def body(payload: object) -> bytes:
    return json.dumps(payload).encode()


ACCEPTED = {
    "wrapped": body({"records": [GOOD]}),
    "bare list": body([GOOD, GOOD]),
    "nulls": body([{**GOOD, "temp": None, "carrier": None}]),
    "integer for a float": body([{**GOOD, "distance": 1400}]),
    "unseen category": body([{**GOOD, "carrier": "ZZ-never-seen"}]),
    "with a key": body([{**GOOD, "key": "2013|6|1|UA|1545|515|EWR"}]),
}
# name -> (body, status, text the message must contain)
REFUSED = {
    "malformed JSON": (b'{"records": [', 400, "not valid JSON"),
    "trailing garbage": (body([GOOD]) + b" x", 400, "not valid JSON"),
    "not UTF-8": (b'[{"carrier": "\xff"}]', 400, "not valid JSON"),
    "missing field": (
        body({"records": [{k: v for k, v in GOOD.items() if k != "temp"}]}),
        422,
        "records.0.temp: Field required",
    ),
    "string for a number": (body([{**GOOD, "temp": "21.5"}]), 422, "temp: Input should be a valid number"),
    "bool for a number": (body([{**GOOD, "temp": True}]), 422, "temp: Input should be a valid number"),
    "number for a string": (body([{**GOOD, "carrier": 7}]), 422, "carrier: Input should be a valid string"),
    "NaN": (body([GOOD]).replace(b"21.5", b"NaN"), 422, "temp: Input should be a finite number"),
    "Infinity": (body([GOOD]).replace(b"21.5", b"-Infinity"), 422, "temp: Input should be a finite number"),
    "overflow": (body([GOOD]).replace(b"21.5", b"1e999"), 422, "temp: Input should be a finite number"),
    "extra field": (body([{**GOOD, "tailnum": "N14228"}]), 422, "tailnum: Extra inputs are not permitted"),
    "extra top-level field": (body({"records": [GOOD], "x": 1}), 422, "x: Extra inputs are not permitted"),
    "empty list": (body({"records": []}), 422, "at least one"),
    "empty bare list": (body([]), 422, "at least one"),
    "records not a list": (body({"records": GOOD}), 422, "records: Input should be a valid"),
    "record not an object": (body([[1400.0, 21.5, "UA", "EWR"]]), 422, "0: Input should be an object"),
    "a string body": (body("hello"), 422, "Input should be"),
    "numeric key": (body([{**GOOD, "key": 5}]), 422, "key: Input should be a valid string"),
    "empty body": (b"", 400, "not valid JSON"),
}


@pytest.mark.parametrize("name", ACCEPTED)
def test_accepted_by_both_validators(schema: FeatureSchema, name: str) -> None:
    raw = ACCEPTED[name]
    parsed = schema.parse(raw, max_records=10)
    adapter = schema.contract.bare_adapter if raw.startswith(b"[") else schema.contract.wrapped_adapter
    adapter.validate_json(raw)  # the pydantic model agrees: no ValidationError
    assert len(parsed) >= 1


@pytest.mark.parametrize("name", REFUSED)
def test_refused_with_the_field_and_the_reason(schema: FeatureSchema, name: str) -> None:
    raw, status, text = REFUSED[name]
    with pytest.raises(InputError) as caught:
        schema.parse(raw, max_records=10)
    assert caught.value.status == status, caught.value.message
    assert text in caught.value.message
    if status == 422 and "at least one" not in text:
        # The field-by-field report is the pydantic model's own verdict.
        adapter = (
            schema.contract.bare_adapter if raw.lstrip().startswith(b"[") else schema.contract.wrapped_adapter
        )
        with pytest.raises(ValidationError):
            adapter.validate_json(raw)
        assert caught.value.errors and caught.value.errors[0]["loc"][0] == "body"


def test_too_many_records_is_413(schema: FeatureSchema) -> None:
    with pytest.raises(InputError) as caught:
        schema.parse(body([GOOD] * 11), max_records=10)
    assert caught.value.status == 413 and "serving.max_records" in caught.value.message


def test_errors_are_capped_on_a_large_bad_batch(schema: FeatureSchema) -> None:
    with pytest.raises(InputError) as caught:
        schema.parse(body([{"distance": "x"}] * 500), max_records=1000)
    assert len(caught.value.errors) == 20
    assert "more" in caught.value.message


def test_frame_has_training_dtypes_and_nan_for_missing(schema: FeatureSchema) -> None:
    parsed = schema.parse(
        body([{**GOOD, "distance": 1400, "key": "k1"}, {**GOOD, "temp": None, "origin": None}]), 10
    )
    frame, keys = schema.to_frame(parsed.records)
    assert list(frame.columns) == ["distance", "temp", "carrier", "origin"]
    assert frame["distance"].dtype == np.float64 and frame["temp"].dtype == np.float64
    assert frame["carrier"].dtype == object
    assert frame.loc[0, "distance"] == 1400.0
    assert np.isnan(frame.loc[1, "temp"])
    # A missing category is NaN, as in the training frame, not None.
    assert isinstance(frame.loc[1, "origin"], float) and np.isnan(frame.loc[1, "origin"])
    assert keys == ["k1", None]


def test_missing_row_is_one_row_of_all_missing(schema: FeatureSchema) -> None:
    row = schema.missing_row()
    assert row.shape == (1, 4) and row.isna().all().all()


def test_openapi_schema_lists_every_feature(schema: FeatureSchema) -> None:
    body_schema, definitions = schema.openapi_request_schema("#/components/schemas/{model}")
    record = definitions["Record"]
    assert set(record["properties"]) == {"distance", "temp", "carrier", "origin", "key"}
    assert set(record["required"]) == {"distance", "temp", "carrier", "origin"}
    assert record["additionalProperties"] is False
    # {"records": [...]}, a bare list, or MLflow's {"dataframe_split": {...}}
    assert [f.get("$ref", f.get("type")) for f in body_schema["anyOf"]] == [
        "#/components/schemas/PredictRequest",
        "array",
        "#/components/schemas/DataframeSplitRequest",
    ]
    split = definitions["DataframeSplit"]
    assert set(split["required"]) == {"columns", "data"} and split["additionalProperties"] is False


def test_a_feature_named_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="reserves"):
        FeatureSchema(FeaturesConfig(numeric=["key"], categorical=[]))


def test_conform_gives_a_logged_example_the_service_types(schema: FeatureSchema) -> None:
    import pandas as pd

    example = pd.DataFrame(
        {"distance": [1400, None], "temp": [21.5, 3], "carrier": ["UA", None], "origin": [None, "EWR"]}
    )
    frame = schema.conform(example)
    assert list(frame.columns) == ["distance", "temp", "carrier", "origin"]
    assert (frame.dtypes[["distance", "temp"]] == np.float64).all()
    assert frame["carrier"].dtype == object and isinstance(frame.loc[1, "carrier"], float)


# -- the columnar forms: MLflow's dataframe_split JSON and an Arrow IPC stream ---------------


COLUMNAR = ("dataframe_split", "arrow")


def parse_as(schema: FeatureSchema, form: str, records: list[dict], max_records: int = 10):
    if form == "arrow":
        return schema.parse(to_arrow_stream(records), max_records, ARROW_STREAM)
    return schema.parse(body(to_dataframe_split(records)), max_records, "application/json")


@pytest.mark.parametrize("form", COLUMNAR)
@pytest.mark.parametrize("name", ACCEPTED)
def test_a_columnar_form_gives_the_records_the_json_form_gives(
    schema: FeatureSchema, name: str, form: str
) -> None:
    decoded = json.loads(ACCEPTED[name])
    records = decoded["records"] if isinstance(decoded, dict) else decoded
    parsed, expected = parse_as(schema, form, records).records, schema.parse(ACCEPTED[name], 10).records
    assert list(parsed) == expected  # an Arrow block's records, one by one, too
    # ...and the columns the model is given are the same, value for value (an Arrow block
    # holds them already, never building the records).
    columns, keys = schema.to_columns(parsed)
    want, want_keys = schema.to_columns(expected)
    assert keys == want_keys and list(columns) == list(want)
    for name_, values in columns.items():
        assert values.dtype == want[name_].dtype
        assert pd.Series(values).equals(pd.Series(want[name_])), name_


# the records-form refusals a column can carry -> the field the columnar refusal names
COLUMNAR_REFUSED = {
    "missing field": ([{k: v for k, v in GOOD.items() if k != "temp"}], "'temp' is missing"),
    "string for a number": ([{**GOOD, "temp": "21.5"}], "temp"),
    "bool for a number": ([{**GOOD, "temp": True}], "temp"),
    "number for a string": ([{**GOOD, "carrier": 7}], "carrier"),
    "extra field": ([{**GOOD, "tailnum": "N14228"}], "'tailnum' is not a feature"),
    "numeric key": ([{**GOOD, "key": 5}], "key"),
}


@pytest.mark.parametrize("form", COLUMNAR)
@pytest.mark.parametrize("name", COLUMNAR_REFUSED)
def test_a_columnar_form_refuses_what_the_json_form_refuses(
    schema: FeatureSchema, name: str, form: str
) -> None:
    records, field = COLUMNAR_REFUSED[name]
    with pytest.raises(InputError):
        schema.parse(body(records), 10)  # the records form refuses it
    with pytest.raises(InputError) as caught:
        parse_as(schema, form, records)
    assert caught.value.status == 422, caught.value.message
    assert field in caught.value.message
    assert caught.value.errors and caught.value.errors[0]["loc"][0] == "body"


def test_a_columnar_form_refuses_nan_a_bad_stream_and_a_short_row(schema: FeatureSchema) -> None:
    with pytest.raises(InputError, match="temp: NaN or infinity") as caught:
        parse_as(schema, "arrow", [{**GOOD, "temp": float("nan")}])
    assert caught.value.status == 422
    with pytest.raises(InputError, match="not an Arrow IPC stream") as caught:
        schema.parse(b"not arrow", 10, ARROW_STREAM)
    assert caught.value.status == 400
    short = body({"dataframe_split": {"columns": list(GOOD), "data": [[1400.0, 21.5, "UA"]]}})
    with pytest.raises(InputError, match=r"dataframe_split.data.0: 3 values for 4 columns"):
        schema.parse(short, 10)
    with pytest.raises(InputError) as caught:
        parse_as(schema, "arrow", [GOOD] * 11)
    assert caught.value.status == 413
