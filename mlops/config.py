"""The project configuration: one typed object, read once at start and passed down.

Everything dataset-specific (tables, joins, target, features, suites, candidates) lives
in the YAML file; nothing in `tasks/` or `flows/` knows which dataset it is working on.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mlops.errors import ConfigError
from mlops.expressions import ExpressionError, parse_expression
from mlops.periods import Cadence, Periods


class Strict(BaseModel):
    """Base for every config section: an unknown key is an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class S3Settings(Strict):
    endpoint_url: str | None = None  # MinIO or a moto server stands in for S3 through this
    region: str = "us-east-1"
    max_attempts: int = Field(5, ge=1, le=20)  # total attempts, retries included
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(30.0, gt=0)
    # botocore's retry mode: standard backs off exponentially on 5xx, throttling and timeouts;
    # adaptive also rate-limits the client after throttling
    retry_mode: Literal["standard", "adaptive", "legacy"] = "standard"


class TableSpec(Strict):
    path: str  # relative to the landing root; "{period}" marks a partitioned table
    suite: str | None = None  # name of a suite in expectations/

    @property
    def partitioned(self) -> bool:
        return "{period}" in self.path

    def key(self, period: str | None = None) -> str:
        if self.partitioned:
            if period is None:
                raise ConfigError(f"table path {self.path!r} needs a period")
            return self.path.format(period=period)
        return self.path


class JoinSpec(Strict):
    table: str
    match: dict[str, str]  # batch column -> column of the joined table
    columns: dict[str, str]  # column of the joined table -> name in the joined frame


class DataConfig(Strict):
    landing_uri: str = "state/landing"  # where upstream drops files
    snapshot_uri: str = "state/snapshots"  # immutable raw copies keyed by content hash
    quarantine_uri: str = "state/quarantine"  # rejected batches with the reason
    s3: S3Settings = S3Settings()
    batch_table: str  # the partitioned table that arrives period by period
    tables: dict[str, TableSpec]
    joins: list[JoinSpec] = []
    time_column: str
    # What one landing file of the batch table holds, and how its period is written
    # ('2013-07-04', '2013-W27', '2013-07'); every period argument follows it.
    cadence: Cadence = "month"
    # Naive times in the time column are read in this zone, and periods begin at its midnight.
    timezone: str = "UTC"
    key_columns: list[str] = []

    @property
    def periods(self) -> Periods:
        return Periods(self.cadence)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. UTC, America/New_York)") from None
        return value

    @model_validator(mode="after")
    def _tables_exist(self) -> DataConfig:
        if self.batch_table not in self.tables:
            raise ValueError(f"batch_table {self.batch_table!r} is not one of tables {sorted(self.tables)}")
        if not self.tables[self.batch_table].partitioned:
            raise ValueError(f"batch_table {self.batch_table!r} path must contain '{{period}}'")
        for join in self.joins:
            if join.table not in self.tables:
                raise ValueError(f"joins: table {join.table!r} is not one of tables {sorted(self.tables)}")
        return self


TaskKind = Literal["binary", "multiclass", "regression"]
# What `training.metric` and the quality limits may name for each kind, and whether higher
# is better (mlops.objective computes them).
TASK_METRICS: dict[str, dict[str, bool]] = {
    "binary": {
        "roc_auc": True,
        "pr_auc": True,
        "log_loss": False,
        "brier": False,
        "f1": True,
        "accuracy": True,
    },
    "multiclass": {"log_loss": False, "macro_f1": True, "accuracy": True, "roc_auc_ovr": True},
    "regression": {"rmse": False, "mae": False, "r2": True, "mape": False},
}
DEFAULT_METRIC: dict[str, str] = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}


class TargetConfig(Strict):
    """What a model predicts. binary: a 0/1 label made by `column op value`; multiclass: the
    column's values are the classes (`classes` fixes their order and rejects others; `bins`
    cuts a numeric column into them); regression: the column as a number."""

    kind: TaskKind = "binary"
    column: str
    op: Literal[">=", ">", "<=", "<", "==", "!=", "in"] | None = None
    value: float | str | list[float | str] | None = None
    classes: list[str | int] | None = None
    bins: list[float] | None = None  # multiclass: edges; below bins[0] is classes[0], and so on
    label: str = "label"  # name of the column the pipeline derives (0/1, class or number)

    @model_validator(mode="after")
    def _fits_kind(self) -> TargetConfig:
        if self.kind == "binary":
            if self.op is None or self.value is None:
                raise ValueError("a binary target needs op and value (the rule that makes a 1)")
            if self.classes or self.bins:
                raise ValueError("classes and bins are for kind: multiclass")
            return self
        if self.op is not None or self.value is not None:
            raise ValueError(f"op and value make a binary label; a {self.kind} target takes the column as is")
        if self.kind == "regression" and (self.classes or self.bins):
            raise ValueError("classes and bins are for kind: multiclass")
        if self.classes is not None and (
            len(set(self.classes)) != len(self.classes) or len(self.classes) < 2
        ):
            raise ValueError(f"classes must be two or more distinct values, got {self.classes}")
        if self.bins is not None:
            if self.classes is None or len(self.classes) != len(self.bins) + 1:
                raise ValueError("bins needs classes, one more class than edges")
            if sorted(self.bins) != self.bins or len(set(self.bins)) != len(self.bins):
                raise ValueError(f"bins must increase, got {self.bins}")
        return self


class FeaturesConfig(Strict):
    numeric: list[str]
    categorical: list[str] = []
    derived: dict[str, str] = {}  # new column -> expression over joined columns (mlops/expressions.py)
    training_suite: str | None = None  # suite run on the labelled training frame

    @field_validator("derived")
    @classmethod
    def _allowed_expressions(cls, derived: dict[str, str]) -> dict[str, str]:
        """Refused at load, naming it: an expression outside the allowed operations."""
        for name, text in derived.items():
            try:
                parse_expression(text)
            except ExpressionError as exc:
                raise ValueError(f"derived.{name}: {exc}") from None
        return derived

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @model_validator(mode="after")
    def _no_overlap(self) -> FeaturesConfig:
        both = set(self.numeric) & set(self.categorical)
        if both:
            raise ValueError(f"columns listed as both numeric and categorical: {sorted(both)}")
        return self


class SplitConfig(Strict):
    holdout_periods: int = Field(1, ge=1)  # the latest periods of a request, never trained on
    cv_folds: int = Field(3, ge=2)  # time-ordered folds for the hyperparameter search


# The short names pick the regressor or classifier for target.kind (tasks/train.py);
# anything else is a dotted path to a scikit-learn-compatible class, checked at start.
SHORT_ESTIMATORS = ("dummy", "linear", "logistic_regression", "hist_gradient_boosting", "random_forest")


class Distribution(Strict):
    """A search range: `uniform`/`loguniform` over floats, `randint` over integers."""

    kind: Literal["uniform", "loguniform", "randint"]
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Distribution:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class CandidateConfig(Strict):
    name: str
    estimator: str  # a short name above, or e.g. sklearn.linear_model.Ridge, lightgbm.LGBMRegressor
    baseline: bool = False
    encoding: Literal["onehot", "ordinal"] = "onehot"
    params: dict[str, Any] = {}
    search: dict[str, list[Any] | Distribution] = {}
    n_iter: int = Field(1, ge=1)


class TrainingConfig(Strict):
    seed: int = 42
    metric: str = "roc_auc"  # one of TASK_METRICS[target.kind]; defaults by kind
    min_gain_over_baseline: float = 0.0
    threshold: float = Field(0.5, gt=0, lt=1)  # binary: the probability that makes a positive label
    max_train_rows: int | None = Field(None, ge=100)  # seeded subsample of the train split
    importance_rows: int = Field(5000, ge=100)  # holdout rows used for permutation importance
    importance_repeats: int = Field(3, ge=1)
    candidates: list[CandidateConfig]

    @model_validator(mode="after")
    def _candidates(self) -> TrainingConfig:
        names = [c.name for c in self.candidates]
        if len(set(names)) != len(names):
            raise ValueError(f"candidate names must be unique, got {names}")
        if not any(c.baseline for c in self.candidates):
            raise ValueError("at least one candidate must be a baseline (baseline: true)")
        if all(c.baseline for c in self.candidates):
            raise ValueError("at least one candidate must not be a baseline")
        return self


class RegistryConfig(Strict):
    model_name: str
    experiment: str


class QualityGateConfig(Strict):
    """Absolute limits on the challenger's metrics (names from TASK_METRICS of the target's kind).
    With none set, a binary model must reach ROC-AUC 0.65 and Brier 0.2; other kinds have none."""

    min: dict[str, float] = {}  # metric -> the lowest value that passes
    max: dict[str, float] = {}  # metric -> the highest value that passes
    min_roc_auc: float | None = Field(None, ge=0, le=1)  # the same as min: {roc_auc: ...}
    max_brier: float | None = Field(None, ge=0, le=1)  # the same as max: {brier: ...}

    def limits(self, kind: str) -> list[tuple[str, str, float]]:
        """(metric, op, threshold) of each limit, in a stable order."""
        lows, highs = dict(self.min), dict(self.max)
        if self.min_roc_auc is not None:
            lows["roc_auc"] = self.min_roc_auc
        if self.max_brier is not None:
            highs["brier"] = self.max_brier
        if kind == "binary" and not lows and not highs:
            lows, highs = {"roc_auc": 0.65}, {"brier": 0.2}
        return [(m, ">=", v) for m, v in lows.items()] + [(m, "<=", v) for m, v in highs.items()]


class ChampionGateConfig(Strict):
    # point estimate of the gain in training.metric (better minus worse; lower RMSE is a gain)
    min_gain: float = Field(0.0, ge=0, validation_alias=AliasChoices("min_gain", "min_roc_auc_gain"))
    bootstrap_resamples: int = Field(1000, ge=100)  # paired resamples for the confidence interval
    confidence: float = Field(0.95, gt=0.5, lt=1)  # its lower bound must be above zero


class SliceGateConfig(Strict):
    columns: list[str] = []  # one gate per column: no value of it may lose much to the champion
    # in training.metric: how much worse than the champion a slice may be
    max_drop: float = Field(0.03, ge=0, validation_alias=AliasChoices("max_drop", "max_roc_auc_drop"))
    min_rows: int = Field(200, ge=10)  # smaller slices are skipped (and listed as skipped)


class FairnessGateConfig(Strict):
    """Limits on how differently the challenger treats the groups of a column (any column of
    the evaluation data). Each figure is the gap between the best- and worst-treated group;
    each has an absolute limit, and may grow at most `max_increase_over_champion` over the
    champion's on the same rows. Groups smaller than `min_rows` are left out."""

    groups: list[str] = []
    min_rows: int = Field(200, ge=10)
    max_demographic_parity_difference: float | None = Field(None, ge=0)  # binary: selection rates
    max_equalized_odds_difference: float | None = Field(None, ge=0)  # binary: worst TPR/FPR gap
    max_metric_gap: float | None = Field(None, ge=0)  # any task: training.metric across groups
    max_increase_over_champion: float | None = Field(None, ge=0)


class OnlineGateConfig(Strict):
    """Evidence from served traffic (the labelled log of the last `days` days): the challenger's
    labelled shadow rows, paired with the champion's answers to the same requests, or else
    its served A/B rows against the champion's; the CI of the gain must exclude zero."""

    min_rows: int = Field(500, ge=30)
    days: int = Field(14, ge=1)
    required: bool = True  # too few rows: fail (true) or skip (false)
    bootstrap_resamples: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1)


class OperationalGateConfig(Strict):
    max_p95_latency_ms: float = Field(50.0, gt=0)  # one-row predict, in a fresh process
    min_rows_per_second: float = Field(20000.0, gt=0)  # one batch predict of `batch_rows`
    max_artifact_mb: float = Field(100.0, gt=0)
    latency_calls: int = Field(200, ge=20)
    batch_rows: int = Field(10000, ge=100)
    timeout_seconds: float = Field(300.0, gt=0)  # the whole probe: download, load, measure


class ApprovalConfig(Strict):
    required: bool = False  # pause for a human once the automated gates pass
    timeout_seconds: int = Field(3600, ge=1)  # no answer by then counts as a rejection
    poll_seconds: int = Field(10, ge=1)


class PromotionConfig(Strict):
    seed: int = 42
    lock_timeout_seconds: float = Field(900.0, gt=0)  # wait this long for another promotion to end
    quality: QualityGateConfig = QualityGateConfig()
    champion: ChampionGateConfig = ChampionGateConfig()
    slices: SliceGateConfig = SliceGateConfig()
    fairness: FairnessGateConfig = FairnessGateConfig()
    online: OnlineGateConfig | None = None  # absent: offline evidence only
    operational: OperationalGateConfig = OperationalGateConfig()
    approval: ApprovalConfig = ApprovalConfig()


class RolloutConfig(Strict):
    """`mlops rollout`: the canary's steps, how long each holds, and the guardrails the
    challenger's live traffic must keep against the champion's while it does."""

    shares: list[float] = [0.05, 0.25, 0.5, 1.0]  # of the routing keys, increasing, the last 1.0
    min_requests: int = Field(500, ge=1)  # challenger rows a step must score before it passes
    min_seconds: float = Field(300.0, ge=0)  # and the time it holds at least
    max_seconds: float = Field(3600.0, gt=0)  # too little traffic by then: rolled back
    check_seconds: float = Field(10.0, gt=0)  # how often the guardrails are read
    service_url: str | None = None  # the service the guardrails read; empty: http://host:port
    min_calls: int = Field(20, ge=1)  # scoring calls per arm before error rate and latency count
    max_error_rate_increase: float = Field(0.01, ge=0)  # challenger's failed-call rate minus champion's
    max_p99_scoring_ratio: float = Field(
        2.0, gt=1
    )  # p99 CPU time of a scoring call, challenger over champion
    min_score_rows: int = Field(100, ge=10)  # logged scores per arm before the drift check counts
    max_score_ks: float | None = Field(0.3, gt=0, le=1)  # KS distance between the arms' scores
    # Once labels have joined: breach when the gain's CI lies wholly below -max_quality_loss.
    quality_min_rows: int = Field(200, ge=30)
    max_quality_loss: float = Field(0.0, ge=0)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    bootstrap_resamples: int = Field(500, ge=100)

    @field_validator("shares")
    @classmethod
    def _increasing_to_one(cls, shares: list[float]) -> list[float]:
        if not shares or any(not 0 < s <= 1 for s in shares):
            raise ValueError("each share must be in (0, 1]")
        if any(b <= a for a, b in itertools.pairwise(shares)) or shares[-1] != 1.0:
            raise ValueError(f"shares must increase and end at 1.0 (got {shares})")
        return shares


class ServingConfig(Strict):
    """The prediction service (`mlops serve`): where it listens, how it splits traffic
    between champion and challenger, and where it logs every prediction."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=32)  # processes; each loads the models and polls the registry
    poll_seconds: float = Field(10.0, gt=0)  # how often the registry is asked where the aliases point
    mode: Literal["none", "shadow", "canary", "ab", "interleave"] = "none"  # interleave: POST /rank
    canary_share: float = Field(0.05, ge=0, le=1)  # canary: share of routing keys sent to the challenger
    ab_split: float = Field(0.5, ge=0, le=1)  # ab: share of routing keys in arm B (the challenger)
    routing_header: str = "X-Routing-Key"  # sticky key of a request when its records carry no `key`
    prediction_log_uri: str = "state/predictions"  # a local folder, or s3://bucket/prefix
    # The log with the ground truth joined (`mlops label`); empty: beside it, `<prediction_log_uri>-labelled`
    labelled_log_uri: str | None = None
    log_flush_seconds: float = Field(2.0, gt=0)
    log_flush_rows: int = Field(20000, ge=1)
    # Unwritten log rows held in memory at most; once full, requests wait for room up to
    # `log_full_wait_seconds` and are then refused with a 503 (no row is ever dropped).
    log_max_buffered_rows: int = Field(1_000_000, ge=1)
    log_full_wait_seconds: float = Field(5.0, ge=0)
    max_records: int = Field(20000, ge=1)  # records in one request; more is a 413
    max_body_bytes: int = Field(32 * 2**20, ge=1024)  # request body; more is a 413
    batch_max_rows: int = Field(2048, ge=1)  # concurrent requests are scored together up to this
    batch_wait_ms: float = Field(0.0, ge=0, le=100)  # extra wait to gather a micro-batch
    # Where a model looks up a record sent as it lands: `model`, the dimension snapshots it was
    # trained with (shipped inside it); `landing`, the tables' current landing files (e.g. today's
    # weather), snapshotted when a version loads and re-read every `dimensions_refresh_seconds`
    # (0: only at load), so a new file answers without a reload. Each prediction logs which
    # snapshots answered.
    dimensions: Literal["model", "landing"] = "model"
    dimensions_refresh_seconds: float = Field(300.0, ge=0)
    rollout: RolloutConfig = RolloutConfig()

    @property
    def url(self) -> str:
        """Where the rollout reads the service's counters."""
        return (self.rollout.service_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def labelled_log_location(self) -> str:
        return self.labelled_log_uri or self.prediction_log_uri.rstrip("/") + "-labelled"


# The schedules' defaults by cadence: monitor the newest period soon after it lands; retrain
# on a slower beat (quarterly for months, monthly for weeks, weekly for days).
CADENCE_CRONS: dict[str, dict[str, str]] = {
    "day": {"monitoring_cron": "0 6 * * *", "retraining_cron": "0 7 * * 1"},
    "week": {"monitoring_cron": "0 6 * * 2", "retraining_cron": "0 7 1 * *"},
    "month": {"monitoring_cron": "0 6 2 * *", "retraining_cron": "0 7 3 1,4,7,10 *"},
}


# Distances only: a score at or above its threshold is drift whatever the batch size, where a
# p-value would flag any shift in a batch of 28k rows.
NumericDriftMethod = Literal["wasserstein", "psi", "hellinger", "jensenshannon", "kl_div"]
CategoricalDriftMethod = Literal["jensenshannon", "psi", "hellinger", "kl_div"]


class MonitoringConfig(Strict):
    """Drift monitoring (`mlops monitor`): which columns are compared with which distance, and
    when a batch calls for retraining; the schedules of the served deployments."""

    experiment: str = "monitoring"  # MLflow experiment: one run per monitored batch
    exclude_columns: list[str] = []  # features no new batch can share with the reference (the month)
    key_features: list[str] = []  # drift in any one of these alone calls for retraining
    numeric_method: NumericDriftMethod = "wasserstein"  # Evidently stattest name
    categorical_method: CategoricalDriftMethod = "jensenshannon"
    threshold: float = Field(0.1, gt=0)  # a column whose score reaches this has drifted
    column_thresholds: dict[str, float] = {}  # per-column overrides of `threshold`
    drift_share: float = Field(0.5, gt=0, le=1)  # this share of drifted columns makes the batch drifted
    prediction_threshold: float = Field(0.1, gt=0)  # drift score of the champion's predicted probability
    label_threshold: float = Field(0.1, gt=0)  # drift score of the label
    # how much worse than its holdout, in training.metric, the champion may do on a batch
    max_metric_drop: float = Field(
        0.03, ge=0, validation_alias=AliasChoices("max_metric_drop", "max_roc_auc_drop")
    )
    min_rows: int = Field(200, ge=1)  # fewer rows in a batch cannot be judged
    max_unassessable_share: float = Field(0.5, ge=0, le=1)  # more columns than this unassessable: no verdict
    reference_max_rows: int | None = Field(None, ge=1000)  # seeded sample of the reference (speed)
    retrain_window: int = Field(6, ge=2)  # periods a retraining uses, the last one as its holdout
    # Defaults follow data.cadence (CADENCE_CRONS, filled in by ProjectConfig); a month's here.
    monitoring_cron: str = CADENCE_CRONS["month"]["monitoring_cron"]  # the newest landed period
    retraining_cron: str = CADENCE_CRONS["month"]["retraining_cron"]
    timezone: str = "UTC"  # of the cron schedules
    workspace_dir: str = "evidently"  # Evidently workspace under stack.state_dir (read by `evidently ui`)


class ProductionStackConfig(Strict):
    """`mlops up --profile production`: the docker-compose topology as local processes.

    Prefect and MLflow keep their state in PostgreSQL, MLflow its artifacts in S3 (served
    through the tracking server), and MLflow's basic-auth app guards the tracking server.
    No secret lives here: PostgreSQL's password comes from PGPASSWORD, S3 credentials from the
    AWS environment or profile, the MLflow admin's password from MLFLOW_AUTH_ADMIN_PASSWORD and
    a client's from MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD.
    """

    database_url: str  # the PostgreSQL server, e.g. postgresql://postgres@127.0.0.1:5432 (no database)
    prefect_database: str = "prefect"  # created on `mlops up` when missing
    mlflow_database: str = "mlflow"  # MLflow's tracking store and its auth tables
    artifacts_uri: str  # s3://bucket[/prefix]: where the MLflow server stores artifacts
    s3: S3Settings = S3Settings()  # endpoint of the artifact store (MinIO, moto)
    mlflow_auth: bool = True  # MLflow's basic-auth app: every request needs a user and password
    mlflow_admin_username: str = "admin"  # created on first start with MLFLOW_AUTH_ADMIN_PASSWORD
    mlflow_default_permission: Literal["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"] = "READ"

    @field_validator("database_url")
    @classmethod
    def _server_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"postgresql", "postgres"} or not parts.hostname:
            raise ValueError("must look like postgresql://user@host:5432")
        if parts.password is not None:
            raise ValueError("must not hold a password: set PGPASSWORD in the environment")
        if parts.path.strip("/") or parts.query:
            raise ValueError("names the server only: set prefect_database and mlflow_database")
        return value.rstrip("/")

    @field_validator("prefect_database", "mlflow_database")
    @classmethod
    def _database_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
            raise ValueError("use lower-case letters, digits and '_' (a PostgreSQL identifier)")
        return value

    @field_validator("artifacts_uri")
    @classmethod
    def _s3_uri(cls, value: str) -> str:
        if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?", value):
            raise ValueError("must be s3://bucket or s3://bucket/prefix")
        return value.rstrip("/")


class StackConfig(Strict):
    # local: SQLite and folders under state_dir; production: PostgreSQL, S3 and MLflow auth
    # (the `production` section), as docker-compose.yml runs them.
    profile: Literal["local", "production"] = "local"
    production: ProductionStackConfig | None = None
    state_dir: str = "state"
    prefect_port: int = 4200
    mlflow_port: int = 5000
    host: str = "127.0.0.1"
    mlflow_tracking_uri: str | None = None  # defaults to the local server of `mlops up`
    prefect_api_url: str | None = None
    evidently_port: int = 8001  # `evidently ui` over the monitoring workspace (serving has 8000)
    runner_port: int = 4201  # health endpoint of the process that serves the deployments
    evidently_ui: bool = True  # started by `mlops up`
    serve_deployments: bool = True  # schedules and triggers run only while something serves them
    serve_predictions: bool = True  # the prediction service (`mlops serve`) on serving.host:port

    @model_validator(mode="after")
    def _profile_settings(self) -> StackConfig:
        if self.profile == "production" and self.production is None:
            raise ValueError("profile 'production' needs a stack.production section (see mlops.yaml)")
        return self

    @property
    def evidently_url(self) -> str:
        return f"http://{self.host}:{self.evidently_port}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"http://{self.host}:{self.mlflow_port}"

    @property
    def api_url(self) -> str:
        return self.prefect_api_url or f"http://{self.host}:{self.prefect_port}/api"

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")


class DaskConfig(Strict):
    address: str | None = None  # a running scheduler, e.g. tcp://10.0.0.5:8786; null: a LocalCluster
    workers: int | None = Field(None, ge=1)  # LocalCluster processes (one thread each); null: one per core
    connect_timeout_seconds: float = Field(30.0, gt=0)  # a scheduler that does not answer by then is an error

    @model_validator(mode="after")
    def _one_cluster(self) -> DaskConfig:
        if self.address and self.workers:
            raise ValueError("workers sizes a LocalCluster; a cluster at `address` is sized where it runs")
        return self


class ComputeConfig(Strict):
    """Where the parallel stages (candidate fits, per-slice evaluation) run: never what they compute."""

    task_runner: Literal["threads", "dask"] = "threads"  # threads: a pool in the flow's process
    threads: int = Field(2, ge=1)  # size of that pool
    dask: DaskConfig = DaskConfig()


class ProjectConfig(Strict):
    project: str
    data: DataConfig
    target: TargetConfig
    features: FeaturesConfig
    split: SplitConfig = SplitConfig()
    training: TrainingConfig
    registry: RegistryConfig
    promotion: PromotionConfig = PromotionConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    serving: ServingConfig = ServingConfig()
    stack: StackConfig = StackConfig()
    compute: ComputeConfig = ComputeConfig()
    # Set by `load_config`, not by the file: where relative paths resolve from.
    root: Annotated[Path, Field(exclude=True)] = Path(".")
    expectations_dir: str = "expectations"

    @model_validator(mode="before")
    @classmethod
    def _metric_of_kind(cls, raw: Any) -> Any:
        """training.metric defaults by the target's kind (ROC-AUC, log loss, RMSE)."""
        training, target = (raw.get(k) if isinstance(raw, dict) else None for k in ("training", "target"))
        if isinstance(training, dict) and isinstance(target, dict) and "metric" not in training:
            kind = target.get("kind", "binary")  # a bad kind is named by its own field's check
            metric = DEFAULT_METRIC.get(kind, "roc_auc") if isinstance(kind, str) else "roc_auc"
            raw = {**raw, "training": {**training, "metric": metric}}
        return raw

    @model_validator(mode="before")
    @classmethod
    def _schedules_of_cadence(cls, raw: Any) -> Any:
        """The monitoring and retraining crons default by data.cadence."""
        data = raw.get("data") if isinstance(raw, dict) else None
        monitoring = raw.get("monitoring", {}) if isinstance(raw, dict) else None
        if isinstance(data, dict) and isinstance(monitoring, dict):
            cadence = data.get("cadence", "month")  # a bad cadence is named by its own field's check
            defaults = CADENCE_CRONS.get(
                cadence if isinstance(cadence, str) else "month", CADENCE_CRONS["month"]
            )
            raw = {**raw, "monitoring": {**defaults, **monitoring}}
        return raw

    @model_validator(mode="after")
    def _metrics_fit_kind(self) -> ProjectConfig:
        kind = self.target.kind
        known = TASK_METRICS[kind]
        if self.training.metric not in known:
            raise ValueError(
                f"training.metric {self.training.metric!r} does not judge a {kind} target; use one of {sorted(known)}"
            )
        for metric, _, _ in self.promotion.quality.limits(kind):
            if metric not in known:
                raise ValueError(
                    f"promotion.quality: {metric!r} is not a metric of a {kind} target; use one of {sorted(known)}"
                )
        return self

    @field_validator("project")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError("use letters, digits, '-', '_' and '.' only")
        return value

    def path(self, relative: str) -> Path:
        """A path from the config, resolved against the config file's folder."""
        candidate = Path(relative)
        return candidate if candidate.is_absolute() else (self.root / candidate).resolve()

    @property
    def state_dir(self) -> Path:
        return self.path(self.stack.state_dir)

    def store_uri(self, uri: str) -> str:
        """An s3:// URI as it is; a local path resolved against the config's folder."""
        return uri if "://" in uri else str(self.path(uri))

    @property
    def fingerprint(self) -> str:
        """Hash of everything that changes what the pipeline computes (not where it runs)."""
        # Promotion, serving and monitoring settings act after training; they do not change what it computes.
        payload = self.model_dump(
            mode="json",
            exclude={"stack", "compute", "root", "expectations_dir", "promotion", "serving", "monitoring"},
        )
        for where in ("landing_uri", "snapshot_uri", "quarantine_uri", "s3"):
            payload["data"].pop(where)
        # Settings added later count only when set away from their default, so the versions
        # registered before them keep their config hash (and `mlops reproduce` its match).
        for key, default in (("cadence", "month"), ("timezone", "UTC")):
            if payload["data"][key] == default:
                payload["data"].pop(key)
        # The margin over the baselines only decides whether the result is registered.
        payload["training"].pop("min_gain_over_baseline")
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def load_config(path: str | Path) -> ProjectConfig:
    """Read and check the project config; a wrong key or value names itself."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found (pass --config or create mlops.yaml)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    if "root" in raw:
        raise ConfigError(
            f"{path}: root: not a setting (relative paths resolve from the file's folder); remove it"
        )
    try:
        # model_validate, not keyword arguments: a key YAML reads as a number is a named error
        return ProjectConfig.model_validate({**raw, "root": path.resolve().parent})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None


def save_config(config: ProjectConfig, path: str | Path) -> Path:
    """Write a config as YAML that `load_config` reads back to an equal object, wherever
    the file lands: relative paths are written resolved."""
    payload = config.model_dump(mode="json", exclude={"root"})
    data = payload["data"]
    for key in ("landing_uri", "snapshot_uri", "quarantine_uri"):
        data[key] = config.store_uri(data[key])
    payload["serving"]["prediction_log_uri"] = config.store_uri(config.serving.prediction_log_uri)
    if config.serving.labelled_log_uri:
        payload["serving"]["labelled_log_uri"] = config.store_uri(config.serving.labelled_log_uri)
    payload["stack"]["state_dir"] = str(config.state_dir)
    payload["expectations_dir"] = str(config.path(config.expectations_dir))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(payload, sort_keys=False))
    return path
