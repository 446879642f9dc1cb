"""Features → model: fit each configured candidate with a hyperparameter search over
time-ordered folds, and pick the best one that beats the baselines.

Estimators come from an allow-list, not from arbitrary import paths in the config:
every class that can end up in a model is one that skops is told to trust.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import ClassifierMixin
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import RandomizedSearchCV, TimeSeriesSplit, cross_val_score
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from mlops.config import CandidateConfig, Distribution, FeaturesConfig, TrainingConfig
from mlops.errors import NoBetterThanBaselineError, TrainingError
from tasks.evaluate import Evaluation, evaluate_model
from tasks.features import Split, build_preprocessor

ESTIMATORS: dict[str, type[ClassifierMixin]] = {
    "dummy": DummyClassifier,
    "logistic_regression": LogisticRegression,
    "hist_gradient_boosting": HistGradientBoostingClassifier,
    "random_forest": RandomForestClassifier,
}
# Config metric name -> scikit-learn scorer (losses are negated so that higher is better).
SCORERS = {
    "roc_auc": "roc_auc",
    "pr_auc": "average_precision",
    "log_loss": "neg_log_loss",
    "brier": "neg_brier_score",
}


@dataclass
class CandidateResult:
    name: str
    estimator: str
    baseline: bool
    pipeline: Pipeline
    params: dict[str, Any]
    cv_mean: float
    cv_std: float
    fit_seconds: float
    evaluation: Evaluation | None = None


def make_classifier(candidate: CandidateConfig, features: FeaturesConfig, seed: int) -> ClassifierMixin:
    cls = ESTIMATORS[candidate.estimator]
    params = dict(candidate.params)
    if "random_state" in cls().get_params():
        params.setdefault("random_state", seed)
    if candidate.estimator == "hist_gradient_boosting" and candidate.encoding == "ordinal":
        # After the ColumnTransformer the categorical columns come last, in config order.
        n_num = len(features.numeric)
        params.setdefault("categorical_features", list(range(n_num, n_num + len(features.categorical))))
    try:
        return cls(**params)
    except TypeError as exc:
        raise TrainingError(f"candidate {candidate.name!r}: bad params {params} ({exc})") from None


def build_pipeline(candidate: CandidateConfig, features: FeaturesConfig, seed: int) -> Pipeline:
    return Pipeline(
        [
            ("features", build_preprocessor(features, candidate.encoding)),
            ("classifier", make_classifier(candidate, features, seed)),
        ]
    )


def search_space(candidate: CandidateConfig) -> dict[str, Any]:
    """Config ranges → scipy distributions (or lists), keyed for the pipeline's classifier."""
    space: dict[str, Any] = {}
    for param, spec in candidate.search.items():
        if isinstance(spec, Distribution):
            if spec.kind == "uniform":
                dist = stats.uniform(spec.low, spec.high - spec.low)
            elif spec.kind == "loguniform":
                dist = stats.loguniform(spec.low, spec.high)
            else:
                dist = stats.randint(int(spec.low), int(spec.high) + 1)
            space[f"classifier__{param}"] = dist
        else:
            space[f"classifier__{param}"] = list(spec)
    return space


def fit_candidate(
    candidate: CandidateConfig,
    features: FeaturesConfig,
    X: pd.DataFrame,
    y: pd.Series,
    cv_folds: int,
    metric: str,
    seed: int,
) -> CandidateResult:
    """Search the candidate's space over time-ordered folds, then refit on all of X.

    X must be sorted by time: TimeSeriesSplit trains each fold on rows before its test rows.
    """
    pipeline = build_pipeline(candidate, features, seed)
    scoring = SCORERS[metric]
    sign = -1.0 if scoring.startswith("neg_") else 1.0
    cv = TimeSeriesSplit(n_splits=cv_folds)
    space = search_space(candidate)
    started = time.perf_counter()
    try:
        if space:
            search = RandomizedSearchCV(
                pipeline,
                space,
                n_iter=candidate.n_iter,
                scoring=scoring,
                cv=cv,
                random_state=seed,
                n_jobs=1,  # candidates already run in parallel; nested pools oversubscribe 2 cores
                error_score="raise",
            )
            search.fit(X, y)
            best = search.best_index_
            pipeline = search.best_estimator_
            chosen = {k.removeprefix("classifier__"): _plain(v) for k, v in search.best_params_.items()}
            scores_mean = search.cv_results_["mean_test_score"][best]
            scores_std = search.cv_results_["std_test_score"][best]
        else:
            scores = cross_val_score(pipeline, X, y, scoring=scoring, cv=cv, error_score="raise")
            pipeline.fit(X, y)
            chosen, scores_mean, scores_std = {}, scores.mean(), scores.std()
    except ValueError as exc:
        raise TrainingError(f"candidate {candidate.name!r} failed to fit: {exc}") from None
    return CandidateResult(
        name=candidate.name,
        estimator=candidate.estimator,
        baseline=candidate.baseline,
        pipeline=pipeline,
        params={**candidate.params, **chosen},
        cv_mean=float(sign * scores_mean),
        cv_std=float(scores_std),
        fit_seconds=time.perf_counter() - started,
    )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def subsample_rows(
    X: pd.DataFrame, y: pd.Series, max_rows: int | None, seed: int
) -> tuple[pd.DataFrame, pd.Series]:
    """A seeded subsample that keeps time order (TimeSeriesSplit relies on it)."""
    if max_rows is None or len(X) <= max_rows:
        return X, y
    keep = np.sort(np.random.default_rng(seed).choice(len(X), size=max_rows, replace=False))
    return X.iloc[keep], y.iloc[keep]


def select_best(results: list[CandidateResult], metric: str, min_gain: float) -> CandidateResult:
    """The best non-baseline by cross-validated score, provided it beats every baseline on
    the holdout by at least `min_gain`. Otherwise training failed, and the error says why."""
    higher_is_better = metric in {"roc_auc", "pr_auc"}

    def holdout(r: CandidateResult) -> float:
        assert r.evaluation is not None
        return r.evaluation.metrics[metric]

    def gain(a: float, b: float) -> float:
        return a - b if higher_is_better else b - a

    baselines = [r for r in results if r.baseline]
    contenders = [r for r in results if not r.baseline]
    best_baseline = max(baselines, key=lambda r: holdout(r) if higher_is_better else -holdout(r))
    best = max(contenders, key=lambda r: r.cv_mean if higher_is_better else -r.cv_mean)
    if gain(holdout(best), holdout(best_baseline)) < min_gain:
        scores = ", ".join(f"{r.name}={holdout(r):.4f}" for r in results)
        raise NoBetterThanBaselineError(
            f"no candidate beats the baseline: best {best.name} has holdout {metric} {holdout(best):.4f} "
            f"vs baseline {best_baseline.name} {holdout(best_baseline):.4f} (needed a gain of {min_gain}); "
            f"all: {scores}"
        )
    return best


def fit_and_evaluate(
    candidate: CandidateConfig,
    split: Split,
    features: FeaturesConfig,
    training: TrainingConfig,
    cv_folds: int,
    openmp_threads: int | None = None,
) -> CandidateResult:
    """Fit one candidate on the (optionally subsampled) train split and score it on the holdout.

    `openmp_threads` caps the OpenMP threads of this fit. OpenMP limits are per thread, so
    the cap must be set here, in the thread that fits; one thread also makes the fit
    bit-for-bit reproducible."""
    limit = threadpool_limits(limits=openmp_threads, user_api="openmp") if openmp_threads else nullcontext()
    with limit:
        X, y = subsample_rows(split.X_train, split.y_train, training.max_train_rows, training.seed)
        result = fit_candidate(candidate, features, X, y, cv_folds, training.metric, training.seed)
        result.evaluation = evaluate_model(
            candidate.name,
            result.pipeline,
            split.X_holdout,
            split.y_holdout,
            training.threshold,
            training.importance_rows,
            training.importance_repeats,
            training.seed,
        )
    return result
