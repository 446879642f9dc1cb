"""Lineage: the chain of one model version, from the landing files it was trained on to the
traffic it served, assembled only from what the pipeline recorded.

landing files → snapshots → validation results → training run → registered version →
gate decisions → periods as champion → prediction-log partitions.

Each link comes from a record: the training run's `lineage/inputs.json`,
`validation/summary.json`, `environment/packages.json` and `config/resolved.json`
artifacts (see `tasks.lineage_records`), the version's tags, the promotion and rollback
runs, the prediction log's `model_version` column. A link with no record says "not
recorded"; nothing is inferred.

`assemble_lineage` and the helpers below are plain functions over recorded facts;
`collect_lineage` reads those facts through the Tracker and the stores, re-hashing the
snapshots; `read_recorded_snapshots` reads them back for a reproduction. Rendering the
chain is `tasks.lineage_render`'s.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlops.errors import ConfigError, LandingError
from mlops.names import (
    CHAMPION,
    CONFIG_FILE,
    DECISION_FILE,
    INPUTS_FILE,
    PACKAGES_FILE,
    SNAPSHOTS_TAG,
    TRAINING_FINGERPRINT_TAG,
    TRAINING_FRAME_SUMMARY_FILE,
    VALIDATION_SUMMARY_FILE,
    VALIDATION_TAG,
)
from mlops.prediction_log import (
    ARM,
    MODEL_NAME,
    MODEL_VERSION,
    SERVED,
    log_files,
    partition_date,
    partition_name,
    read_log_file,
)
from mlops.storage import Store, sha256_bytes
from tasks.features import fingerprint_inputs
from tasks.ingest import Snapshot, TimeColumn, read_table
from tasks.lineage_records import NOT_RECORDED

if TYPE_CHECKING:
    from mlops.tracking import ModelVersionInfo, RunRecord, Tracker

SNAPSHOT_FIELDS = {f.name for f in fields(Snapshot)}
MODEL_REF = re.compile(r"^(?P<name>[^@/]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))$")


# -- the chain ----------------------------------------------------------------------------


@dataclass
class InputLink:
    """A landing file and the snapshot it became."""

    name: str
    context: str  # training, holdout or dimension
    source_uri: str
    size: int | None
    sha256: str
    rows: int | None
    snapshot_uri: str
    snapshot_key: str
    snapshot_status: str  # present and verified, missing, modified, or not checked


@dataclass
class ValidationLink:
    batch: str
    suite: str
    suite_sha256: str
    passed: bool | None
    expectations: int | None
    failed: int | None
    result_url: str


@dataclass
class TrainingLink:
    run_id: str
    run_name: str
    run_url: str
    started_at: str
    prefect_run_url: str
    git_commit: str
    config_hash: str
    training_fingerprint: str
    selected_candidate: str
    seed: str
    params: dict[str, str]
    metrics: dict[str, float]
    python: str
    platform: str
    packages: dict[str, str] | None  # None: not recorded
    config_recorded: bool


@dataclass
class VersionLink:
    model_name: str
    version: str
    created_at: str
    aliases: list[str]
    description: str
    url: str
    validation: str
    holdout_metrics: dict[str, float]


@dataclass
class DecisionLink:
    verdict: str  # promoted or rejected
    recorded_at: str
    compared_with: str
    eval_period: str
    eval_rows: str
    reasons: list[str]
    run_url: str
    prefect_run_url: str


@dataclass
class ChampionEvent:
    """The champion alias moved to `champion`, by a recorded promotion or rollback."""

    at_ms: int
    champion: str
    cause: str
    run_url: str


@dataclass
class ChampionPeriod:
    start: str
    end: str  # "now" while it still is the champion
    began_by: str
    ended_by: str


@dataclass
class ServedPartition:
    partition: str  # date=YYYY-MM-DD
    rows: int
    served_rows: int  # returned to a caller (shadow scores are logged, never returned)
    arms: dict[str, int]


@dataclass
class Check:
    what: str
    ok: bool
    detail: str


@dataclass
class Lineage:
    model_name: str
    version: str
    requested: str
    inputs: list[InputLink]
    validation: list[ValidationLink]
    training: TrainingLink
    registered: VersionLink
    decisions: list[DecisionLink]
    champion_periods: list[ChampionPeriod]
    served: list[ServedPartition]
    checks: list[Check]
    gaps: list[str] = field(default_factory=list)  # links with no record

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def consistent(self) -> bool:
        return all(c.ok for c in self.checks)


@dataclass(frozen=True)
class RecordedFacts:
    """Everything the chain is assembled from, as read from MLflow and the stores."""

    requested: str
    version: ModelVersionInfo
    version_url: str
    run: RunRecord
    inputs: list[dict[str, Any]] | None
    validation: list[dict[str, Any]] | None
    validation_artifacts: list[str]
    artifact_url_prefix: str  # + artifact path = the artifact in the MLflow UI
    environment: dict[str, Any] | None
    config_recorded: bool
    snapshot_status: dict[str, str]  # snapshot key -> status
    decisions: list[DecisionLink]
    champion_events: list[ChampionEvent]
    current_champion: str | None
    served: list[ServedPartition] | None  # None: no prediction log to read


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if ms else NOT_RECORDED


def parse_model_ref(ref: str) -> tuple[str, str | None, str | None]:
    """`name/3` → (name, "3", None); `name@champion` → (name, None, "champion")."""
    match = MODEL_REF.match(ref.strip())
    if match is None:
        raise ConfigError(f"{ref!r} is not a model reference: use <model>/<version> or <model>@<alias>")
    return match["name"], match["version"], match["alias"]


def snapshot_status(store: Store, key: str, sha256: str) -> str:
    """Whether a snapshot still holds the bytes the version was trained on."""
    if not store.exists(key):
        return "missing"
    actual = sha256_bytes(store.read_bytes(key))
    return "present, sha256 verified" if actual == sha256 else f"modified: sha256 is now {actual}"


def champion_periods(
    events: list[ChampionEvent], version: str, current_champion: str | None
) -> tuple[list[ChampionPeriod], list[str]]:
    """The intervals in which `version` held the champion alias, from the recorded moves of
    the alias; and what the records cannot explain (an alias moved outside the pipeline)."""
    periods: list[ChampionPeriod] = []
    gaps: list[str] = []
    open_period: ChampionPeriod | None = None
    holder: str | None = None
    for event in sorted(events, key=lambda e: e.at_ms):
        if open_period is not None and event.champion != version:
            open_period.end, open_period.ended_by = iso(event.at_ms), f"{event.cause} ({event.run_url})"
            periods.append(open_period)
            open_period = None
        elif open_period is None and event.champion == version:
            open_period = ChampionPeriod(iso(event.at_ms), "", f"{event.cause} ({event.run_url})", "")
        holder = event.champion
    if open_period is not None:
        if current_champion == version:
            open_period.end, open_period.ended_by = "now", ""
        else:
            open_period.end = NOT_RECORDED
            open_period.ended_by = (
                f"the alias now points at {current_champion or 'no version'} without a recorded promotion"
                " or rollback"
            )
        periods.append(open_period)
    elif current_champion == version:
        periods.append(ChampionPeriod(NOT_RECORDED, "now", NOT_RECORDED, ""))
        gaps.append(
            f"v{version} is the champion, but no promotion or rollback record moved the alias to it"
            f" (last recorded champion: {holder or 'none'})"
        )
    return periods, gaps


def served_partitions(
    store: Store, model_name: str, version: str, since: date | None
) -> list[ServedPartition]:
    """The prediction-log partitions holding rows scored by this version."""
    counts: dict[str, ServedPartition] = {}
    for key in log_files(store, since=since):
        table = read_log_file(store, key, [MODEL_NAME, MODEL_VERSION, ARM, SERVED]).to_pandas()
        mine = table[(table[MODEL_NAME] == model_name) & (table[MODEL_VERSION].astype(str) == version)]
        if mine.empty:
            continue
        day = partition_date(key)
        assert day is not None  # log_files keeps partition files only
        partition = partition_name(day)
        entry = counts.setdefault(partition, ServedPartition(partition, 0, 0, {}))
        entry.rows += len(mine)
        entry.served_rows += int(mine[SERVED].fillna(False).astype(bool).sum())
        for arm, n in mine[ARM].fillna("unknown").value_counts().items():
            entry.arms[str(arm)] = entry.arms.get(str(arm), 0) + int(n)
    return [counts[p] for p in sorted(counts)]


def assemble_lineage(facts: RecordedFacts) -> Lineage:
    """The chain from the recorded facts, with a check on each link that can be cross-checked."""
    version, run, tags = facts.version, facts.run, facts.version.tags
    gaps: list[str] = []
    checks: list[Check] = []

    inputs = []
    for entry in facts.inputs or []:
        inputs.append(
            InputLink(
                name=entry.get("name") or f"{entry['table']}/{entry.get('period') or 'static'}",
                context=entry.get("context", NOT_RECORDED),
                source_uri=entry.get("source_uri", NOT_RECORDED),
                size=entry.get("size"),
                sha256=entry["sha256"],
                rows=entry.get("rows"),
                snapshot_uri=entry.get("uri", NOT_RECORDED),
                snapshot_key=entry.get("key", ""),
                snapshot_status=facts.snapshot_status.get(entry.get("key", ""), "not checked"),
            )
        )
    if facts.inputs is None:
        gaps.append(f"landing files and snapshots: {INPUTS_FILE} {NOT_RECORDED} on run {run.run_id}")
    else:
        recorded = json.loads(tags[SNAPSHOTS_TAG]) if SNAPSHOTS_TAG in tags else None
        ingested = {i.name: i.sha256 for i in inputs}
        if recorded is None:
            gaps.append("the version's `snapshots` tag is not recorded")
        else:
            same = recorded == ingested
            checks.append(
                Check(
                    "version tag `snapshots` = hashes the run ingested",
                    same,
                    "same names and sha256"
                    if same
                    else f"differ: {sorted(set(recorded.items()) ^ set(ingested.items()))}",
                )
            )
        config_hash = tags.get("config_hash") or run.tags.get("config_hash")
        fingerprint = tags.get(TRAINING_FINGERPRINT_TAG)
        if config_hash and fingerprint:
            expected = fingerprint_inputs(config_hash, *sorted(ingested.values()))
            checks.append(
                Check(
                    "training fingerprint = hash(config hash, snapshot hashes)",
                    expected == fingerprint,
                    fingerprint
                    if expected == fingerprint
                    else f"recorded {fingerprint}, computed {expected}",
                )
            )
        for link in inputs:
            if link.snapshot_status != "not checked":
                checks.append(
                    Check(
                        f"snapshot {link.name} holds the trained bytes",
                        link.snapshot_status.startswith("present"),
                        f"{link.snapshot_uri}: {link.snapshot_status}",
                    )
                )

    validation = []
    if facts.validation is not None:
        for entry in facts.validation:
            validation.append(
                ValidationLink(
                    batch=entry["batch"],
                    suite=entry["suite"],
                    suite_sha256=entry.get("suite_sha256", NOT_RECORDED),
                    passed=entry.get("passed"),
                    expectations=entry.get("expectations"),
                    failed=entry.get("failed"),
                    result_url=facts.artifact_url_prefix + entry["artifact"] if entry.get("artifact") else "",
                )
            )
    else:
        for path in facts.validation_artifacts:
            validation.append(
                ValidationLink(
                    path, NOT_RECORDED, NOT_RECORDED, None, None, None, facts.artifact_url_prefix + path
                )
            )
        gaps.append(
            f"per-suite validation outcomes ({VALIDATION_SUMMARY_FILE}) {NOT_RECORDED};"
            f" the run's tag says validation {run.tags.get('validation', NOT_RECORDED)}"
        )
    if validation and all(v.passed is not None for v in validation):
        checks.append(
            Check("every suite passed", all(v.passed for v in validation), f"{len(validation)} suite results")
        )

    environment = facts.environment
    if environment is None:
        gaps.append(f"package versions ({PACKAGES_FILE}) {NOT_RECORDED}")
    if not facts.config_recorded:
        gaps.append(f"the resolved config ({CONFIG_FILE}) {NOT_RECORDED}; only its hash is")
    training = TrainingLink(
        run_id=run.run_id,
        run_name=run.name,
        run_url=run.url,
        started_at=iso(run.start_ms),
        prefect_run_url=run.tags.get("prefect_flow_run_url") or NOT_RECORDED,
        git_commit=run.tags.get("git_commit") or tags.get("git_commit") or NOT_RECORDED,
        config_hash=run.tags.get("config_hash") or tags.get("config_hash") or NOT_RECORDED,
        training_fingerprint=tags.get(TRAINING_FINGERPRINT_TAG)
        or run.params.get("training_fingerprint")
        or NOT_RECORDED,
        selected_candidate=run.tags.get("selected_candidate") or tags.get("candidate") or NOT_RECORDED,
        seed=run.params.get("seed", NOT_RECORDED),
        params=dict(sorted(run.params.items())),
        metrics=dict(sorted(run.metrics.items())),
        python=environment["python"] if environment else NOT_RECORDED,
        platform=environment["platform"] if environment else NOT_RECORDED,
        packages=environment["packages"] if environment else None,
        config_recorded=facts.config_recorded,
    )
    for key in ("git_commit", "config_hash", "prefect_run_url"):
        if getattr(training, key) == NOT_RECORDED:
            gaps.append(f"training run {key.replace('_', ' ')} {NOT_RECORDED}")

    registered = VersionLink(
        model_name=version.name,
        version=version.version,
        created_at=iso(version.created_ms),
        aliases=sorted(version.aliases),
        description=version.description,
        url=facts.version_url,
        validation=tags.get(VALIDATION_TAG, NOT_RECORDED),
        holdout_metrics={k: v for k, v in sorted(run.metrics.items()) if k.startswith("holdout_")},
    )
    if not facts.decisions:
        gaps.append("gate decision: none recorded (the version was never judged by `mlops promote`)")
    periods, period_gaps = champion_periods(facts.champion_events, version.version, facts.current_champion)
    gaps += period_gaps
    if facts.served is None:
        gaps.append("prediction log: none to read")
    return Lineage(
        model_name=version.name,
        version=version.version,
        requested=facts.requested,
        inputs=inputs,
        validation=validation,
        training=training,
        registered=registered,
        decisions=facts.decisions,
        champion_periods=periods,
        served=facts.served or [],
        checks=checks,
        gaps=gaps,
    )


# -- reading the records ------------------------------------------------------------------


def resolve_version(tracker: Tracker, ref: str) -> ModelVersionInfo:
    """The version a `<model>/<version>` or `<model>@<alias>` reference names."""
    name, version, alias = parse_model_ref(ref)
    if alias is not None:
        version = tracker.aliases(name).get(alias)
        if version is None:
            raise ConfigError(f"model {name!r} has no version with alias {alias!r}")
    assert version is not None
    info = tracker.model_version(name, version)
    if info is None:
        raise ConfigError(f"model {name!r} has no version {version!r} in {tracker.tracking_uri}")
    return info


def decision_links(tracker: Tracker, model_name: str, version: str) -> list[DecisionLink]:
    links = []
    for run in tracker.find_runs(
        f"tags.pipeline = 'promotion' and tags.model_name = '{model_name}'"
        f" and tags.challenger_version = '{version}'"
    ):
        document = tracker.read_json(run.run_id, DECISION_FILE) or {}
        links.append(
            DecisionLink(
                verdict=run.tags.get("promotion", NOT_RECORDED),
                recorded_at=document.get("decided_at") or iso(run.start_ms),
                compared_with=run.tags.get("compared_with", NOT_RECORDED),
                eval_period=run.params.get("eval_period", NOT_RECORDED),
                eval_rows=run.params.get("eval_rows", NOT_RECORDED),
                reasons=list(document.get("reasons") or []),
                run_url=run.url,
                prefect_run_url=run.tags.get("prefect_flow_run_url") or NOT_RECORDED,
            )
        )
    return links


def champion_events(tracker: Tracker, model_name: str) -> list[ChampionEvent]:
    """Every recorded move of the champion alias: promotions that promoted, and rollbacks."""
    events = [
        ChampionEvent(run.start_ms, run.tags["challenger_version"], "promotion", run.url)
        for run in tracker.find_runs(
            f"tags.pipeline = 'promotion' and tags.model_name = '{model_name}' and tags.promotion = 'promoted'"
        )
    ]
    events += [
        ChampionEvent(run.start_ms, run.params["to_version"], "rollback", run.url)
        for run in tracker.find_runs(f"tags.pipeline = 'rollback' and tags.model_name = '{model_name}'")
        if "to_version" in run.params
    ]
    return sorted(events, key=lambda e: e.at_ms)


def collect_lineage(
    tracker: Tracker,
    snapshots: Store,
    predictions: Store | None,
    ref: str,
    verify_snapshots: bool = True,
) -> Lineage:
    """Read every record of one version and assemble its chain."""
    version = resolve_version(tracker, ref)
    run = tracker.run_record(version.run_id)
    if run is None:
        raise ConfigError(
            f"{version.name} v{version.version} names training run {version.run_id}, which the tracking"
            f" server no longer has"
        )
    inputs = tracker.read_json(run.run_id, INPUTS_FILE)
    statuses = {}
    if verify_snapshots and inputs:
        statuses = {e["key"]: snapshot_status(snapshots, e["key"], e["sha256"]) for e in inputs if "key" in e}
    validation = tracker.read_json(run.run_id, VALIDATION_SUMMARY_FILE)
    frame_summary = tracker.read_json(run.run_id, TRAINING_FRAME_SUMMARY_FILE)
    if validation is not None and frame_summary is not None:
        validation = [*validation, frame_summary]
    artifacts = [] if validation is not None else tracker.artifact_paths(run.run_id, "validation")
    created = datetime.fromtimestamp(version.created_ms / 1000, UTC).date() if version.created_ms else None
    facts = RecordedFacts(
        requested=ref,
        version=version,
        version_url=tracker.version_url(version.name, version.version),
        run=run,
        inputs=inputs,
        validation=validation,
        validation_artifacts=[p for p in artifacts if p.endswith(".json")],
        artifact_url_prefix=f"{run.url}/artifactPath/",
        environment=tracker.read_json(run.run_id, PACKAGES_FILE),
        config_recorded=CONFIG_FILE in tracker.artifact_paths(run.run_id, "config"),
        snapshot_status=statuses,
        decisions=decision_links(tracker, version.name, version.version),
        champion_events=champion_events(tracker, version.name),
        current_champion=tracker.aliases(version.name).get(CHAMPION),
        served=None
        if predictions is None
        else served_partitions(predictions, version.name, version.version, created),
    )
    return assemble_lineage(facts)


# -- reproduction: the recorded snapshots back ----------------------------------------------


def read_recorded_snapshots(
    store: Store, inputs: list[dict[str, Any]], times: TimeColumn | None = None
) -> list[tuple[Snapshot, pd.DataFrame]]:
    """Every snapshot a run recorded, read back by its hash. Refuses, naming the file, when one
    is gone or its bytes changed: a rebuild from other bytes would prove nothing."""
    loaded = []
    for entry in inputs:
        snapshot = Snapshot(**{k: v for k, v in entry.items() if k in SNAPSHOT_FIELDS})
        where = f"snapshot {store.uri_for(snapshot.key)} ({entry.get('name', snapshot.table)}, landed as {snapshot.source_uri})"
        if not store.exists(snapshot.key):
            raise LandingError(
                f"{where} is gone: restore it (sha256 {snapshot.sha256}) or re-ingest a landing file with"
                " exactly those bytes; the version cannot be reproduced without it"
            )
        data = store.read_bytes(snapshot.key)
        actual = sha256_bytes(data)
        if actual != snapshot.sha256:
            raise LandingError(
                f"{where} was modified: its sha256 is {actual}, the version was trained on {snapshot.sha256};"
                " restore the original bytes, the version cannot be reproduced from these"
            )
        loaded.append((snapshot, read_table(data, snapshot.uri, times)))
    return loaded
