"""Model → evidence: holdout metrics and the plots a reviewer looks at, by task kind
(binary: ROC, PR, confusion matrix, calibration; multiclass: confusion matrix, PR per class;
regression: predicted vs actual, residuals by time; all: permutation importance), rendered
as PNG bytes so they travel with the result and can be logged anywhere.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and workers

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.calibration import CalibrationDisplay
from sklearn.inspection import permutation_importance
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    PredictionErrorDisplay,
    RocCurveDisplay,
)
from sklearn.pipeline import Pipeline

from mlops.objective import Objective


@dataclass
class Evaluation:
    metrics: dict[str, float]
    plots: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG
    importance: dict[str, float] = field(default_factory=dict)  # feature -> mean metric loss when shuffled
    score_distribution: dict[str, list[float]] = field(default_factory=dict)  # see score_histogram


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def binary_plots(name: str, y: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, bytes]:
    plots: dict[str, bytes] = {}
    fig, ax = plt.subplots(figsize=(5, 4))
    RocCurveDisplay.from_predictions(y, proba, name=name, ax=ax, plot_chance_level=True)
    plots["roc_curve.png"] = _png(fig)

    fig, ax = plt.subplots(figsize=(5, 4))
    PrecisionRecallDisplay.from_predictions(y, proba, name=name, ax=ax, plot_chance_level=True)
    plots["pr_curve.png"] = _png(fig)

    fig, ax = plt.subplots(figsize=(4, 4))
    ConfusionMatrixDisplay.from_predictions(y, (proba >= threshold).astype(int), ax=ax, colorbar=False)
    ax.set_title(f"{name} @ threshold {threshold}")
    plots["confusion_matrix.png"] = _png(fig)

    fig, ax = plt.subplots(figsize=(5, 4))
    CalibrationDisplay.from_predictions(y, proba, n_bins=10, name=name, ax=ax)
    plots["calibration.png"] = _png(fig)
    return plots


def multiclass_plots(name: str, y: np.ndarray, proba: np.ndarray, classes: list[Any]) -> dict[str, bytes]:
    plots: dict[str, bytes] = {}
    predicted = np.asarray(classes, dtype=object)[np.argmax(proba, axis=1)]
    labels = [str(c) for c in classes]
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 3, 1.2 * len(classes) + 2))
    ConfusionMatrixDisplay.from_predictions(
        y.astype(str), predicted.astype(str), labels=labels, ax=ax, colorbar=False
    )
    ax.set_title(f"{name}: confusion matrix (holdout)")
    plots["confusion_matrix.png"] = _png(fig)

    fig, ax = plt.subplots(figsize=(5, 4))
    for i, c in enumerate(classes):  # one precision-recall curve per class against the rest
        if (y == c).any():
            PrecisionRecallDisplay.from_predictions(y == c, proba[:, i], name=str(c), ax=ax)
    ax.set_title(f"{name}: precision-recall per class")
    plots["pr_curve_per_class.png"] = _png(fig)
    return plots


def regression_plots(
    name: str, y: np.ndarray, predicted: np.ndarray, times: pd.Series | None
) -> dict[str, bytes]:
    plots: dict[str, bytes] = {}
    fig, ax = plt.subplots(figsize=(5, 5))
    PredictionErrorDisplay.from_predictions(
        y, predicted, kind="actual_vs_predicted", ax=ax, subsample=2000, random_state=0
    )
    ax.set_title(f"{name}: predicted vs actual (holdout)")
    plots["predicted_vs_actual.png"] = _png(fig)

    if times is not None and len(times) == len(y):
        frame = pd.DataFrame({"time": pd.to_datetime(times).to_numpy(), "residual": y - predicted})
        daily = frame.set_index("time")["residual"].resample("D").agg(["mean", "count"])
        daily = daily[daily["count"] > 0]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot(daily.index, daily["mean"], marker=".")
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_ylabel("mean residual (actual - predicted)")
        ax.set_title(f"{name}: residuals by day (holdout)")
        fig.autofmt_xdate()
        plots["residuals_by_time.png"] = _png(fig)
    return plots


def importance_plot(name: str, importance: dict[str, float], metric_name: str) -> bytes:
    ordered = sorted(importance.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(ordered) + 1))
    ax.barh([k for k, _ in ordered], [v for _, v in ordered])
    ax.set_xlabel(f"mean loss of {metric_name} when shuffled")
    ax.set_title(f"{name}: permutation importance (holdout)")
    return _png(fig)


def feature_importance(
    pipeline: Pipeline,
    X: pd.DataFrame,
    y: pd.Series,
    objective: Objective,
    rows: int,
    repeats: int,
    seed: int,
) -> dict[str, float]:
    """Permutation importance on raw input columns, over a seeded subsample of the holdout,
    in the task's metric (a loss is negated, so a larger number is a more important column)."""
    if len(X) > rows:
        X = X.sample(n=rows, random_state=seed)
        y = y.loc[X.index]
    result = permutation_importance(
        pipeline, X, y, scoring=objective.scorer, n_repeats=repeats, random_state=seed, n_jobs=1
    )
    return {col: float(v) for col, v in zip(X.columns, result.importances_mean, strict=True)}


def evaluate_model(
    name: str,
    pipeline: Pipeline,
    X: pd.DataFrame,
    y: pd.Series,
    objective: Objective,
    times: pd.Series | None,
    importance_rows: int,
    importance_repeats: int,
    seed: int,
) -> Evaluation:
    """The holdout metrics of the task's kind, its plots and permutation importance."""
    y_true = y.to_numpy()
    classes = list(objective.model_classes(pipeline)) if objective.kind == "multiclass" else None
    prediction = objective.predict(pipeline, X, classes)
    metrics = objective.evaluate(y_true, prediction, classes)
    if objective.kind == "binary":
        plots = binary_plots(name, y_true, prediction, objective.threshold)
    elif objective.kind == "multiclass":
        assert classes is not None
        plots = multiclass_plots(name, y_true, prediction, classes)
    else:
        plots = regression_plots(name, y_true, prediction, times)
    importance = feature_importance(pipeline, X, y, objective, importance_rows, importance_repeats, seed)
    if importance:
        plots["permutation_importance.png"] = importance_plot(name, importance, objective.metric_name)
    scores = objective.score_of(prediction)
    distribution = score_histogram(scores, (0.0, 1.0) if objective.is_classifier else None)
    return Evaluation(metrics=metrics, plots=plots, importance=importance, score_distribution=distribution)


def score_histogram(
    scores: np.ndarray, bounds: tuple[float, float] | None, bins: int = 40
) -> dict[str, list[float]]:
    """The holdout scores as a histogram (`edges`, `counts`): where the prediction page shows
    a new record's score falls. Probabilities over [0, 1]; values over their own range."""
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(finite, bins=bins, range=bounds)
    return {"edges": edges.tolist(), "counts": counts.astype(float).tolist()}
