"""Errors a user can cause. Each message names the thing and what to do about it."""

from __future__ import annotations


class MlopsError(Exception):
    """Base for errors that the CLI prints as one clear line instead of a traceback."""


class ConfigError(MlopsError):
    """The project config or a parameter is wrong."""


class LandingError(MlopsError):
    """A landing file is missing or cannot be read."""


class BadBatchError(MlopsError):
    """A batch was rejected (unreadable or failed validation) and quarantined."""

    def __init__(self, message: str, quarantine_uri: str | None = None) -> None:
        super().__init__(
            message if quarantine_uri is None else f"{message} (quarantined at {quarantine_uri})"
        )
        self.quarantine_uri = quarantine_uri


class TrainingError(MlopsError):
    """Training finished but produced nothing worth registering."""


class NoBetterThanBaselineError(TrainingError):
    """No candidate beat the baselines by the configured margin."""


class ServiceUnavailableError(MlopsError):
    """A server the pipeline needs (Prefect, MLflow, S3) does not answer."""


class PromotionError(MlopsError):
    """A promotion or rollback cannot go ahead (no challenger, nothing to roll back to, lock held)."""


class RolloutError(MlopsError):
    """A progressive canary cannot start (no challenger, wrong serving mode, one already running)."""
