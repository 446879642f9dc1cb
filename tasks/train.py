"""Features → model: fit each configured candidate with a hyperparameter search over
time-ordered folds, and pick the best one that beats the baselines.

A candidate's estimator is a short name (the regressor or classifier of that family for the
target's kind) or a dotted path to any scikit-learn-compatible class. `check_candidates`
imports and tries each one before any data is read, so a wrong path, a classifier for a
regression target or a model skops cannot save fails at start, naming the candidate.
"""

from __future__ import annotations

import importlib
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator, is_classifier, is_regressor
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import RandomizedSearchCV, TimeSeriesSplit, cross_val_score
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from mlops.config import CandidateConfig, Distribution, FeaturesConfig, ProjectConfig, TrainingConfig
from mlops.errors import ConfigError, NoBetterThanBaselineError, TrainingError
from mlops.objective import Objective
from tasks.evaluate import Evaluation, evaluate_model
from tasks.features import Split, build_preprocessor

# Short name -> (classifier, regressor); None where the family has no such model.
ESTIMATORS: dict[str, tuple[type[BaseEstimator] | None, type[BaseEstimator] | None]] = {
    "dummy": (DummyClassifier, DummyRegressor),
    "linear": (LogisticRegression, Ridge),
    "logistic_regression": (LogisticRegression, None),
    "hist_gradient_boosting": (HistGradientBoostingClassifier, HistGradientBoostingRegressor),
    "random_forest": (RandomForestClassifier, RandomForestRegressor),
}
# The classes whose `categorical_features` take the ordinal-encoded columns' positions.
NATIVE_CATEGORICAL = (HistGradientBoostingClassifier, HistGradientBoostingRegressor)


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


def estimator_class(candidate: CandidateConfig, objective: Objective) -> type[BaseEstimator]:
    """The class a candidate names, checked to be an estimator of the target's kind."""
    where = f"training.candidates[{candidate.name!r}].estimator {candidate.estimator!r}"
    wanted = "classifier" if objective.is_classifier else "regressor"
    if candidate.estimator in ESTIMATORS:
        cls = ESTIMATORS[candidate.estimator][0 if objective.is_classifier else 1]
        if cls is None:
            raise ConfigError(f"{where} has no {wanted} for a {objective.kind} target: use another")
        return cls
    module_name, _, class_name = candidate.estimator.rpartition(".")
    if not module_name:
        raise ConfigError(
            f"{where}: use a short name ({', '.join(ESTIMATORS)}) or a dotted path such as"
            " sklearn.linear_model.Ridge"
        )
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:
        hint = (
            " (pip install 'mlops-flights[boosting]')"
            if module_name.split(".")[0] in {"lightgbm", "xgboost"}
            else ""
        )
        raise ConfigError(f"{where} does not import: {exc}{hint}") from None
    except AttributeError:
        raise ConfigError(f"{where}: module {module_name} has no {class_name}") from None
    if not (isinstance(cls, type) and hasattr(cls, "fit") and hasattr(cls, "get_params")):
        raise ConfigError(f"{where} is not a scikit-learn-compatible estimator class (no fit/get_params)")
    instance = cls()
    fits = is_classifier(instance) if objective.is_classifier else is_regressor(instance)
    if not fits:
        raise ConfigError(f"{where} is not a {wanted}, and the target is {objective.kind}")
    return cls


def make_estimator(
    candidate: CandidateConfig, features: FeaturesConfig, objective: Objective, seed: int
) -> BaseEstimator:
    cls = estimator_class(candidate, objective)
    params = dict(candidate.params)
    defaults = cls().get_params()
    if "random_state" in defaults:
        params.setdefault("random_state", seed)
    if issubclass(cls, NATIVE_CATEGORICAL) and candidate.encoding == "ordinal":
        # After the ColumnTransformer the categorical columns come last, in config order.
        n_num = len(features.numeric)
        params.setdefault("categorical_features", list(range(n_num, n_num + len(features.categorical))))
    if cls.__module__.startswith("lightgbm"):
        params.setdefault("verbose", -1)  # LightGBM prints a line per fit otherwise
    try:
        return cls(**params)
    except TypeError as exc:
        raise TrainingError(f"candidate {candidate.name!r}: bad params {params} ({exc})") from None


def check_candidates(config: ProjectConfig) -> dict[str, list[str]]:
    """Import, build and try every candidate on a few synthetic rows, before any data is read:
    its class fits the task, its params are accepted, and skops can save and load the fitted
    pipeline. Returns each candidate's skops types beyond the defaults."""
    import skops.io as sio

    objective = Objective.of(config)
    rows = 60
    rng = np.random.default_rng(0)
    X = pd.DataFrame({c: rng.normal(size=rows) for c in config.features.numeric})
    for c in config.features.categorical:
        X[c] = np.where(rng.random(rows) < 0.5, "a", "b").astype(object)
    if objective.kind == "regression":
        y = pd.Series(rng.normal(size=rows))
    elif objective.kind == "binary":
        y = pd.Series(np.arange(rows) % 2, dtype=np.int8)
    else:
        classes = list(objective.classes or ["a", "b", "c"])
        y = pd.Series([classes[i % len(classes)] for i in range(rows)], dtype=object)
    trusted: dict[str, list[str]] = {}
    for candidate in config.training.candidates:
        pipeline = Pipeline(
            [
                ("features", build_preprocessor(config.features, candidate.encoding)),
                ("model", make_estimator(candidate, config.features, objective, config.training.seed)),
            ]
        )
        try:
            pipeline.fit(X, y)
            blob = sio.dumps(pipeline)
            types = sio.get_untrusted_types(data=blob)
            sio.loads(blob, trusted=types)
        except Exception as exc:  # any library's error: say which candidate and why
            raise ConfigError(
                f"training.candidates[{candidate.name!r}] ({candidate.estimator}) cannot be trained and saved"
                f" with skops: {type(exc).__name__}: {exc}"
            ) from None
        trusted[candidate.name] = types
    return trusted


def build_pipeline(
    candidate: CandidateConfig, features: FeaturesConfig, objective: Objective, seed: int
) -> Pipeline:
    return Pipeline(
        [
            ("features", build_preprocessor(features, candidate.encoding)),
            ("model", make_estimator(candidate, features, objective, seed)),
        ]
    )


def records_model(step: BaseEstimator, pipeline: Pipeline) -> Pipeline:
    """The fitted pipeline behind the step that turns a landed record into its features
    (`mlops.record_features`): the model that is registered and served."""
    return Pipeline([("record", step), *pipeline.steps])


def search_space(candidate: CandidateConfig) -> dict[str, Any]:
    """Config ranges → scipy distributions (or lists), keyed for the pipeline's model step."""
    space: dict[str, Any] = {}
    for param, spec in candidate.search.items():
        if isinstance(spec, Distribution):
            if spec.kind == "uniform":
                dist = stats.uniform(spec.low, spec.high - spec.low)
            elif spec.kind == "loguniform":
                dist = stats.loguniform(spec.low, spec.high)
            else:
                dist = stats.randint(int(spec.low), int(spec.high) + 1)
            space[f"model__{param}"] = dist
        else:
            space[f"model__{param}"] = list(spec)
    return space


def fit_candidate(
    candidate: CandidateConfig,
    features: FeaturesConfig,
    X: pd.DataFrame,
    y: pd.Series,
    cv_folds: int,
    objective: Objective,
    seed: int,
) -> CandidateResult:
    """Search the candidate's space over time-ordered folds, then refit on all of X.

    X must be sorted by time: TimeSeriesSplit trains each fold on rows before its test rows.
    """
    pipeline = build_pipeline(candidate, features, objective, seed)
    scoring = objective.scorer
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
            chosen = {k.removeprefix("model__"): _plain(v) for k, v in search.best_params_.items()}
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


def select_best(results: list[CandidateResult], objective: Objective, min_gain: float) -> CandidateResult:
    """The best non-baseline by cross-validated score, provided it beats every baseline on
    the holdout by at least `min_gain`. Otherwise training failed, and the error says why."""
    metric = objective.metric
    sign = 1.0 if objective.higher_is_better else -1.0

    def holdout(r: CandidateResult) -> float:
        assert r.evaluation is not None
        return r.evaluation.metrics[metric]

    baselines = [r for r in results if r.baseline]
    contenders = [r for r in results if not r.baseline]
    best_baseline = max(baselines, key=lambda r: sign * holdout(r))
    best = max(contenders, key=lambda r: sign * r.cv_mean)
    if not objective.gain(holdout(best), holdout(best_baseline)) >= min_gain:
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
    objective: Objective,
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
        result = fit_candidate(candidate, features, X, y, cv_folds, objective, training.seed)
        result.evaluation = evaluate_model(
            candidate.name,
            result.pipeline,
            split.X_holdout,
            split.y_holdout,
            objective,
            split.holdout_times,
            training.importance_rows,
            training.importance_repeats,
            training.seed,
        )
    return result
