"""Scoring requests in micro-batches.

One sklearn `predict_proba` call costs about the same for 1 row as for 50 (3-6 ms here,
most of it per-call overhead of the ColumnTransformer and the forest; 0.4 ms through the
compiled fast path of `serving.fastpath`, still mostly per call), so requests that
arrive together are scored together: each request is queued, and one consumer takes
everything queued (up to `batch_max_rows`) as one batch, optionally after waiting
`batch_wait_ms` for more. While a batch is scored on a worker thread, the event loop goes
on reading requests, which form the next batch.

`/rank` requests form batches the same way, on a queue of their own: both arms score all
the batch's records in one call each, and each request's rankings are drafted from its own
slice (measured before: a one-record ranking per model call, 363 requests/s interleaved
against 3,400 for `/predict`).

In canary and A/B modes a batch is split by arm, and each arm's rows are scored in one
call to its model; both calls run on the two scoring threads.

After the answers are sent, a single background thread builds the log rows and, in shadow
mode, scores the batch with the challenger. That work never delays a response; shadow
scoring is skipped (and counted) if it falls too far behind, so a slow challenger cannot
build an unbounded backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd

from mlops.config import ServingConfig
from mlops.names import CHALLENGER, CHAMPION
from mlops.objective import Objective
from mlops.prediction_log import log_batch
from serving.arm_stats import ArmCounters
from serving.interleaving import ranking, ranks_of, request_seed, team_draft
from serving.models import LoadedModel, ModelWatcher
from serving.predlog import PredictionLog
from serving.routing import RoutingPlan, routing_keys
from serving.schema import ColumnBlock, FeatureSchema, keys_of, landed_columns

logger = logging.getLogger("serving.scoring")
MAX_BACKGROUND_JOBS = 64  # shadow scoring is skipped beyond this backlog


class NoModelError(Exception):
    """Nothing is loaded yet: the registry has no champion or challenger, or loading failed."""


class UnscorableError(Exception):
    """The model refused records that passed the schema (e.g. 1e300 overflows a forest's float32)."""


@dataclass
class WorkItem:
    request_id: str
    records: list[Any]
    header_key: str | None
    received_us: int  # UTC microseconds since the epoch
    future: asyncio.Future[ScoredRequest]


@dataclass
class RankItem:
    request_id: str
    records: list[Any]
    k: int
    received_us: int
    future: asyncio.Future[RankedRequest]


@dataclass(frozen=True)
class ScoredRequest:
    model_name: str
    mode: str
    scores: np.ndarray  # p(positive), the value, or p(the likeliest class)
    labels: np.ndarray | None  # 0/1, the class, or None (regression)
    to_challenger: np.ndarray | None  # None: every record was answered by `arms[0]`
    arms: tuple[str, str]  # arm names: primary, challenger
    versions: tuple[str, str]
    kind: str = "binary"
    probabilities: list[dict[str, float]] | None = None  # multiclass: per record, class -> p

    def predictions(self) -> list[dict[str, Any]]:
        if self.kind != "binary":
            return self._predictions_of_kind()
        assert self.labels is not None
        scores, labels = self.scores.tolist(), self.labels.tolist()
        if self.to_challenger is None:
            arm, version = self.arms[0], self.versions[0]
            return [
                {"probability": p, "label": y, "arm": arm, "model_version": version}
                for p, y in zip(scores, labels, strict=True)
            ]
        arms, versions = self.arms, self.versions
        return [
            {"probability": p, "label": y, "arm": arms[c], "model_version": versions[c]}
            for p, y, c in zip(scores, labels, self.to_challenger.tolist(), strict=True)
        ]

    def _predictions_of_kind(self) -> list[dict[str, Any]]:
        """Regression: the value; multiclass: the class, its probability and every class's."""
        n = len(self.scores)
        sides = [0] * n if self.to_challenger is None else self.to_challenger.astype(int).tolist()
        answers = []
        for i, (score, side) in enumerate(zip(self.scores.tolist(), sides, strict=True)):
            answer: dict[str, Any]
            if self.kind == "regression":
                answer = {"value": score}
            else:
                assert self.labels is not None and self.probabilities is not None
                label = self.labels[i]
                answer = {
                    "label": label.item() if isinstance(label, np.generic) else label,
                    "probability": score,
                    "probabilities": self.probabilities[i],
                }
            answers.append({**answer, "arm": self.arms[side], "model_version": self.versions[side]})
        return answers


@dataclass(frozen=True)
class RankedRequest:
    """A `/rank` answer: the top k records, best first, each with the arm that placed it."""

    model_name: str
    mode: str  # interleave, or none when one model ranks alone
    rows: list[int]  # positions in the request
    teams: list[str]
    versions: dict[str, str]  # arm -> model version
    scores: dict[str, np.ndarray]  # arm -> its score of every record

    def ranked(self, records: list[Any]) -> list[dict[str, Any]]:
        return [
            {
                "key": records[row].key,
                "position": position,
                "arm": team,
                "model_version": self.versions[team],
                "score": float(self.scores[team][row]),
            }
            for position, (row, team) in enumerate(zip(self.rows, self.teams, strict=True))
        ]


@dataclass
class _Chunk:
    """Rows of one batch scored by one model in one call."""

    model: LoadedModel
    arm: str
    rows: np.ndarray  # positions in the batch
    records: list[Any]
    columns: dict[str, np.ndarray] | None = None
    keys: list[str | None] | None = None
    scores: np.ndarray | None = None
    dimensions: np.ndarray | None = None  # per row: the snapshots a landed record was looked up in


class Scorer:
    def __init__(
        self,
        schema: FeatureSchema,
        watcher: ModelWatcher,
        settings: ServingConfig,
        objective: Objective,
        log: PredictionLog | None,
    ) -> None:
        self.schema = schema
        self.watcher = watcher
        self.settings = settings
        self.objective = objective
        self.threshold = objective.threshold
        self.log = log
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="score")
        self.background = ThreadPoolExecutor(1, thread_name_prefix="log-shadow")
        self._pending_background = 0
        self._pending_lock = threading.Lock()  # the count is raised in the loop, lowered on the thread
        self._queue: asyncio.Queue[WorkItem] | None = None
        self._rank_queue: asyncio.Queue[RankItem] | None = None
        self._consumers: list[asyncio.Task[None]] = []
        self.batches = 0
        self.scored_rows = 0
        self.shadow_rows = 0
        self.shadow_skipped_rows = 0
        self.shadow_errors = 0
        self.last_shadow_error: str | None = None
        self.arm_counters = ArmCounters()  # per-arm calls, errors and latency: the rollout's guardrails

    # -- lifecycle (inside the event loop) --------------------------------------------------
    def start(self) -> None:
        self._queue, self._rank_queue = asyncio.Queue(), asyncio.Queue()
        self._consumers = [
            asyncio.create_task(self._consume(self._queue, self._score_batch), name="micro-batcher"),
            asyncio.create_task(self._consume(self._rank_queue, self._rank_batch), name="rank-batcher"),
        ]

    async def stop(self) -> None:
        for consumer in self._consumers:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
        self.pool.shutdown(wait=True)
        self.background.shutdown(wait=True)  # pending log rows and shadow scores finish

    async def score(self, request_id: str, records: list[Any], header_key: str | None) -> ScoredRequest:
        assert self._queue is not None, "Scorer.start() was not called"
        if self.log is not None and self.log.full:  # back-pressure: wait for room, or refuse
            await asyncio.to_thread(self.log.wait_for_room, self.settings.log_full_wait_seconds)
        future: asyncio.Future[ScoredRequest] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(WorkItem(request_id, records, header_key, time.time_ns() // 1000, future))
        return await future

    async def rank(self, request_id: str, records: list[Any], k: int) -> RankedRequest:
        """Both arms score the records; in interleave mode their rankings are merged by team
        draft (seeded by the request id), else the serving model ranks alone. Both rankings
        are logged, after the answer, with each record's rank and the position its arm gave it.
        Concurrent requests are scored together, as `/predict`'s are."""
        assert self._rank_queue is not None, "Scorer.start() was not called"
        if self.watcher.models.primary is None:
            raise NoModelError("no model is loaded yet")
        if self.log is not None and self.log.full:
            await asyncio.to_thread(self.log.wait_for_room, self.settings.log_full_wait_seconds)
        future: asyncio.Future[RankedRequest] = asyncio.get_running_loop().create_future()
        self._rank_queue.put_nowait(RankItem(request_id, records, k, time.time_ns() // 1000, future))
        return await future

    async def _rank_batch(self, items: list[RankItem]) -> None:
        models = self.watcher.models  # read once: the whole batch uses these models
        primary = models.primary
        if primary is None:
            raise NoModelError("no model is loaded yet")
        challenger = models.under_test if self.settings.mode == "interleave" else None
        arms = {models.primary_arm: primary, **({CHALLENGER: challenger} if challenger is not None else {})}
        records = items[0].records if len(items) == 1 else list(chain.from_iterable(i.records for i in items))
        sizes = [len(i.records) for i in items]
        loop = asyncio.get_running_loop()
        columns, keys = await loop.run_in_executor(self.pool, self.schema.to_columns, records)
        raw = dict(
            zip(
                arms,
                await asyncio.gather(
                    *(loop.run_in_executor(self.pool, m.score_columns, columns) for m in arms.values())
                ),
                strict=True,
            )
        )
        scores = {arm: self.objective.score_of(answer) for arm, answer in raw.items()}
        versions = {arm: model.version for arm, model in arms.items()}
        ranks: dict[str, list[np.ndarray]] = {arm: [] for arm in arms}
        positions: dict[str, list[int | None]] = {arm: [None] * len(records) for arm in arms}
        mode = "interleave" if challenger is not None else "none"
        start = 0
        for item, size in zip(items, sizes, strict=True):
            mine = {arm: s[start : start + size] for arm, s in scores.items()}
            if challenger is not None:
                merged = team_draft(mine[CHAMPION], mine[CHALLENGER], item.k, request_seed(item.request_id))
                rows, teams = merged.rows, merged.teams
            else:
                rows = ranking(mine[models.primary_arm])[: item.k].tolist()
                teams = [models.primary_arm] * item.k
            for position, (row, team) in enumerate(zip(rows, teams, strict=True)):
                positions[team][start + row] = position
            for arm in arms:
                ranks[arm].append(ranks_of(ranking(mine[arm])))
            if not item.future.done():  # the client may have gone away
                item.future.set_result(RankedRequest(primary.name, mode, rows, teams, versions, mine))
            start += size
        self.scored_rows += len(records)
        if self.log is not None:
            request_ids = np.repeat(np.array([i.request_id for i in items], dtype=object), sizes)
            received = np.repeat(np.array([i.received_us for i in items], dtype="datetime64[us]"), sizes)
            for arm, model in arms.items():
                batch = log_batch(
                    self.log.schema,
                    columns,
                    keys,
                    request_ids,
                    received,
                    model.name,
                    model.version,
                    arm,
                    mode,
                    True,
                    scores[arm],
                    self.objective.labels(raw[arm], model.classes),
                    np.concatenate(ranks[arm]),
                    positions[arm],
                )
                self.background.submit(self.log.append, batch)

    # -- the batcher ---------------------------------------------------------------------
    async def _consume(
        self, queue: asyncio.Queue[Any], score: Callable[[list[Any]], Awaitable[None]]
    ) -> None:
        """Take everything queued (up to `batch_max_rows`) as one batch and `score` it."""
        max_rows = self.settings.batch_max_rows
        wait = self.settings.batch_wait_ms / 1000
        while True:
            items = [await queue.get()]
            rows = len(items[0].records)
            if wait > 0 and rows < max_rows:
                await asyncio.sleep(wait)
            while rows < max_rows and not queue.empty():
                item = queue.get_nowait()
                items.append(item)
                rows += len(item.records)
            try:
                await score(items)
            except NoModelError as exc:
                self._fail(items, exc)
            except Exception:
                # One request's records must not fail the others batched with it: score each
                # request alone, and refuse only those the model cannot score.
                for item in items:
                    if item.future.done():
                        continue
                    try:
                        await score([item])
                    except Exception as exc:
                        logger.warning("request %s cannot be scored: %s", item.request_id, exc, exc_info=True)
                        self._fail([item], UnscorableError(f"{type(exc).__name__}: {exc}"))

    @staticmethod
    def _fail(items: list[WorkItem] | list[RankItem], exc: Exception) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(exc)

    async def _score_batch(self, items: list[WorkItem]) -> None:
        models = self.watcher.models  # read once: the whole batch uses these models
        primary = models.primary
        if primary is None:
            raise NoModelError("no model is loaded yet")
        challenger = models.under_test
        s = self.settings
        version = challenger and challenger.version
        plan = RoutingPlan.for_models(s.mode, self.canary_share(version), s.ab_split, version)
        records = items[0].records if len(items) == 1 else list(chain.from_iterable(i.records for i in items))
        sizes = [len(i.records) for i in items]
        n = len(records)

        to_challenger: np.ndarray | None = None
        if plan.splits_traffic and challenger is not None:
            to_challenger = np.concatenate(
                [
                    plan.to_challenger(routing_keys(keys_of(i.records), i.header_key, i.request_id))
                    for i in items
                ]
            )
            if not to_challenger.any():
                to_challenger = None
        chunks = self._plan_chunks(records, primary, models.primary_arm, challenger, to_challenger)

        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self.pool, self._score_chunk, c) for c in chunks))
        kind = self.objective.kind
        scores = np.empty(n, dtype=np.float64)
        probabilities: list[dict[str, float]] | None = None
        if kind == "binary":  # the hot path: a chunk's answer is the score
            for chunk in chunks:
                scores[chunk.rows] = chunk.scores
            labels: np.ndarray | None = (scores >= self.threshold).astype(np.int8)
        else:
            labels = None if kind == "regression" else np.empty(n, dtype=object)
            by_row: list[dict[str, float]] = [{} for _ in range(n)] if kind == "multiclass" else []
            for chunk in chunks:
                assert chunk.scores is not None
                scores[chunk.rows] = self.objective.score_of(chunk.scores)
                if labels is not None:
                    labels[chunk.rows] = self.objective.labels(chunk.scores, chunk.model.classes)
                    names = [str(c) for c in chunk.model.classes or ()]
                    for row, p in zip(chunk.rows.tolist(), chunk.scores.tolist(), strict=True):
                        by_row[row] = dict(zip(names, p, strict=True))
            probabilities = by_row if kind == "multiclass" else None

        arms = (models.primary_arm, CHALLENGER)
        versions = (primary.version, challenger.version if challenger is not None else primary.version)
        start = 0
        for item, size in zip(items, sizes, strict=True):
            end = start + size
            if not item.future.done():  # the client may have gone away
                item.future.set_result(
                    ScoredRequest(
                        model_name=primary.name,
                        mode=plan.mode,
                        scores=scores[start:end],
                        labels=None if labels is None else labels[start:end],
                        to_challenger=None if to_challenger is None else to_challenger[start:end],
                        arms=arms,
                        versions=versions,
                        kind=kind,
                        probabilities=None if probabilities is None else probabilities[start:end],
                    )
                )
            start = end
        self.batches += 1
        self.scored_rows += n

        shadow = challenger if plan.shadows else None
        if self.log is not None or shadow is not None:
            request_ids = np.repeat(np.array([i.request_id for i in items], dtype=object), sizes)
            received = np.repeat(np.array([i.received_us for i in items], dtype="datetime64[us]"), sizes)
            self._in_background(chunks, plan.mode, shadow, request_ids, received)

    def _plan_chunks(
        self,
        records: list[Any],
        primary: LoadedModel,
        primary_arm: str,
        challenger: LoadedModel | None,
        to_challenger: np.ndarray | None,
    ) -> list[_Chunk]:
        """One chunk per arm that has rows. (Cutting a large batch into pieces scored on two
        threads was measured slower: the forest holds the GIL for most of its work.)"""
        if to_challenger is None:
            return [_Chunk(primary, primary_arm, np.arange(len(records)), records)]
        assert challenger is not None
        chunks = []
        for model, arm, rows in (
            (primary, primary_arm, np.flatnonzero(~to_challenger)),
            (challenger, CHALLENGER, np.flatnonzero(to_challenger)),
        ):
            if len(rows):
                chunks.append(_Chunk(model, arm, rows, [records[i] for i in rows]))
        return chunks

    def canary_share(self, challenger_version: str | None) -> float:
        """The share a rollout recorded in the registry for this challenger, else the config's."""
        recorded = self.watcher.rollout_share(challenger_version)
        return self.settings.canary_share if recorded is None else recorded

    def _score_chunk(self, chunk: _Chunk) -> None:
        """On a scoring thread: build the chunk's columns and score them, timed per arm (the
        thread's CPU time: see serving.arm_stats)."""
        started = time.thread_time()
        failed = True
        try:
            chunk.columns, chunk.keys, chunk.dimensions = self.feature_columns(chunk.model, chunk.records)
            chunk.scores = chunk.model.score_columns(chunk.columns)
            failed = False
        finally:
            self.arm_counters.record(chunk.arm, len(chunk.rows), time.thread_time() - started, failed)

    def feature_columns(
        self, model: LoadedModel, records: list[Any]
    ) -> tuple[dict[str, np.ndarray], list[str | None], np.ndarray | None]:
        """The feature columns of a batch's records, its keys, and per row the snapshots a
        landed record was looked up in (None when every record came as features). Feature
        rows are typed by the schema; landed records go through the model's record step."""
        if isinstance(records, ColumnBlock):  # came as columns: they are the model's already
            return records.columns, records.keys, None
        feature_type = self.schema.record_type
        landed = np.fromiter((type(r) is not feature_type for r in records), dtype=bool, count=len(records))
        if not landed.any():
            columns, keys = self.schema.to_columns(records)
            return columns, keys, None
        dimensions = np.full(len(records), None, dtype=object)
        dimensions[landed] = model.dimensions
        if landed.all():
            raw, keys = landed_columns(records, model.record.inputs if model.record else {})
            return model.landed_features(raw), keys, dimensions
        # Both forms in one batch: each through its own path, then back in request order.
        parts = []
        for rows in (np.flatnonzero(~landed), np.flatnonzero(landed)):
            part = [records[i] for i in rows]
            parts.append((rows, *self.feature_columns(model, part)[:2]))
        columns = {}
        for name in parts[0][1]:
            values = [p[1][name] for p in parts]
            out = np.empty(len(records), dtype=np.result_type(*(v.dtype for v in values)))
            for (rows, _, _), part_values in zip(parts, values, strict=True):
                out[rows] = part_values
            columns[name] = out
        keys: list[str | None] = [None] * len(records)
        for rows, _, part_keys in parts:
            for row, key in zip(rows.tolist(), part_keys, strict=True):
                keys[row] = key
        return columns, keys, dimensions

    # -- after the answers: the log and the shadow ------------------------------------------
    def _in_background(
        self,
        chunks: list[_Chunk],
        mode: str,
        shadow: LoadedModel | None,
        request_ids: np.ndarray,
        received: np.ndarray,
    ) -> None:
        if shadow is not None and self._pending_background >= MAX_BACKGROUND_JOBS:
            self.shadow_skipped_rows += sum(len(c.rows) for c in chunks)
            shadow = None
        with self._pending_lock:
            self._pending_background += 1
        future = self.background.submit(self._log_and_shadow, chunks, mode, shadow, request_ids, received)
        future.add_done_callback(self._background_done)

    def _background_done(self, future: Future[None]) -> None:
        with self._pending_lock:
            self._pending_background -= 1
        if future.exception() is not None:
            logger.error("logging or shadow scoring failed: %s", future.exception())

    def _log_and_shadow(
        self,
        chunks: list[_Chunk],
        mode: str,
        shadow: LoadedModel | None,
        request_ids: np.ndarray,
        received: np.ndarray,
    ) -> None:
        for chunk in chunks:
            assert chunk.columns is not None and chunk.keys is not None and chunk.scores is not None
            self._append(chunk, chunk.model, chunk.arm, mode, True, chunk.scores, request_ids, received)
            if shadow is None:
                continue
            try:
                columns = chunk.columns
                if chunk.dimensions is not None and shadow.dimensions != chunk.model.dimensions:
                    columns = self.feature_columns(shadow, chunk.records)[0]  # looked up in its own tables
                shadow_scores = shadow.score_columns(columns)
            except Exception as exc:  # a broken challenger must not stop the champion's log
                self.shadow_errors += 1
                self.last_shadow_error = f"{type(exc).__name__}: {exc}"[:500]
                continue
            self.shadow_rows += len(chunk.rows)
            self._append(chunk, shadow, CHALLENGER, mode, False, shadow_scores, request_ids, received)

    def _append(
        self,
        chunk: _Chunk,
        model: LoadedModel,
        arm: str,
        mode: str,
        served: bool,
        scores: np.ndarray,
        request_ids: np.ndarray,
        received: np.ndarray,
    ) -> None:
        if self.log is None:
            return
        assert chunk.columns is not None and chunk.keys is not None
        self.log.append(
            log_batch(
                self.log.schema,
                chunk.columns,
                chunk.keys,
                request_ids[chunk.rows],
                received[chunk.rows],
                model.name,
                model.version,
                arm,
                mode,
                served,
                self.objective.score_of(scores),
                self.objective.labels(scores, model.classes),
                dimensions=chunk.dimensions
                if served or chunk.dimensions is None
                else _shadow_dims(chunk, model),
            )
        )

    def describe(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "scored_rows": self.scored_rows,
            "mean_batch_rows": round(self.scored_rows / self.batches, 2) if self.batches else None,
            "shadow_rows": self.shadow_rows,
            "shadow_skipped_rows": self.shadow_skipped_rows,
            "shadow_errors": self.shadow_errors,
            "last_shadow_error": self.last_shadow_error,
            "by_arm": self.arm_counters.describe(),
        }


def _shadow_dims(chunk: _Chunk, shadow: LoadedModel) -> np.ndarray:
    """The snapshots the shadow model looked its landed rows up in."""
    assert chunk.dimensions is not None
    return np.where(pd.isna(chunk.dimensions), None, shadow.dimensions).astype(object)
