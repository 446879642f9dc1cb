"""The web page's pieces: a submitted form as a record, the encoder's categories as the
choices, and the histogram with the record's score marked."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from serving.page import form_record, histogram_svg, known_categories
from tasks.evaluate import score_histogram


def test_a_form_becomes_a_record_with_numbers_and_missing_values() -> None:
    body = b"distance=1400.5&temp=&carrier=UA&origin=&key=k1&extra=x"
    record = form_record(body, ["distance", "temp"], ["carrier", "origin"])
    assert record == {"distance": 1400.5, "temp": None, "carrier": "UA", "origin": None, "key": "k1"}
    assert form_record(b"distance=far", ["distance"], [])["distance"] == "far"  # the schema names it


def test_the_choices_are_the_categories_the_encoder_learnt() -> None:
    frame = pd.DataFrame({"carrier": ["UA", "AA", "UA", "B6"], "distance": [1.0, 2.0, 3.0, 4.0]})
    pipeline = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("cat", OrdinalEncoder(), ["carrier"]), ("num", "passthrough", ["distance"])]
                ),
            ),
            ("model", RandomForestClassifier(n_estimators=2, random_state=0)),
        ]
    ).fit(frame, [0, 1, 0, 1])
    assert known_categories(pipeline) == {"carrier": ["AA", "B6", "UA"]}
    assert known_categories(object()) == {}


def test_the_histogram_marks_the_score() -> None:
    distribution = score_histogram(np.random.default_rng(0).uniform(size=1000), (0.0, 1.0), bins=10)
    assert len(distribution["counts"]) == 10 and sum(distribution["counts"]) == 1000
    svg = histogram_svg(distribution, 0.25)
    assert svg.count('class="bar"') == 10 and 'id="score-marker" x1="120.0"' in svg
    assert "No holdout score distribution" in histogram_svg(None, 0.5)
    assert score_histogram(np.array([np.nan]), None) == {"edges": [], "counts": []}
