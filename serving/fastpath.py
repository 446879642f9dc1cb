"""The same scores as the pipeline's `predict_proba`, without its per-call overhead.

On the few rows of a micro-batch, scikit-learn's cost is almost all per call: the
ColumnTransformer selects and checks pandas columns and the OrdinalEncoder validates its
input (about 3 ms here), and a forest sends each tree through joblib, copying the config
into every call (about 3 ms for 60 trees); the trees themselves take microseconds. The
service scores a batch every few milliseconds under load, so it pays that on every batch.

`compile_scorer` recognises the pipelines `tasks.features.build_preprocessor` makes for
tree models (numeric columns passed through, categorical ones ordinal-encoded, then the
classifier) and scores the service's column arrays directly:

- each categorical column through a lookup table built by running the model's own encoder
  on every category it knows, on a missing value and on an unseen one;
- a random forest or extra-trees through its trees' own `predict`, summed in the same order
  as scikit-learn sums them; any other classifier through its `predict_proba` on the array
  the pipeline would have built.

A compiled scorer must give exactly the pipeline's scores on probe rows (the model's logged
example, an all-missing row and a row of unseen categories) or it is not used: the service
then scores through the pipeline, as before. Anything else (one-hot models, a scaler, a
custom step) is not compiled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

logger = logging.getLogger("serving.fastpath")
UNSEEN = "\x00unseen category"  # cannot come from a JSON string a client sends by accident

Columns = dict[str, np.ndarray]
Scorer = Callable[[Columns], np.ndarray]


class _Lookup:
    """One categorical column's codes, as the fitted encoder gives them."""

    def __init__(self, categories: list[Any], codes: np.ndarray, missing: float, unseen: float) -> None:
        self.index = pd.Index(categories, dtype=object)
        self.codes = np.append(codes, unseen)  # position -1 (not found) reads the unseen code
        self.missing = missing

    def __call__(self, values: np.ndarray) -> np.ndarray:
        out = self.codes[self.index.get_indexer(values)]
        missing = pd.isna(values)
        if missing.any():
            out[missing] = self.missing
        return out


def _encoder_lookups(encoder: OrdinalEncoder, columns: list[str]) -> list[_Lookup]:
    """Run the fitted encoder on every known category of each column, then on an all-missing
    and an all-unseen row: the tables hold exactly what it answers."""
    known = [[c for c in categories if not pd.isna(c)] for categories in encoder.categories_]
    rows = max(len(k) for k in known)
    table = pd.DataFrame(
        {
            name: np.array(k + [k[0]] * (rows - len(k)) + [np.nan, UNSEEN], dtype=object)
            for name, k in zip(columns, known, strict=True)
        }
    )
    codes = encoder.transform(table)
    return [
        _Lookup(k, codes[: len(k), j].astype(np.float64), codes[rows, j], codes[rows + 1, j])
        for j, k in enumerate(known)
    ]


def _forest_proba(
    forest: RandomForestClassifier | ExtraTreesClassifier,
) -> Callable[[np.ndarray], np.ndarray]:
    trees = [estimator.tree_ for estimator in forest.estimators_]
    n_classes = int(forest.n_classes_)

    def proba(features: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            features = np.ascontiguousarray(features, dtype=np.float32)  # the trees' own dtype
        if np.isinf(features).any():  # refused as scikit-learn refuses it, not scored as infinity
            raise ValueError("Input X contains infinity or a value too large for dtype('float32').")
        total = np.zeros((features.shape[0], n_classes), dtype=np.float64)
        for tree in trees:  # the order and arithmetic of ForestClassifier.predict_proba
            total += tree.predict(features)[:, :n_classes]
        total /= len(trees)
        return total

    return proba


def _is_identity(transformer: Any) -> bool:
    """A fitted ColumnTransformer holds "passthrough" as a FunctionTransformer without a function."""
    return type(transformer) is FunctionTransformer and transformer.func is None


def _plan(pipeline: Any) -> tuple[list[tuple[str, list[str], list[_Lookup] | None]], Any] | None:
    """The pipeline's steps in a form the fast path runs, or None if it has other steps."""
    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        return None
    features, classifier = pipeline.steps[0][1], pipeline.steps[1][1]
    if not isinstance(features, ColumnTransformer) or getattr(features, "sparse_output_", False):
        return None
    parts: list[tuple[str, list[str], list[_Lookup] | None]] = []
    for name, transformer, columns in features.transformers_:
        if transformer == "drop" or (isinstance(columns, list | np.ndarray) and len(columns) == 0):
            continue
        if not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
            return None
        if transformer == "passthrough" or _is_identity(transformer):
            parts.append((name, columns, None))
        elif type(transformer) is OrdinalEncoder:
            parts.append((name, columns, _encoder_lookups(transformer, columns)))
        else:
            return None
    if isinstance(classifier, RandomForestClassifier | ExtraTreesClassifier) and classifier.n_outputs_ == 1:
        return parts, _forest_proba(classifier)
    return parts, classifier.predict_proba


def compile_scorer(pipeline: Any, positive_index: int, probe: pd.DataFrame) -> Scorer | None:
    """A scorer of column arrays that equals `pipeline.predict_proba(frame)[:, positive_index]`
    on `probe`, or None (the pipeline has other steps, or the scores differ)."""
    try:
        plan = _plan(pipeline)
    except Exception as exc:  # an unusual fitted state: keep the pipeline
        logger.warning("no fast path for %s: %s", type(pipeline).__name__, exc)
        return None
    if plan is None:
        return None
    parts, proba = plan

    def score(columns: Columns) -> np.ndarray:
        blocks = []
        for _, names, lookups in parts:
            if lookups is None:
                blocks.extend(np.asarray(columns[n], dtype=np.float64) for n in names)
            else:
                blocks.extend(lookup(columns[n]) for n, lookup in zip(names, lookups, strict=True))
        return proba(np.column_stack(blocks))[:, positive_index]

    expected = pipeline.predict_proba(probe)[:, positive_index]
    try:
        got = score({c: probe[c].to_numpy() for c in probe.columns})
    except Exception as exc:  # the pipeline scored these rows: the fast path must too
        logger.warning("the fast path failed on the probe rows (%s): scoring through the pipeline", exc)
        return None
    if not np.array_equal(expected, got):
        worst = float(np.nanmax(np.abs(expected - got))) if expected.shape == got.shape else float("nan")
        logger.warning(
            "the fast path differs from the pipeline (max %s): scoring through the pipeline", worst
        )
        return None
    return score
