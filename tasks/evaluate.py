"""Model → evidence: holdout metrics and the plots a reviewer looks at (ROC, PR,
confusion matrix, calibration, permutation importance), rendered as PNG bytes so
they travel with the result and can be logged anywhere.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

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
    RocCurveDisplay,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline


@dataclass
class Evaluation:
    metrics: dict[str, float]
    plots: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG
    importance: dict[str, float] = field(default_factory=dict)  # feature -> mean AUC drop


def classification_metrics(y: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = (proba >= threshold).astype(int)
    return {
        "roc_auc": float(roc_auc_score(y, proba)),
        "pr_auc": float(average_precision_score(y, proba)),
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "log_loss": float(log_loss(y, proba, labels=[0, 1])),
        "brier": float(brier_score_loss(y, proba)),
        "positive_rate": float(np.mean(y)),
        "rows": float(len(y)),
    }


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def evaluation_plots(
    name: str, y: np.ndarray, proba: np.ndarray, threshold: float, importance: dict[str, float]
) -> dict[str, bytes]:
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

    if importance:
        ordered = sorted(importance.items(), key=lambda kv: kv[1])
        fig, ax = plt.subplots(figsize=(6, 0.25 * len(ordered) + 1))
        ax.barh([k for k, _ in ordered], [v for _, v in ordered])
        ax.set_xlabel("mean drop in ROC-AUC when shuffled")
        ax.set_title(f"{name}: permutation importance (holdout)")
        plots["permutation_importance.png"] = _png(fig)
    return plots


def feature_importance(
    pipeline: Pipeline, X: pd.DataFrame, y: pd.Series, rows: int, repeats: int, seed: int
) -> dict[str, float]:
    """Permutation importance on raw input columns, over a seeded subsample of the holdout."""
    if len(X) > rows:
        X = X.sample(n=rows, random_state=seed)
        y = y.loc[X.index]
    result = permutation_importance(
        pipeline, X, y, scoring="roc_auc", n_repeats=repeats, random_state=seed, n_jobs=1
    )
    return {col: float(v) for col, v in zip(X.columns, result.importances_mean, strict=True)}


def evaluate_model(
    name: str,
    pipeline: Pipeline,
    X: pd.DataFrame,
    y: pd.Series,
    threshold: float,
    importance_rows: int,
    importance_repeats: int,
    seed: int,
) -> Evaluation:
    proba = pipeline.predict_proba(X)[:, 1]
    y_true = y.to_numpy()
    metrics = classification_metrics(y_true, proba, threshold)
    importance = feature_importance(pipeline, X, y, importance_rows, importance_repeats, seed)
    plots = evaluation_plots(name, y_true, proba, threshold, importance)
    return Evaluation(metrics=metrics, plots=plots, importance=importance)
