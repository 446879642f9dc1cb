"""Candidates: search spaces, fitting, selection against baselines, and what skops must trust."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from scipy import stats

from mlops.config import CandidateConfig, Distribution, FeaturesConfig, TrainingConfig, load_config
from mlops.errors import TrainingError
from mlops.objective import BINARY
from mlops.tracking import SKOPS_TRUSTED_TYPES
from tasks.evaluate import Evaluation
from tasks.features import Split
from tasks.train import CandidateResult, build_pipeline, fit_and_evaluate, search_space, select_best

FEATURES = FeaturesConfig(numeric=["x1", "x2"], categorical=["c"])


def _split(rows: int = 600, seed: int = 0) -> Split:
    """A learnable problem: the label depends on x1 and on the category."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {"x1": rng.normal(size=rows), "x2": rng.normal(size=rows), "c": rng.choice(["a", "b", "c"], rows)}
    )
    logit = 1.5 * X["x1"] + (X["c"] == "a") * 1.0 - 0.5
    y = pd.Series((rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int))
    cut = int(rows * 0.75)
    return Split(X.iloc[:cut], y.iloc[:cut], X.iloc[cut:], y.iloc[cut:], ["p1"], ["p2"], "fp")


def _training(*candidates: CandidateConfig) -> TrainingConfig:
    return TrainingConfig(candidates=list(candidates), importance_rows=100, importance_repeats=2)


BASELINE = CandidateConfig(name="majority", estimator="dummy", baseline=True, params={"strategy": "prior"})
HGB = CandidateConfig(
    name="hgb",
    estimator="hist_gradient_boosting",
    encoding="ordinal",
    params={"max_iter": 30},
    search={"learning_rate": Distribution(kind="loguniform", low=0.05, high=0.3), "max_leaf_nodes": [7, 15]},
    n_iter=2,
)


def test_search_space_maps_config_to_distributions() -> None:
    space = search_space(HGB)
    assert set(space) == {"model__learning_rate", "model__max_leaf_nodes"}
    assert isinstance(space["model__learning_rate"], type(stats.loguniform(0.1, 1)))
    assert space["model__max_leaf_nodes"] == [7, 15]


def test_fit_and_evaluate_learns_and_is_deterministic() -> None:
    split = _split()
    training = _training(BASELINE, HGB)
    first = fit_and_evaluate(HGB, split, FEATURES, training, BINARY, cv_folds=3)
    second = fit_and_evaluate(HGB, split, FEATURES, training, BINARY, cv_folds=3)
    assert first.evaluation is not None and second.evaluation is not None
    assert first.evaluation.metrics["roc_auc"] > 0.7
    assert first.evaluation.metrics == second.evaluation.metrics
    assert set(first.evaluation.plots) == {
        "roc_curve.png",
        "pr_curve.png",
        "confusion_matrix.png",
        "calibration.png",
        "permutation_importance.png",
    }
    assert all(png.startswith(b"\x89PNG") for png in first.evaluation.plots.values())
    assert max(first.evaluation.importance, key=first.evaluation.importance.get) == "x1"
    assert "learning_rate" in first.params and "max_iter" in first.params


def _result(name: str, baseline: bool, cv: float, holdout: float) -> CandidateResult:
    r = CandidateResult(
        name, "x", baseline, pipeline=None, params={}, cv_mean=cv, cv_std=0.0, fit_seconds=0.0
    )  # type: ignore[arg-type]
    r.evaluation = Evaluation(metrics={"roc_auc": holdout})
    return r


def test_select_best_picks_by_cross_validation_not_holdout() -> None:
    results = [
        _result("base", True, 0.5, 0.5),
        _result("a", False, 0.80, 0.70),
        _result("b", False, 0.75, 0.72),
    ]
    assert select_best(results, BINARY, min_gain=0.01).name == "a"


def test_select_best_fails_when_nothing_beats_the_baseline() -> None:
    results = [_result("logistic", True, 0.70, 0.71), _result("gbm", False, 0.72, 0.715)]
    with pytest.raises(TrainingError, match="no candidate beats the baseline"):
        select_best(results, BINARY, min_gain=0.01)


def test_every_configured_candidate_serialises_with_only_the_trusted_types() -> None:
    """If a new estimator needs another type, this fails before a model fails to load."""
    config = load_config("mlops.yaml")
    split = _split(rows=300)
    X = split.X_train.assign(**{c: 0.0 for c in config.features.numeric if c not in split.X_train})
    X = X.assign(**{c: "a" for c in config.features.categorical if c not in X})
    for candidate in config.training.candidates:
        pipeline = build_pipeline(candidate, config.features, BINARY, seed=0).fit(X, split.y_train)
        untrusted = sio.get_untrusted_types(data=sio.dumps(pipeline))
        assert set(untrusted) <= set(SKOPS_TRUSTED_TYPES), (candidate.name, untrusted)


def test_parallel_fits_in_worker_threads_are_reproducible() -> None:
    """Candidates fit side by side in threads; capped to one OpenMP thread each, a rerun
    gives the same numbers to the last digit (the lineage work relies on it)."""
    from concurrent.futures import ThreadPoolExecutor

    split = _split(rows=2000)
    training = _training(BASELINE, HGB)

    def run() -> list[float]:
        with ThreadPoolExecutor(2) as pool:
            results = pool.map(
                lambda c: fit_and_evaluate(c, split, FEATURES, training, BINARY, 3, openmp_threads=1),
                [HGB, HGB],
            )
            return [r.evaluation.metrics["log_loss"] for r in results]

    first, second = run(), run()
    assert first == second and first[0] == first[1]
