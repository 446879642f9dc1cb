"""What a model is asked to do, and how it is judged: the one module that knows the task kind.

A binary model answers the probability of the positive class (and 0/1 at the threshold), a
multiclass model one probability per class (and the likeliest class), a regression model a
number. Training, the gates, monitoring and serving all ask an `Objective` for the model's
output and for its metrics, so none of them branches on the kind itself.

`prediction` below is the model's raw answer for a batch of rows: a 1-D array of positive-class
probabilities (binary), an (n, classes) array of probabilities in `Objective.classes` order
(multiclass), or a 1-D array of values (regression).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from mlops.config import TASK_METRICS, ProjectConfig, TaskKind
from mlops.errors import BadBatchError, PromotionError

# Config metric name -> scikit-learn scorer for cross-validation (losses negated: higher is better).
SCORERS: dict[str, str] = {
    "roc_auc": "roc_auc",
    "pr_auc": "average_precision",
    "log_loss": "neg_log_loss",
    "brier": "neg_brier_score",
    "f1": "f1",
    "accuracy": "accuracy",
    "macro_f1": "f1_macro",
    "roc_auc_ovr": "roc_auc_ovr",
    "rmse": "neg_root_mean_squared_error",
    "mae": "neg_mean_absolute_error",
    "r2": "r2",
    "mape": "neg_mean_absolute_percentage_error",
}
# Metrics that need both a positive and a negative (or two classes) among the rows.
NEEDS_TWO_CLASSES = {"roc_auc", "pr_auc", "roc_auc_ovr", "log_loss", "brier", "f1", "macro_f1"}
# Shown in the MLflow UI and the leaderboard beside the selection metric.
HEADLINE: dict[str, list[str]] = {
    "binary": ["roc_auc", "pr_auc", "f1", "brier"],
    "multiclass": ["log_loss", "macro_f1", "accuracy", "roc_auc_ovr"],
    "regression": ["rmse", "mae", "r2", "mape"],
}
NAMES = {
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
    "log_loss": "log loss",
    "brier": "Brier score",
    "f1": "F1",
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "roc_auc_ovr": "one-vs-rest ROC-AUC",
    "rmse": "RMSE",
    "mae": "MAE",
    "r2": "R²",
    "mape": "MAPE",
}


@dataclass(frozen=True)
class Objective:
    kind: TaskKind
    metric: str  # selects the candidate, and judges it in the gates and in monitoring
    threshold: float = 0.5  # binary: the probability that makes a positive label
    classes: tuple[Any, ...] | None = None  # multiclass: the classes in answer order, if configured

    @classmethod
    def of(cls, config: ProjectConfig) -> Objective:
        classes = tuple(config.target.classes) if config.target.classes else None
        return cls(config.target.kind, config.training.metric, config.training.threshold, classes)

    # -- the metric's direction --------------------------------------------------------
    @property
    def higher_is_better(self) -> bool:
        return TASK_METRICS[self.kind][self.metric]

    @property
    def metric_name(self) -> str:
        return NAMES.get(self.metric, self.metric)

    @property
    def scorer(self) -> str:
        return SCORERS[self.metric]

    def gain(self, new: float, old: float) -> float:
        """How much better `new` is than `old` in the metric: positive when better."""
        return new - old if self.higher_is_better else old - new

    @property
    def is_classifier(self) -> bool:
        return self.kind != "regression"

    # -- the model's answer ------------------------------------------------------------
    def model_classes(self, *models: Any) -> tuple[Any, ...]:
        """The order of a multiclass answer: the configured classes, else those the models learnt."""
        if self.classes is not None:
            return self.classes
        learnt: set[Any] = set()
        for model in models:
            learnt |= set(np.asarray(model.classes_).tolist())
        return tuple(sorted(learnt, key=str))

    def predict(self, model: Any, X: pd.DataFrame, classes: Sequence[Any] | None = None) -> np.ndarray:
        """The model's answer for each row (see the module docstring for its shape)."""
        if self.kind == "regression":
            return np.asarray(model.predict(X), dtype=np.float64)
        learnt = list(np.asarray(model.classes_).tolist())
        proba = model.predict_proba(X)
        if self.kind == "binary":
            if 1 not in learnt:
                raise PromotionError(f"the model predicts classes {learnt}, not the 0/1 label")
            return proba[:, learnt.index(1)]
        order = list(classes if classes is not None else self.model_classes(model))
        out = np.zeros((len(X), len(order)))
        for i, c in enumerate(order):  # a class the model never saw has probability 0
            if c in learnt:
                out[:, i] = proba[:, learnt.index(c)]
        return out

    def labels(self, prediction: np.ndarray, classes: Sequence[Any] | None = None) -> np.ndarray | None:
        """The answer as a label: 0/1 at the threshold, the likeliest class, or None (regression)."""
        if self.kind == "binary":
            return (prediction >= self.threshold).astype(np.int8)
        if self.kind == "multiclass":
            order = np.asarray(list(classes if classes is not None else self.classes or ()), dtype=object)
            return order[np.argmax(prediction, axis=1)]
        return None

    def score_of(self, prediction: np.ndarray) -> np.ndarray:
        """One number per row, what the prediction log keeps and prediction drift compares:
        the positive-class probability, the value, or the probability of the likeliest class."""
        return prediction.max(axis=1) if prediction.ndim == 2 else prediction

    # -- metrics -----------------------------------------------------------------------
    def evaluate(self, y: np.ndarray, prediction: np.ndarray, classes: Sequence[Any] | None = None) -> dict:
        """Every metric of the kind on these rows (and `rows`; binary adds its positive rate)."""
        y = np.asarray(y)
        names = TASK_METRICS[self.kind]
        out = {m: self.score(m, y, prediction, classes) for m in names}
        if self.kind == "binary":
            predicted = (prediction >= self.threshold).astype(int)
            out["precision"] = float(skm.precision_score(y, predicted, zero_division=0))
            out["recall"] = float(skm.recall_score(y, predicted, zero_division=0))
            out["positive_rate"] = float(np.mean(y))
        out["rows"] = float(len(y))
        return out

    def score(
        self,
        metric: str,
        y: np.ndarray,
        prediction: np.ndarray,
        classes: Sequence[Any] | None = None,
        weights: np.ndarray | None = None,
    ) -> float:
        """One metric on these rows (NaN where it is undefined, e.g. ROC-AUC of one class)."""
        fn = METRIC_FUNCTIONS[metric]
        try:
            return float(fn(self, np.asarray(y), prediction, classes, weights))
        except ValueError:
            return float("nan")

    def require_scorable(self, y: np.ndarray, what: str) -> None:
        """Refuse rows the metric cannot judge: one class only, or nothing at all."""
        if len(y) == 0:
            raise BadBatchError(f"{what} has no labelled rows")
        if self.metric in NEEDS_TWO_CLASSES and len(pd.unique(np.asarray(y))) < 2:
            raise BadBatchError(
                f"{what} has {len(y)} labelled rows of one class only: {self.metric_name} is undefined"
            )


# Binary ROC-AUC: what a model logged before target kinds existed is judged by.
BINARY = Objective("binary", "roc_auc")


def _order(objective: Objective, prediction: np.ndarray, classes: Sequence[Any] | None) -> list[Any]:
    order = list(classes if classes is not None else objective.classes or ())
    if len(order) != prediction.shape[1]:
        raise ValueError("multiclass metrics need the class order of the probabilities")
    return order


def _multiclass_labels(objective: Objective, prediction: np.ndarray, classes: Any) -> np.ndarray:
    return np.asarray(_order(objective, prediction, classes), dtype=object)[np.argmax(prediction, axis=1)]


def _binary_labels(objective: Objective, prediction: np.ndarray) -> np.ndarray:
    return (prediction >= objective.threshold).astype(int)


def _predicted_labels(objective: Objective, prediction: np.ndarray, classes: Any) -> np.ndarray:
    if objective.kind == "multiclass":
        return _multiclass_labels(objective, prediction, classes)
    return _binary_labels(objective, prediction)


def _log_loss(o: Objective, y: np.ndarray, p: np.ndarray, classes: Any, w: Any) -> float:
    if o.kind == "binary":
        return skm.log_loss(y, p, labels=[0, 1], sample_weight=w)
    order = _order(o, p, classes)
    clipped = np.clip(p, 1e-15, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    # scikit-learn reads the columns in sorted label order, whatever order `labels` lists
    by_label = sorted(range(len(order)), key=lambda i: order[i])
    return skm.log_loss(y, clipped[:, by_label], labels=[order[i] for i in by_label], sample_weight=w)


def _roc_auc_ovr(o: Objective, y: np.ndarray, p: np.ndarray, classes: Any, w: Any) -> float:
    order = _order(o, p, classes)
    present = [i for i, c in enumerate(order) if c in set(y.tolist())]
    if len(present) < 2:
        raise ValueError("one class only")
    # Per present class, its probability against the rest; classes absent from y have no curve.
    scores = [skm.roc_auc_score(y == order[i], p[:, i], sample_weight=w) for i in present]
    return float(np.mean(scores))


def _mape(o: Objective, y: np.ndarray, p: np.ndarray, classes: Any, w: Any) -> float:
    nonzero = y != 0  # undefined where the truth is 0: those rows are left out
    if not nonzero.any():
        raise ValueError("every target is 0")
    weights = None if w is None else w[nonzero]
    return skm.mean_absolute_percentage_error(y[nonzero], p[nonzero], sample_weight=weights)


MetricFunction = Callable[[Objective, np.ndarray, np.ndarray, Any, Any], float]
METRIC_FUNCTIONS: dict[str, MetricFunction] = {
    "roc_auc": lambda o, y, p, c, w: skm.roc_auc_score(y, p, sample_weight=w),
    "pr_auc": lambda o, y, p, c, w: skm.average_precision_score(y, p, sample_weight=w),
    "brier": lambda o, y, p, c, w: skm.brier_score_loss(y, p, sample_weight=w),
    "log_loss": _log_loss,
    "f1": lambda o, y, p, c, w: skm.f1_score(y, _binary_labels(o, p), zero_division=0, sample_weight=w),
    "accuracy": lambda o, y, p, c, w: skm.accuracy_score(y, _predicted_labels(o, p, c), sample_weight=w),
    "macro_f1": lambda o, y, p, c, w: skm.f1_score(
        y, _multiclass_labels(o, p, c), average="macro", zero_division=0, sample_weight=w
    ),
    "roc_auc_ovr": _roc_auc_ovr,
    "rmse": lambda o, y, p, c, w: skm.root_mean_squared_error(y, p, sample_weight=w),
    "mae": lambda o, y, p, c, w: skm.mean_absolute_error(y, p, sample_weight=w),
    "r2": lambda o, y, p, c, w: skm.r2_score(y, p, sample_weight=w),
    "mape": _mape,
}


def row_losses(objective: Objective, metric: str, y: np.ndarray, prediction: np.ndarray, classes: Any):
    """For a metric that is a mean over rows (after a final transform): each row's term and the
    transform, so that a weighted resample's metric is `transform(weights @ terms / weights.sum())`.
    None for the metrics that are not (ROC-AUC, F1, R², ...)."""
    y = np.asarray(y)
    identity = lambda v: v  # noqa: E731
    if metric == "mae":
        return np.abs(y - prediction), identity
    if metric == "rmse":
        return (y - prediction) ** 2, np.sqrt
    if metric == "mape":
        if (y == 0).any():
            return None
        return np.abs(y - prediction) / np.abs(y), identity
    if metric == "brier":
        return (y - prediction) ** 2, identity
    if metric == "accuracy":
        return (_predicted_labels(objective, prediction, classes) == y).astype(float), identity
    if metric == "log_loss":
        if objective.kind == "binary":
            p = np.clip(prediction, 1e-15, 1 - 1e-15)
            return -(y * np.log(p) + (1 - y) * np.log(1 - p)), identity
        order = _order(objective, prediction, classes)
        index = {c: i for i, c in enumerate(order)}
        if not set(y.tolist()) <= set(index):
            return None
        rows = np.arange(len(y))
        clipped = np.clip(prediction, 1e-15, 1.0)
        clipped = clipped / clipped.sum(axis=1, keepdims=True)
        return -np.log(clipped[rows, [index[v] for v in y.tolist()]]), identity
    return None
