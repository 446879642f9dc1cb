"""Task kinds: each kind's labels, metrics, baselines, estimator checks and the paired
bootstrap of any metric, on constructed data (no server)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from mlops.config import CandidateConfig, TargetConfig, load_config
from mlops.errors import BadBatchError, ConfigError
from mlops.objective import Objective
from tasks.features import label_rows
from tasks.gates import bootstrap_counts, compare_with_bootstrap, resampled_metric
from tasks.train import estimator_class

CLASSES = ("on_time", "late", "very_late")  # deliberately not in sorted order


def _multiclass(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.asarray(CLASSES, dtype=object)[rng.integers(0, 3, rows)]
    proba = rng.dirichlet(np.ones(3), rows)
    proba[np.arange(rows), [CLASSES.index(v) for v in y]] += 0.5  # some skill
    return y, proba / proba.sum(axis=1, keepdims=True)


def test_multiclass_metrics_match_sklearn_whatever_the_class_order() -> None:
    y, proba = _multiclass(500, 0)
    objective = Objective("multiclass", "log_loss", classes=CLASSES)
    got = objective.evaluate(y, proba, CLASSES)
    order = sorted(range(3), key=lambda i: CLASSES[i])  # sklearn's own column order
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba[:, order], labels=sorted(CLASSES)))
    predicted = np.asarray(CLASSES, dtype=object)[proba.argmax(axis=1)]
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
    assert got["macro_f1"] == pytest.approx(skm.f1_score(y, predicted, average="macro"))
    assert 0.5 < got["roc_auc_ovr"] < 1


def test_regression_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(10, 5, 400)
    predicted = y + rng.normal(0, 2, 400)
    got = Objective("regression", "rmse").evaluate(y, predicted)
    assert got["rmse"] == pytest.approx(skm.root_mean_squared_error(y, predicted))
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, predicted))
    assert got["r2"] == pytest.approx(skm.r2_score(y, predicted))
    assert got["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y, predicted))


@pytest.mark.parametrize(
    ("kind", "metric"),
    [
        ("regression", "rmse"),
        ("regression", "mae"),
        ("regression", "r2"),
        ("multiclass", "log_loss"),
        ("multiclass", "accuracy"),
        ("multiclass", "macro_f1"),
        ("binary", "roc_auc"),
        ("binary", "brier"),
    ],
)
def test_resampled_metric_equals_the_weighted_metric(kind: str, metric: str) -> None:
    """The vectorised resamples give what scikit-learn gives with the counts as weights."""
    rng = np.random.default_rng(2)
    if kind == "regression":
        y = rng.normal(0, 3, 300)
        prediction = y + rng.normal(0, 1, 300)
        classes = None
    elif kind == "multiclass":
        y, prediction = _multiclass(300, 3)
        classes = CLASSES
    else:
        prediction = rng.random(300)
        y = (rng.random(300) < prediction).astype(int)
        classes = None
    objective = Objective(kind, metric, classes=classes)  # type: ignore[arg-type]
    counts = bootstrap_counts(np.random.default_rng(4), len(y), 5).astype(float)
    expected = [objective.score(metric, y, prediction, classes, weights=c) for c in counts]
    np.testing.assert_allclose(
        resampled_metric(objective, y, prediction, classes)(counts), expected, rtol=1e-9
    )


def test_lower_rmse_is_a_gain_and_the_interval_sees_a_clear_one() -> None:
    rng = np.random.default_rng(5)
    y = rng.normal(0, 10, 2000)
    better, worse = y + rng.normal(0, 2, 2000), y + rng.normal(0, 6, 2000)
    objective = Objective("regression", "rmse")
    comparison = compare_with_bootstrap(objective, y, better, worse, 300, 0.95, seed=0)
    assert comparison.gain == pytest.approx(comparison.champion_value - comparison.challenger_value)
    assert 0 < comparison.ci_low < comparison.gain < comparison.ci_high
    reverse = compare_with_bootstrap(objective, y, worse, better, 300, 0.95, seed=0)
    assert reverse.ci_high < 0


def test_labels_per_kind() -> None:
    frame = pd.DataFrame({"delay": [-5.0, 20.0, 90.0, np.nan, 14.99, 60.0]})
    binned = TargetConfig(kind="multiclass", column="delay", bins=[15, 60], classes=list(CLASSES))
    labelled, unlabelled = label_rows(frame, binned)
    assert unlabelled == 1
    assert labelled["label"].tolist() == ["on_time", "late", "very_late", "on_time", "very_late"]
    numbers, _ = label_rows(frame, TargetConfig(kind="regression", column="delay"))
    assert numbers["label"].dtype == np.float64 and numbers["label"].tolist()[:3] == [-5.0, 20.0, 90.0]


def test_a_class_outside_classes_and_a_text_target_are_named() -> None:
    frame = pd.DataFrame({"grade": ["a", "b", "z"], "minutes": ["3", "four", "5"]})
    with pytest.raises(BadBatchError, match=r"classes \['z'\] that are not\s+in target.classes"):
        label_rows(frame, TargetConfig(kind="multiclass", column="grade", classes=["a", "b"]))
    with pytest.raises(BadBatchError, match=r"not numbers.*'four'"):
        label_rows(frame, TargetConfig(kind="regression", column="minutes"))


def test_target_settings_must_fit_the_kind() -> None:
    with pytest.raises(ValueError, match="needs op and value"):
        TargetConfig(kind="binary", column="x")
    with pytest.raises(ValueError, match="takes the column as is"):
        TargetConfig(kind="regression", column="x", op=">=", value=1)
    with pytest.raises(ValueError, match="one more class than edges"):
        TargetConfig(kind="multiclass", column="x", bins=[1, 2], classes=["a", "b"])


def test_a_metric_of_another_kind_is_a_config_error(tmp_path) -> None:
    text = (
        Path("examples/flights-regression/mlops.yaml").read_text().replace("metric: mae", "metric: roc_auc")
    )
    path = tmp_path / "examples" / "x" / "mlops.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(ConfigError, match="does not judge a regression target"):
        load_config(path)


@pytest.mark.parametrize(
    ("estimator", "kind", "message"),
    [
        ("sklearn.linear_model.Nope", "regression", "has no Nope"),
        ("nosuchlib.Model", "regression", "does not import"),
        ("sklearn.linear_model.LogisticRegression", "regression", "is not a regressor"),
        ("sklearn.linear_model.Ridge", "binary", "is not a classifier"),
        ("collections.OrderedDict", "binary", "not a scikit-learn-compatible estimator"),
        ("logistic_regression", "regression", "has no regressor"),
    ],
)
def test_an_estimator_that_does_not_fit_names_the_candidate(estimator: str, kind: str, message: str) -> None:
    candidate = CandidateConfig(name="mine", estimator=estimator)
    with pytest.raises(ConfigError, match=message) as raised:
        estimator_class(candidate, Objective(kind, "rmse" if kind == "regression" else "roc_auc"))  # type: ignore[arg-type]
    assert "'mine'" in str(raised.value)


def test_short_names_pick_the_model_of_the_kind() -> None:
    hgb = CandidateConfig(name="h", estimator="hist_gradient_boosting")
    assert estimator_class(hgb, Objective("regression", "rmse")).__name__ == "HistGradientBoostingRegressor"
    assert estimator_class(hgb, Objective("binary", "roc_auc")).__name__ == "HistGradientBoostingClassifier"
    path = CandidateConfig(name="l", estimator="lightgbm.LGBMRegressor")
    assert estimator_class(path, Objective("regression", "mae")).__name__ == "LGBMRegressor"
