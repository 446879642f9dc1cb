"""`mlops compare`: champion versus challenger on the traffic the service logged.

A request carries features only, so the outcome of a scored row is unknown until its
label lands. A client that wants its rows judged sends a `key` with each record
(`mlops.prediction_log.record_key`). Once the batch table's files have landed and passed
validation, the ground-truth flow (`mlops label`) joins their labels to the log on that key,
into the labelled log; `compare` reads it and scores each arm (arm and model version) on its
joined rows.

Read the result with care: in shadow mode both arms scored the very same rows, so their
difference is a paired comparison (reported separately, on the rows both scored). In
canary and A/B modes each arm saw different rows; a difference can come from the traffic
as much as from the model. Rows without a key, or whose key matches no labelled row,
are counted, not guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd
from scipy.stats import binomtest, norm

from mlops.config import ProjectConfig
from mlops.names import CHALLENGER, CHAMPION
from mlops.objective import Objective
from mlops.prediction_log import (
    ARM,
    JOINED,
    KEY,
    LABEL,
    LABEL_STATUS,
    MODE,
    MODEL_VERSION,
    NO_KEY,
    POSITION,
    PREDICTED_LABEL,
    REQUEST_ID,
    SCORE,
    SERVED,
    read_labelled_log,
)
from mlops.storage import Stores

MIN_ROWS_FOR_METRICS = 30  # fewer labelled rows than this: counts only, no metrics


@dataclass(frozen=True)
class ArmResult:
    arm: str
    model_version: str
    modes: list[str]
    served: bool  # False: shadow scores, never returned
    logged_rows: int
    labelled_rows: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class InterleavingCredit:
    """`/rank` requests judged by their labels: each positive outcome among the records shown
    counts for the arm that placed it; a request is a win for the arm with more of them."""

    requests: int  # interleaved requests with a label for at least one record shown
    wins: int  # the challenger placed more positives
    losses: int  # the champion did
    ties: int
    preference: float  # wins / (wins + losses); 0.5 is no preference
    p_value: float  # two-sided sign test of wins against losses
    requests_needed: int | None  # for a 5% two-sided test with 80% power at this preference


def interleaving_credit(labelled: pd.DataFrame) -> InterleavingCredit | None:
    """Credit of the interleaved requests of the labelled log; None when it has none."""
    if labelled.empty or POSITION not in labelled.columns:
        return None
    shown = labelled[(labelled[MODE] == "interleave") & labelled[POSITION].notna()]
    shown = shown[shown[LABEL_STATUS] == JOINED]
    if shown.empty:
        return None
    positive = shown[LABEL].astype(float) > 0
    credit = shown.assign(positive=positive).pivot_table(
        index=REQUEST_ID, columns=ARM, values="positive", aggfunc="sum", fill_value=0
    )
    mine = credit.get(CHALLENGER, pd.Series(0, index=credit.index))
    theirs = credit.get(CHAMPION, pd.Series(0, index=credit.index))
    wins, losses = int((mine > theirs).sum()), int((mine < theirs).sum())
    ties = len(credit) - wins - losses
    decided = wins + losses
    preference = wins / decided if decided else 0.5
    p_value = float(binomtest(wins, decided, 0.5).pvalue) if decided else 1.0
    needed = None
    if decided and preference != 0.5:
        z_alpha, z_beta = norm.ppf(0.975), norm.ppf(0.8)
        per_decided = (
            (z_alpha * 0.5 + z_beta * np.sqrt(preference * (1 - preference))) / (preference - 0.5)
        ) ** 2
        needed = int(np.ceil(per_decided * len(credit) / decided))
    return InterleavingCredit(len(credit), wins, losses, ties, preference, p_value, needed)


@dataclass(frozen=True)
class Comparison:
    since: date | None
    logged_rows: int
    keyed_rows: int
    labelled_rows: int
    arms: list[ArmResult]
    paired_rows: int = 0  # rows scored by both arms (shadow), labelled
    paired: dict[str, float] = field(default_factory=dict)  # arm -> `paired_metric` on those rows
    notes: list[str] = field(default_factory=list)
    paired_metric: str = "roc_auc"
    interleaving: InterleavingCredit | None = None


def logged_metrics(objective: Objective, y: np.ndarray, rows: pd.DataFrame, suffix: str = "") -> dict:
    """An arm's metrics from what the log holds: the score (binary: p(positive); regression:
    the value) or, multiclass, the predicted class (accuracy and macro-F1; the log keeps no
    per-class probabilities, so no log loss)."""
    if len(y) < MIN_ROWS_FOR_METRICS:
        return {}
    if objective.kind == "multiclass":
        from sklearn.metrics import accuracy_score, f1_score

        predicted = rows[PREDICTED_LABEL + suffix].astype(str).to_numpy()
        truth = np.asarray(y).astype(str)
        return {
            "accuracy": float(accuracy_score(truth, predicted)),
            "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
            "rows": float(len(y)),
        }
    if objective.kind == "binary" and len(np.unique(y)) < 2:
        return {}
    return objective.evaluate(np.asarray(y), rows[SCORE + suffix].to_numpy(dtype=float))


def paired_metric_name(objective: Objective) -> str:
    """What the shadow pairs are compared on: the task's metric where the log allows it."""
    return "accuracy" if objective.kind == "multiclass" else objective.metric


def compare_arms(labelled: pd.DataFrame, objective: Objective, since: date | None = None) -> Comparison:
    """Score each logged arm on its rows of the labelled log that have a label."""
    notes: list[str] = []
    logged = len(labelled)
    if logged == 0:
        return Comparison(since, 0, 0, 0, [], notes=["no labelled log for this period: run `mlops label`"])
    log = labelled
    keyed = log[log[LABEL_STATUS] != NO_KEY]
    joined = log[log[LABEL_STATUS] == JOINED].rename(columns={LABEL: "y"})
    if len(keyed) < logged:
        notes.append(
            f"{logged - len(keyed)} of {logged} logged rows carry no `key` and cannot be joined to a label"
        )
    if len(keyed) and len(joined) == 0:
        notes.append(
            "no logged key matches a labelled row: labels may not have landed yet, or the keys are not"
            " built from data.key_columns joined with '|'"
        )
    arms = []
    for (arm, version), rows in log.groupby([ARM, MODEL_VERSION], sort=True):
        with_label = joined[(joined[ARM] == arm) & (joined[MODEL_VERSION] == version)]
        metrics = logged_metrics(objective, with_label["y"].to_numpy(), with_label)
        if len(with_label) and not metrics:
            notes.append(
                f"{arm} v{version}: {len(with_label)} labelled rows are too few (or one class) for metrics"
            )
        arms.append(
            ArmResult(
                arm=str(arm),
                model_version=str(version),
                modes=sorted(rows[MODE].unique().tolist()),
                served=bool(rows[SERVED].any()),
                logged_rows=len(rows),
                labelled_rows=len(with_label),
                metrics=metrics,
            )
        )
    paired_rows, paired = _paired(joined, objective)
    if any(a.labelled_rows for a in arms) and len({a.arm for a in arms}) > 1 and not paired_rows:
        notes.append(
            "the arms scored different rows (canary or A/B): differences mix model and traffic effects"
        )
    return Comparison(
        since,
        logged,
        len(keyed),
        len(joined),
        arms,
        paired_rows,
        paired,
        notes,
        paired_metric_name(objective),
        interleaving_credit(labelled),
    )


def _paired(joined: pd.DataFrame, objective: Objective) -> tuple[int, dict[str, float]]:
    """The paired metric of each arm on the labelled rows both arms scored (shadow mode)."""
    shadow = joined[~joined[SERVED]]
    if shadow.empty:
        return 0, {}
    served = joined[joined[SERVED]]
    pairs = served.merge(shadow, on=[REQUEST_ID, KEY], suffixes=("_served", "_shadow"))
    y = pairs["y_served"].to_numpy()
    metric = paired_metric_name(objective)
    out = {}
    for arm, suffix in ((CHAMPION, "_served"), (CHALLENGER, "_shadow")):
        metrics = logged_metrics(objective, y, pairs, suffix)
        if metric in metrics and np.isfinite(metrics[metric]):
            out[arm] = metrics[metric]
    return len(pairs), out


def compare_logged_traffic(
    config: ProjectConfig, since: date | None = None, until: date | None = None
) -> Comparison:
    """Read the labelled log named by the config (written by `mlops label`), and compare."""
    labelled = read_labelled_log(Stores.from_config(config).labelled_predictions, since, until)
    return compare_arms(labelled, Objective.of(config), since)
