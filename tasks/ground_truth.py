"""Ground truth for served traffic: the labels of landed batches, joined to the prediction log
on the record key.

A request carries features only; its outcome lands later, in the batch table's files. Once a
batch has been ingested and validated, `batch_labels` takes each labelled row's key and label
(labelled by the config's target rule, as training labels), `collect_labels` merges the
batches, and `join_ground_truth` gives every logged row its label, or the reason it has none.
Nothing is guessed: a row without a key, a key no landed row has, or a key whose landed rows
disagree are kept and counted by status (`mlops.prediction_log.LABEL_STATUSES`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops.config import ProjectConfig
from mlops.errors import ConfigError
from mlops.prediction_log import (
    AMBIGUOUS_KEY,
    ARM,
    JOINED,
    KEY,
    LABEL,
    LABEL_STATUS,
    LABEL_STATUSES,
    MODEL_VERSION,
    NO_KEY,
    NO_LABEL_YET,
    frame_keys,
)
from tasks.features import label_rows


@dataclass(frozen=True)
class Labels:
    """One label per key (`key`, `label`), and the keys left out because their rows disagree."""

    frame: pd.DataFrame
    ambiguous: frozenset[str] = frozenset()


def batch_labels(batch: pd.DataFrame, config: ProjectConfig) -> pd.DataFrame:
    """`key` and `label` of every row of a batch that has a label (training's rule)."""
    key_columns = config.data.key_columns
    if not key_columns:
        raise ConfigError("data.key_columns is empty: logged predictions cannot be joined to labels")
    missing = [c for c in [*key_columns, config.target.column] if c not in batch.columns]
    if missing:
        raise ConfigError(f"the batch table lacks {missing} (data.key_columns, target.column)")
    labelled, _ = label_rows(batch[[*key_columns, config.target.column]], config.target)
    return pd.DataFrame({KEY: frame_keys(labelled, key_columns), LABEL: labelled[config.target.label]})


def collect_labels(parts: Iterable[pd.DataFrame]) -> Labels:
    """One label per key from every batch's labels. The same row landing twice (a file landed
    again, or in two batches) counts once; a key whose rows disagree labels nothing."""
    frames = [p for p in parts if len(p)]
    if not frames:
        return Labels(pd.DataFrame({KEY: pd.Series(dtype=object), LABEL: pd.Series(dtype=float)}))
    labels = pd.concat(frames, ignore_index=True).drop_duplicates([KEY, LABEL])
    clash = labels[KEY].duplicated(keep=False)
    return Labels(labels.loc[~clash].reset_index(drop=True), frozenset(labels.loc[clash, KEY]))


def join_ground_truth(log: pd.DataFrame, labels: Labels) -> pd.DataFrame:
    """Every logged row, in order, with its `label` (null when none) and `label_status`."""
    out = log.drop(columns=[LABEL, LABEL_STATUS], errors="ignore").reset_index(drop=True)
    truth = labels.frame.set_index(KEY)[LABEL]
    if KEY not in out.columns:  # a log written without keys: nothing in it can be joined
        out[KEY] = pd.Series(None, index=out.index, dtype=object)
    keys = out[KEY]
    out[LABEL] = keys.map(truth) if len(truth) else pd.Series(np.nan, index=out.index)
    status = np.where(
        keys.isna(),
        NO_KEY,
        np.where(
            out[LABEL].notna(), JOINED, np.where(keys.isin(labels.ambiguous), AMBIGUOUS_KEY, NO_LABEL_YET)
        ),
    )
    out[LABEL_STATUS] = pd.Series(status, index=out.index, dtype=object)
    return out


def join_counts(labelled: pd.DataFrame) -> list[dict[str, object]]:
    """Rows per arm and model version by label status, for a table: what joined and what did not."""
    if labelled.empty:
        return []
    counts = (
        labelled.groupby([ARM, MODEL_VERSION, LABEL_STATUS], sort=True)
        .size()
        .unstack(LABEL_STATUS, fill_value=0)
        .reindex(columns=list(LABEL_STATUSES), fill_value=0)
    )
    return [
        {
            "arm": arm,
            "model_version": version,
            "logged": int(row.sum()),
            **{s: int(row[s]) for s in LABEL_STATUSES},
        }
        for (arm, version), row in counts.iterrows()
    ]
