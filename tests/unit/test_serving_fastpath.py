"""The compiled fast path scores exactly as the pipeline does, or is not used."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from mlops.config import FeaturesConfig
from serving.fastpath import compile_scorer
from serving.schema import FeatureSchema
from tasks.features import build_preprocessor

FEATURES = FeaturesConfig(numeric=["distance", "temp", "wind"], categorical=["carrier", "origin"])
SCHEMA = FeatureSchema(FEATURES)


def frame(rows: int, seed: int) -> pd.DataFrame:
    """Mixed rows with missing values and, past the first 60 carriers, rare ones."""
    rng = np.random.default_rng(seed)
    carriers = np.array([f"C{i}" for i in range(300)], dtype=object)  # over max_categories=250
    data = pd.DataFrame(
        {
            "distance": rng.uniform(100, 3000, rows),
            "temp": rng.normal(15, 10, rows),
            "wind": rng.exponential(8, rows),
            "carrier": carriers[np.minimum(rng.geometric(0.03, rows), 299)],
            "origin": rng.choice(np.array(["EWR", "JFK", "LGA"], dtype=object), rows),
        }
    )
    for column in data.columns:
        data.loc[rng.random(rows) < 0.05, column] = np.nan
    return SCHEMA.conform(data)


def label(data: pd.DataFrame, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    signal = np.nan_to_num(data["temp"].to_numpy()) / 10 + (data["origin"] == "JFK").to_numpy()
    return (signal + rng.normal(0, 1, len(data)) > 1.5).astype(int)


TRAIN = frame(3000, 0)
Y = label(TRAIN, 1)


def fitted(classifier: object, encoding: str = "ordinal") -> Pipeline:
    pipeline = Pipeline(
        [("features", build_preprocessor(FEATURES, encoding)), ("classifier", clone(classifier))]
    )
    return pipeline.fit(TRAIN, Y)


def columns(data: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: data[c].to_numpy() for c in data.columns}


TREE_MODELS = {
    "random forest": RandomForestClassifier(n_estimators=25, min_samples_leaf=5, random_state=0),
    "extra trees": ExtraTreesClassifier(n_estimators=25, min_samples_leaf=5, random_state=0),
    "histogram gradient boosting": HistGradientBoostingClassifier(max_iter=40, random_state=0),
}


@pytest.mark.parametrize("name", TREE_MODELS)
def test_the_fast_path_equals_predict_proba_on_new_rows(name: str) -> None:
    pipeline = fitted(TREE_MODELS[name])
    score = compile_scorer(pipeline, 1, SCHEMA.probe_rows(TRAIN.head(5)))
    assert score is not None, f"the {name} pipeline was not compiled"

    fresh = frame(2000, 7)
    fresh.loc[:40, "carrier"] = "never seen"  # unseen categories
    fresh.loc[41:60, "origin"] = np.nan
    for rows in (fresh.head(1), fresh.head(16), fresh):
        assert np.array_equal(score(columns(rows)), pipeline.predict_proba(rows)[:, 1])


def test_the_positive_column_is_the_one_asked_for() -> None:
    pipeline = fitted(TREE_MODELS["random forest"])
    score = compile_scorer(pipeline, 0, SCHEMA.probe_rows(None))
    assert score is not None
    rows = frame(50, 3)
    assert np.array_equal(score(columns(rows)), pipeline.predict_proba(rows)[:, 0])


def test_other_pipelines_keep_the_plain_path() -> None:
    one_hot = fitted(LogisticRegression(max_iter=200), encoding="onehot")  # imputer, scaler, one-hot
    assert compile_scorer(one_hot, 1, SCHEMA.probe_rows(None)) is None

    class ShiftedEncoder(OrdinalEncoder):  # a subclass may change anything: not compiled
        def transform(self, X: pd.DataFrame) -> np.ndarray:
            return super().transform(X) + 1

    custom = fitted(TREE_MODELS["random forest"])
    encoder = custom.steps[0][1].named_transformers_["categorical"]
    encoder.__class__ = ShiftedEncoder
    assert compile_scorer(custom, 1, SCHEMA.probe_rows(None)) is None


def test_a_number_beyond_float32_is_refused_as_the_pipeline_refuses_it() -> None:
    pipeline = fitted(TREE_MODELS["random forest"])
    score = compile_scorer(pipeline, 1, SCHEMA.probe_rows(None))
    assert score is not None
    rows = frame(3, 5)
    rows.loc[1, "distance"] = 1e300
    with pytest.raises(ValueError, match="too large") as ours:
        score(columns(rows))
    with pytest.raises(ValueError, match="too large") as theirs:
        pipeline.predict_proba(rows)
    assert str(ours.value) in str(theirs.value)
