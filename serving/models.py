"""The registered versions the service scores with, and swapping them without a pause.

A `ModelWatcher` asks the registry where the `champion` and `challenger` aliases point.
When one moves, the new version is downloaded, loaded and prepared (it scores probe rows,
so nothing is left to initialise lazily and a model that cannot score is never swapped in;
the service also compiles its fast path then), and only then does one attribute assignment
replace the `ServingModels` the scorer reads. A batch takes that reference once when it
starts, so requests in flight finish on the model they started with. A load that fails
leaves the current models serving; the failure is kept for `/ready` and `/model`, and
the version is retried with a growing pause.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from mlops.errors import MlopsError
from mlops.names import CHALLENGER, CHAMPION, HOLDOUT_SCORES_FILE
from mlops.objective import BINARY, Objective
from mlops.record_features import RecordFeatures
from mlops.rollout import RolloutState

logger = logging.getLogger("serving.models")
MAX_RETRY_SECONDS = 300.0


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    pipeline: Any  # the logged pipeline after its record step: feature rows -> answer
    positive_index: int  # binary: column of predict_proba holding the positive class (else -1)
    metrics: dict[str, float]  # of its training run (holdout_roc_auc, ...)
    run_id: str
    loaded_at: datetime
    load_seconds: float
    example: pd.DataFrame | None = None  # the input example it was logged with: among its probe rows
    fast: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None  # see serving.fastpath
    objective: Objective = BINARY
    classes: tuple[Any, ...] | None = None  # multiclass: the order of its probabilities
    holdout_scores: dict[str, Any] | None = None  # histogram of its holdout scores (the web page's plot)
    record: RecordFeatures | None = None  # its first step: a landed record -> features (older models lack it)
    landed_example: pd.DataFrame | None = None  # the landed rows it was logged with (its input example)

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        """The model's answer for each row: p(positive), one probability per class, or a value."""
        if self.objective.kind == "binary":
            return self.pipeline.predict_proba(frame)[:, self.positive_index]
        return self.objective.predict(self.pipeline, frame, self.classes)

    def score_columns(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """The same, from column arrays: through the compiled fast path when there is one."""
        if self.fast is not None:
            return self.fast(columns)
        return self.scores(pd.DataFrame(columns, copy=False))

    @cached_property  # read for every scored chunk; a new tables' version is a new LoadedModel
    def dimensions(self) -> str | None:
        """Which snapshots its lookups read, `table@<sha256 prefix>` each (logged per prediction)."""
        if self.record is None:
            return None
        return ",".join(f"{table}@{sha[:12]}" for table, sha in sorted((self.record.snapshots or {}).items()))

    def landed_features(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feature columns of records as they land (their columns the model reads), through its record step."""
        if self.record is None:
            raise MlopsError(
                f"{self.name} v{self.version} was registered before models took records as they land:"
                " send its feature columns, or retrain it"
            )
        return self.record.feature_columns(raw)

    def describe(self, alias: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "alias": alias,
            "run_id": self.run_id,
            "metrics": self.metrics,
            "loaded_at": self.loaded_at.isoformat(timespec="seconds"),
            "load_seconds": round(self.load_seconds, 2),
            "scorer": "compiled fast path" if self.fast is not None else "pipeline",
            "takes_landed_records": self.record is not None,
            "dimensions": self.dimensions,
        }


@dataclass(frozen=True)
class ServingModels:
    """What is loaded right now. Replaced as a whole, never changed in place."""

    champion: LoadedModel | None = None
    challenger: LoadedModel | None = None

    @property
    def primary(self) -> LoadedModel | None:
        """The model that answers: the champion, or the challenger while there is no champion."""
        return self.champion or self.challenger

    @property
    def primary_arm(self) -> str:
        return CHAMPION if self.champion is not None else CHALLENGER

    @property
    def under_test(self) -> LoadedModel | None:
        """The challenger, when there is one to compare: not serving as fallback, not the champion."""
        if self.champion is None or self.challenger is None:
            return None
        return None if self.challenger.version == self.champion.version else self.challenger


def split_record_step(logged: Any) -> tuple[RecordFeatures | None, Any]:
    """A logged model's record step (None for a model from before it had one) and the
    pipeline behind it, which scores feature rows: what the fast path compiles."""
    from sklearn.pipeline import Pipeline

    if isinstance(logged, Pipeline) and isinstance(logged.steps[0][1], RecordFeatures):
        return logged.steps[0][1], logged[1:]
    return None, logged


class ModelSource(Protocol):
    """Where registered versions come from (the MLflow registry in production)."""

    def registry_state(self) -> tuple[dict[str, str], dict[str, str]]: ...  # aliases, model tags
    def load(self, version: str) -> LoadedModel: ...


class RegistrySource:
    """The MLflow registry, through `mlops.tracking` (the project's one door to MLflow)."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        model_name: str,
        expected_columns: list[str],
        objective: Objective | None = None,
    ):
        self.objective = objective or BINARY
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.model_name = model_name
        self.expected_columns = expected_columns
        self._tracker: Any = None

    @property
    def tracker(self) -> Any:
        # Connected on first use and again after a failure, so a service started while
        # MLflow is down reports it (in /ready) and recovers once MLflow answers.
        if self._tracker is None:
            from mlops.tracking import Tracker

            self._tracker = Tracker(self.tracking_uri, self.experiment)  # checks the server answers
        return self._tracker

    def registry_state(self) -> tuple[dict[str, str], dict[str, str]]:
        try:
            return self.tracker.registry_state(self.model_name)
        except Exception:
            self._tracker = None
            raise

    def load(self, version: str) -> LoadedModel:
        from mlops.tracking import download_model, load_local_model, model_input_example, model_input_names

        started = time.perf_counter()
        info = self.tracker.model_version(self.model_name, version)
        if info is None:
            raise MlopsError(f"{self.model_name} v{version} does not exist in the registry")
        with tempfile.TemporaryDirectory(prefix="serving-model-") as tmp:
            path = download_model(f"models:/{self.model_name}/{version}", Path(tmp))
            logged = load_local_model(path)
            record, pipeline = split_record_step(logged)
            inputs = record.columns if record is not None else model_input_names(path)
            if inputs is not None and sorted(inputs) != sorted(self.expected_columns):
                raise MlopsError(
                    f"{self.model_name} v{version} computes features {sorted(inputs)}, but the config's"
                    f" features are {sorted(self.expected_columns)}: serve it with the config it was"
                    " trained with"
                )
            example = landed_example = model_input_example(path)
            if record is not None and example is not None:
                example = record.features(example)  # its probe rows are feature rows
            else:
                landed_example = None
        positive_index, classes = self.answer_shape(pipeline, version)
        metrics = self.tracker.holdout_metrics(info.run_id)
        try:  # only the web page's plot needs it: a model that lacks it (older) or whose file cannot be read still serves
            holdout_scores = self.tracker.read_json(info.run_id, HOLDOUT_SCORES_FILE)
        except Exception as exc:
            logger.warning("%s v%s: no holdout score distribution (%s)", self.model_name, version, exc)
            holdout_scores = None
        return LoadedModel(
            name=self.model_name,
            version=version,
            pipeline=pipeline,
            record=record,
            landed_example=landed_example,
            positive_index=positive_index,
            objective=self.objective,
            classes=classes,
            metrics=metrics,
            run_id=info.run_id,
            loaded_at=datetime.now(UTC),
            load_seconds=time.perf_counter() - started,
            example=example,
            holdout_scores=holdout_scores,
        )

    def answer_shape(self, pipeline: Any, version: str) -> tuple[int, tuple[Any, ...] | None]:
        """The positive class's column (binary) or the class order (multiclass); refuses a
        model whose answer does not fit the config's target."""
        kind = self.objective.kind
        learnt = list(np.asarray(getattr(pipeline, "classes_", [])).tolist())
        where = f"{self.model_name} v{version}"
        if kind == "regression":
            if learnt:
                raise MlopsError(f"{where} is a classifier (classes {learnt}), but the target is regression")
            return -1, None
        if kind == "binary":
            if sorted(map(str, learnt)) != ["0", "1"]:
                raise MlopsError(f"{where} is not a 0/1 classifier (classes {learnt})")
            return [int(c) for c in learnt].index(1), None
        if len(learnt) < 2:
            raise MlopsError(f"{where} is not a multiclass classifier (classes {learnt})")
        extra = set(map(str, learnt)) - set(map(str, self.objective.classes or learnt))
        if extra:
            raise MlopsError(f"{where} predicts classes {sorted(extra)} that target.classes does not list")
        return -1, self.objective.model_classes(pipeline)


@dataclass
class LoadFailure:
    version: str
    alias: str
    error: str
    at: datetime
    attempts: int
    retry_at: float  # monotonic seconds


@dataclass
class WatcherStatus:
    last_poll_at: datetime | None = None
    last_poll_error: str | None = None  # the registry could not be asked
    aliases: dict[str, str] = field(default_factory=dict)
    rollout: RolloutState | None = None  # a progressive canary's recorded step (`mlops rollout`)
    failures: dict[str, LoadFailure] = field(default_factory=dict)  # by alias, while unresolved
    refreshed_at: datetime | None = None  # the dimension tables were last re-read
    refresh_error: str | None = None  # the last re-read failed: the tables before it still answer


class ModelWatcher:
    """Keeps `models` in step with the registry's aliases; `poll_once` is one step."""

    def __init__(
        self,
        source: ModelSource,
        prepare: Callable[[LoadedModel], LoadedModel],
        poll_seconds: float,
        refresh: Callable[[LoadedModel], LoadedModel] | None = None,
        refresh_seconds: float = 0.0,
    ) -> None:
        self.source = source
        self.prepare = prepare
        self.poll_seconds = poll_seconds
        # Re-reads a served model's dimension tables (`serving.dimensions: landing`): the same
        # model, or a copy looking up the newer tables.
        self.refresh = refresh if refresh_seconds > 0 else None
        self.refresh_seconds = refresh_seconds
        self._refresh_due = time.monotonic() + refresh_seconds
        self.models = ServingModels()  # read without a lock: a reference swap is atomic
        self.status = WatcherStatus()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one poll at a time (the thread, or a test calling poll_once)

    def poll_once(self) -> ServingModels:
        """Ask the registry where the aliases point; load what moved; swap when all loaded."""
        with self._lock:
            return self._poll()

    def _poll(self) -> ServingModels:
        status = self.status
        try:
            aliases, tags = self.source.registry_state()
        except Exception as exc:  # the registry is down or refuses: keep serving what is loaded
            status.last_poll_error = f"cannot read the registry aliases: {exc}"
            status.last_poll_at = datetime.now(UTC)
            logger.warning(status.last_poll_error)
            return self.models
        status.last_poll_error = None
        status.last_poll_at = datetime.now(UTC)
        status.aliases = {a: v for a, v in aliases.items() if a in (CHAMPION, CHALLENGER)}
        status.rollout = RolloutState.from_tags(tags)

        current = self.models
        loaded = {m.version: m for m in (current.champion, current.challenger) if m is not None}
        chosen: dict[str, LoadedModel | None] = {}
        for alias, now in ((CHAMPION, current.champion), (CHALLENGER, current.challenger)):
            wanted = aliases.get(alias)
            if wanted is None:
                # A champion is never dropped for a missing alias (an empty service helps no one);
                # a challenger whose alias is gone must stop taking traffic.
                chosen[alias] = now if alias == CHAMPION else None
                status.failures.pop(alias, None)
                continue
            if wanted in loaded:
                chosen[alias] = loaded[wanted]
                status.failures.pop(alias, None)
                continue
            chosen[alias] = self._load(alias, wanted, now)
            if chosen[alias] is not None and chosen[alias] is not now:
                loaded[wanted] = chosen[alias]
        if self.refresh is not None and time.monotonic() >= self._refresh_due:
            self._refresh_due = time.monotonic() + self.refresh_seconds
            # Only models that were serving: one loaded in this poll has just read the tables.
            done: dict[int, LoadedModel | None] = {}
            for alias, model in chosen.items():
                if model is not None and (model is current.champion or model is current.challenger):
                    if id(model) not in done:
                        done[id(model)] = self._refreshed(model)
                    chosen[alias] = done[id(model)]
        updated = ServingModels(champion=chosen[CHAMPION], challenger=chosen[CHALLENGER])
        if updated.champion is not current.champion or updated.challenger is not current.challenger:
            self.models = updated  # the swap: one reference assignment
            logger.info(
                "serving champion %s, challenger %s",
                updated.champion and updated.champion.version,
                updated.challenger and updated.challenger.version,
            )
        return updated

    def _load(self, alias: str, version: str, keep: LoadedModel | None) -> LoadedModel | None:
        failure = self.status.failures.get(alias)
        if failure is not None and failure.version == version and time.monotonic() < failure.retry_at:
            return keep
        try:
            model = self.prepare(self.source.load(version))
        except Exception as exc:  # any failure to load keeps the old model serving
            attempts = failure.attempts + 1 if failure is not None and failure.version == version else 1
            pause = min(self.poll_seconds * 2 ** (attempts - 1), MAX_RETRY_SECONDS)
            self.status.failures[alias] = LoadFailure(
                version=version,
                alias=alias,
                error=f"{type(exc).__name__}: {exc}"[:2000],
                at=datetime.now(UTC),
                attempts=attempts,
                retry_at=time.monotonic() + pause,
            )
            logger.error("loading %s v%s failed (attempt %d): %s", alias, version, attempts, exc)
            return keep
        self.status.failures.pop(alias, None)
        return model

    def _refreshed(self, model: LoadedModel | None) -> LoadedModel | None:
        """`model` looking up the tables' current files (itself when they have not changed);
        when they cannot be read, itself, and the error is reported until a re-read succeeds."""
        if model is None:
            return None
        try:
            refreshed = self.refresh(model) if self.refresh is not None else model
        except Exception as exc:
            self.status.refresh_error = (
                f"re-reading the dimension tables of v{model.version} failed, it still looks records"
                f" up in {model.dimensions}: {exc}"
            )[:2000]
            logger.error(self.status.refresh_error)
            return model
        self.status.refreshed_at, self.status.refresh_error = datetime.now(UTC), None
        if refreshed is not model:
            logger.info("v%s now looks records up in %s", model.version, refreshed.dimensions)
        return refreshed

    def rollout_share(self, challenger_version: str | None) -> float | None:
        """The canary share the registry records for this challenger, if a rollout set one."""
        rollout = self.status.rollout
        return None if rollout is None else rollout.share_for(challenger_version)

    # -- the background thread ------------------------------------------------------------
    def start(self) -> None:
        # A thread, not an asyncio task: a registry that hangs must not hold up the event
        # loop's shutdown, and a daemon thread is simply left behind.
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # never let the watcher die: the next poll tries again
                logger.exception("registry poll failed")

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def describe(self) -> dict[str, Any]:
        models = self.models
        status = self.status
        return {
            "champion": models.champion.describe(CHAMPION) if models.champion else None,
            "challenger": models.challenger.describe(CHALLENGER) if models.challenger else None,
            "registry_aliases": status.aliases,
            "rollout": None if status.rollout is None else asdict(status.rollout),
            "last_poll_at": status.last_poll_at.isoformat(timespec="seconds")
            if status.last_poll_at
            else None,
            "last_poll_error": status.last_poll_error,
            "dimensions_refreshed_at": status.refreshed_at.isoformat(timespec="seconds")
            if status.refreshed_at
            else None,
            "dimensions_refresh_error": status.refresh_error,
            "load_failures": [
                {
                    "alias": f.alias,
                    "version": f.version,
                    "error": f.error,
                    "at": f.at.isoformat(timespec="seconds"),
                    "attempts": f.attempts,
                }
                for f in status.failures.values()
            ],
        }
