"""The names the project records under in MLflow: the registry's aliases, the tags people
filter on and the code reads back, and the artifact files a run writes. Writers and readers
(the flows, lineage, reproduce, serving) take them from here, so a name cannot drift apart
between the side that records and the side that reads."""

from __future__ import annotations

# -- aliases: which version serves, which one waits, and where a rollback goes ----------------
CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"

# -- artifact files of a run ---------------------------------------------------------------
INPUTS_FILE = "lineage/inputs.json"  # every snapshot a training run read: URI, sha256, size, rows
PACKAGES_FILE = "environment/packages.json"
CONFIG_FILE = "config/resolved.json"  # what `mlops reproduce` rebuilds from
VALIDATION_SUMMARY_FILE = "validation/summary.json"
TRAINING_FRAME_VALIDATION_FILE = "validation/training-frame.json"
TRAINING_FRAME_SUMMARY_FILE = "validation/training-frame-summary.json"
DECISION_FILE = "promotion/decision.json"  # a promotion run's whole decision
FAIRNESS_FILE = "promotion/fairness_by_group.json"
HOLDOUT_SCORES_FILE = "evaluation/holdout_scores.json"  # histogram of the registered model's holdout scores  # both models' metrics per group (Fairlearn)

# -- version tags: the few a person filters on in the registry's version table, and that code
# reads back. Everything else about a version lives where MLflow shows it better: the metrics
# and params of its training run, its description, and the promotion run's decision file.
SNAPSHOTS_TAG = "snapshots"  # JSON: "<table>/<period or static>" -> sha256 of the landed file
TRAINING_FINGERPRINT_TAG = "training_fingerprint"  # the data and config a version was fit on
PERIODS_TAG = "periods"  # "first..last" period of its training data, holdout included
VALIDATION_TAG = "validation"  # "passed" | "failed"
CONFIG_HASH_TAG = "config_hash"
GIT_COMMIT_TAG = "git_commit"
CANDIDATE_TAG = "candidate"  # the candidate (estimator settings) that was registered
PROMOTION_TAG = "promotion"  # the latest decision: promoted | rejected | rolled_back


# -- Prefect artifact keys that other parts link to ------------------------------------------


def artifact_key(text: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "".join(c if c.isalnum() else "-" for c in text.lower())[:60]


def lineage_artifact_key(model_name: str, version: str) -> str:
    """A version's lineage artifact (flows publish it; the prediction page links to it)."""
    return artifact_key(f"lineage-{model_name}-v{version}")
