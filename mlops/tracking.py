"""Every MLflow call of the project: experiment runs, datasets, artifacts, the registry.

Steps in `tasks/` compute; flows hand their results here to be recorded. Keeping the
tracking calls in one module keeps the steps testable without a tracking server.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from mlops.errors import ServiceUnavailableError
from mlops.names import CHALLENGER, TRAINING_FINGERPRINT_TAG

# Every type a registered model may contain beyond skops' defaults. skops refuses to load
# anything else, so a tampered artifact cannot smuggle in code.
SKOPS_TRUSTED_TYPES = [
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
    # ColumnTransformer's "passthrough" is a FunctionTransformer over partial(check_array)
    "functools.partial",
    "sklearn.utils.validation.check_array",
    # the model's first step: a raw record to its features (shipped as the model's code)
    "mlops.record_features.RecordFeatures",
]
# A version is created with this tag "pending" and all its other tags in one call; "complete"
# once its description and alias are set. Versions from before the tag count as complete.
REGISTRATION_TAG = "registration"


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    reused: bool  # True when this data and config were already registered
    complete: bool = True  # False: a run died between creating the version and its alias


def code_version(root: Path) -> str:
    """The git commit of the code that trained, with '-dirty' when it had local changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def skops_types(pipeline: Any) -> list[str]:
    """The types skops does not trust by default that this fitted pipeline holds."""
    import skops.io as sio

    return sio.get_untrusted_types(data=sio.dumps(pipeline))


def model_requirements(trusted_types: list[str] | None = None) -> list[str]:
    """The packages a registered model needs to load, pinned to what trained it: the stack's,
    and the distribution of any other library whose types the model holds (lightgbm, ...)."""
    from importlib.metadata import packages_distributions, version

    packages = ["mlflow", "scikit-learn", "skops", "pandas", "numpy", "scipy"]
    owners = packages_distributions()
    # `mlops` is not installed from an index: the model ships the modules it needs (`model_code`).
    shipped = {"sklearn", "numpy", "scipy", "mlops"}
    for module in sorted({t.split(".")[0] for t in trusted_types or []} - shipped):
        packages += [d for d in owners.get(module, []) if d not in packages]
    return [f"{pkg}=={version(pkg)}" for pkg in packages]


def _aware_times_as_any(inputs: Any, example: pd.DataFrame) -> Any:
    """MLflow's `datetime` holds naive times only and refuses a zoned column outright, so a
    zoned time column is declared `Any`: the model's first step reads it (a timestamp or
    ISO text) into the zone it was trained in."""
    from mlflow.types.schema import AnyType, ColSpec, Schema

    if inputs is None:
        return None
    zoned = {c for c in example.columns if isinstance(example[c].dtype, pd.DatetimeTZDtype)}
    return Schema(
        [
            ColSpec(AnyType(), spec.name, spec.required) if spec.name in zoned else spec
            for spec in inputs.inputs
        ]
    )


def model_code(destination: Path) -> list[str]:
    """The project code a registered model declares as its dependency (MLflow `code_paths`):
    the few modules of `mlops` its first step imports, as a package of their own, so the
    standard MLflow client loads the model with nothing else of the project on its path."""
    import shutil

    import mlops
    from mlops.record_features import MODEL_CODE

    package = destination / "mlops"
    package.mkdir(parents=True, exist_ok=True)
    source = Path(mlops.__file__).parent
    for name in MODEL_CODE:
        shutil.copyfile(source / name, package / name)
    return [str(package)]


class Tracker:
    """An MLflow experiment on one tracking server, checked to be reachable up front."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        import mlflow
        from mlflow import MlflowClient

        if tracking_uri.startswith("http"):
            try:
                httpx.get(f"{tracking_uri.rstrip('/')}/health", timeout=5).raise_for_status()
            except httpx.HTTPError as exc:
                raise ServiceUnavailableError(
                    f"MLflow tracking server at {tracking_uri} does not answer ({exc}): run `mlops up`"
                ) from None
        self.tracking_uri = tracking_uri.rstrip("/")
        mlflow.set_tracking_uri(self.tracking_uri)
        self.client = MlflowClient(self.tracking_uri)
        self.experiment_id = self._experiment_id(experiment)

    def _experiment_id(self, experiment: str) -> str:
        """The experiment's id, created on first use. Two flows starting at once may both
        find it missing; the one that loses the create reads the winner's."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(experiment)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                raise
            return found.experiment_id

    # -- links a user can click -------------------------------------------------------
    def run_url(self, run_id: str) -> str:
        return f"{self.tracking_uri}/#/experiments/{self.experiment_id}/runs/{run_id}"

    def experiment_url(self) -> str:
        return f"{self.tracking_uri}/#/experiments/{self.experiment_id}"

    def artifact_url(self, run_id: str, path: str) -> str:
        """A run's artifact shown in the MLflow UI (an HTML report renders there)."""
        return f"{self.run_url(run_id)}/artifactPath/{path}"

    def version_url(self, name: str, version: str) -> str:
        return version_url(self.tracking_uri, name, version)

    # -- the pipeline's parent run ----------------------------------------------------
    @contextmanager
    def pipeline_run(self, run_name: str, tags: dict[str, str]) -> Iterator[str]:
        import mlflow

        with mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name, tags=tags) as run:
            yield run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        import mlflow

        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float]) -> None:
        import mlflow

        mlflow.log_metrics(metrics)

    def log_dataset(self, frame: pd.DataFrame, name: str, source: str, digest: str, context: str) -> None:
        """Record a snapshot as an MLflow dataset input of the active run (lineage)."""
        import mlflow

        with warnings.catch_warnings():
            # MLflow's hint about integer columns concerns model signatures, not datasets.
            warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*multiple ways", category=UserWarning)
            dataset = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest[:16])
            mlflow.log_input(dataset, context=context)

    def log_json(self, payload: Any, artifact_file: str) -> None:
        import mlflow

        mlflow.log_dict(json.loads(json.dumps(payload, default=str)), artifact_file)

    def log_dir(self, path: Path, artifact_dir: str) -> None:
        import mlflow

        mlflow.log_artifacts(str(path), artifact_dir)

    def set_tags(self, tags: dict[str, str]) -> None:
        import mlflow

        mlflow.set_tags(tags)

    def log_candidate(
        self,
        name: str,
        params: dict[str, Any],
        metrics: dict[str, float],
        plots: dict[str, bytes],
        extra: dict[str, Any],
        tags: dict[str, str],
    ) -> str:
        """One nested run per candidate, under the active pipeline run."""
        import mlflow

        with mlflow.start_run(experiment_id=self.experiment_id, run_name=name, nested=True, tags=tags) as run:
            mlflow.log_params({k: str(v) for k, v in params.items()})
            mlflow.log_metrics(metrics)
            with tempfile.TemporaryDirectory() as tmp:
                for file_name, png in plots.items():
                    (Path(tmp) / file_name).write_bytes(png)
                mlflow.log_artifacts(tmp, "plots")
            for file_name, payload in extra.items():
                mlflow.log_dict(payload, file_name)
            return run.info.run_id

    # -- registry ---------------------------------------------------------------------
    def find_version(self, model_name: str, fingerprint: str) -> RegisteredVersion | None:
        """A version already registered from the same data and config, if any."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(
                f"name = '{model_name}' and tags.{TRAINING_FINGERPRINT_TAG} = '{fingerprint}'"
            )
        except MlflowException:
            return None
        if not found:
            return None
        version = max(found, key=lambda v: int(v.version))
        complete = version.tags.get(REGISTRATION_TAG, "complete") == "complete"
        return RegisteredVersion(model_name, str(version.version), version.run_id, True, complete)

    def register_model(
        self,
        pipeline: Any,
        model_name: str,
        input_example: pd.DataFrame,
        tags: dict[str, str],
        description: str,
        trusted_types: list[str] | None = None,
    ) -> RegisteredVersion:
        """Log the pipeline as a skops-serialised MLflow model and register it as challenger.

        A classifier answers `predict_proba` through pyfunc, a regressor `predict`. The skops
        types beyond skops' defaults are those the fitted pipeline holds (`trusted_types`, from
        `skops_types`), so a model of any library loads without trusting more than it needs."""
        import mlflow
        import mlflow.sklearn
        from mlflow.models import infer_signature

        example = input_example.head(5)
        method = "predict_proba" if hasattr(pipeline, "predict_proba") else "predict"
        signature = infer_signature(example, getattr(pipeline, method)(example))
        signature.inputs = _aware_times_as_any(signature.inputs, example)
        trusted = sorted(set(SKOPS_TRUSTED_TYPES) | set(trusted_types or []))
        mlflow.log_dict({"trusted_types": trusted}, "model_skops_trusted_types.json")
        with tempfile.TemporaryDirectory(prefix="model-code-") as code:
            info = mlflow.sklearn.log_model(
                pipeline,
                name="model",
                serialization_format="skops",
                skops_trusted_types=trusted,
                signature=signature,
                input_example=example,
                pyfunc_predict_fn=method,
                # Stated, not inferred: inference re-imports the model in a subprocess (seconds).
                pip_requirements=model_requirements(trusted),
                code_paths=model_code(Path(code)),
            )
        # The version and its tags (the training fingerprint among them) in one call: a process
        # killed right after still leaves a version a rerun finds, never an untagged duplicate.
        created = mlflow.register_model(
            info.model_uri, model_name, tags={**tags, REGISTRATION_TAG: "pending"}
        )
        registered = RegisteredVersion(model_name, str(created.version), info.run_id, reused=False)
        return self.finish_registration(registered, description)

    def finish_registration(self, registered: RegisteredVersion, description: str) -> RegisteredVersion:
        """Describe the version and make it the challenger; also completes one a killed run left."""
        name, version = registered.name, registered.version
        self.client.update_model_version(name, version, description=description)
        self.client.set_registered_model_alias(name, CHALLENGER, version)
        self.client.set_model_version_tag(name, version, REGISTRATION_TAG, "complete")
        return RegisteredVersion(name, version, registered.run_id, registered.reused, complete=True)

    # -- aliases, version tags and decision runs (promotion, rollback) ------------------
    def aliases(self, model_name: str) -> dict[str, str]:
        """Alias -> version of a registered model; empty when the model does not exist yet."""
        return self.registry_state(model_name)[0]

    def registry_state(self, model_name: str) -> tuple[dict[str, str], dict[str, str]]:
        """A registered model's aliases (alias -> version) and its own tags, in one call;
        both empty when the model does not exist yet."""
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(model_name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}, {}
            raise
        return {alias: str(version) for alias, version in model.aliases.items()}, dict(model.tags)

    def set_model_tag(self, model_name: str, key: str, value: str) -> None:
        self.client.set_registered_model_tag(model_name, key, value)

    def delete_model_tag(self, model_name: str, key: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.delete_registered_model_tag(model_name, key)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise

    def model_version(self, model_name: str, version: str) -> ModelVersionInfo | None:
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_model_version(model_name, version)
        except MlflowException as exc:
            if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                return None
            raise
        return ModelVersionInfo(
            model_name,
            str(found.version),
            found.run_id,
            dict(found.tags),
            list(found.aliases),
            description=found.description or "",
            created_ms=int(found.creation_timestamp or 0),
        )

    def set_alias(self, model_name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(model_name, alias, version)

    def delete_alias(self, model_name: str, alias: str) -> None:
        self.client.delete_registered_model_alias(model_name, alias)

    def set_version_tags(self, model_name: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(model_name, version, key, value)

    def set_version_description(self, model_name: str, version: str, description: str) -> None:
        self.client.update_model_version(model_name, version, description=description)

    # -- reading what was recorded (lineage, reproduction) ------------------------------
    def run_record(self, run_id: str) -> RunRecord | None:
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                return None
            raise
        return self._record(run)

    def holdout_metrics(self, run_id: str) -> dict[str, float]:
        """A training run's holdout metrics (`holdout_roc_auc`, ...); empty if the run is gone."""
        run = self.run_record(run_id)
        return {k: v for k, v in run.metrics.items() if k.startswith("holdout_")} if run else {}

    def find_runs(self, filter_string: str) -> list[RunRecord]:
        """Runs of this experiment matching an MLflow filter, oldest first."""
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=filter_string, order_by=["attributes.start_time ASC"]
        )
        return [self._record(run) for run in runs]

    def child_runs(self, run_id: str) -> list[RunRecord]:
        """The nested runs (candidates) under a pipeline run."""
        return self.find_runs(f"tags.mlflow.parentRunId = '{run_id}'")

    def artifact_paths(self, run_id: str, folder: str) -> list[str]:
        return [a.path for a in self.client.list_artifacts(run_id, folder)]

    def read_json(self, run_id: str, artifact_file: str) -> Any | None:
        """A JSON artifact of a run; None when the run did not record it."""
        folder = str(Path(artifact_file).parent)
        if artifact_file not in self.artifact_paths(run_id, "" if folder == "." else folder):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            local = self.client.download_artifacts(run_id, artifact_file, tmp)
            return json.loads(Path(local).read_text())

    def _record(self, run: Any) -> RunRecord:
        return RunRecord(
            run_id=run.info.run_id,
            name=run.info.run_name or "",
            status=run.info.status,
            start_ms=int(run.info.start_time or 0),
            tags=dict(run.data.tags),
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
            url=self.run_url(run.info.run_id),
        )

    def load_model(self, model_name: str, version: str) -> Any:
        """A registered version as the scikit-learn object it was logged as."""
        import mlflow.sklearn

        return mlflow.sklearn.load_model(f"models:/{model_name}/{version}")

    def record_run(
        self,
        run_name: str,
        tags: dict[str, str],
        params: dict[str, Any],
        metrics: dict[str, float],
        documents: dict[str, Any],
    ) -> str:
        """A finished run holding one decision. Client calls only, no active-run state, so
        several flows in one process (threads) can record at once."""
        import time

        from mlflow.entities import Metric, Param

        run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id
        stamp = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
        )
        for artifact_file, payload in documents.items():
            self.client.log_dict(run_id, json.loads(json.dumps(payload, default=str)), artifact_file)
        self.client.set_terminated(run_id)
        return run_id

    def log_run_files(self, run_id: str, paths: list[Path], artifact_dir: str) -> None:
        """Attach local files to a run, finished or not."""
        for path in paths:
            self.client.log_artifact(run_id, str(path), artifact_dir)

    def log_metric_steps(self, run_id: str, series: dict[str, list[tuple[int, float]]]) -> None:
        """Metrics as (step, value) series, which the MLflow UI draws as lines over the steps."""
        import time

        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(k, float(v), stamp, step) for k, points in series.items() for step, v in points]
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(run_id, metrics=metrics[start : start + 1000])


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: str
    run_id: str
    tags: dict[str, str]
    aliases: list[str]
    description: str = ""
    created_ms: int = 0  # registration time, milliseconds since the epoch


@dataclass(frozen=True)
class RunRecord:
    """What a finished (or running) MLflow run recorded."""

    run_id: str
    name: str
    status: str
    start_ms: int
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    url: str


def version_url(tracking_uri: str, name: str, version: str) -> str:
    """A model version's page in the MLflow UI (no server call: the page links to it)."""
    return f"{tracking_uri.rstrip('/')}/#/models/{name}/versions/{version}"


def download_model(model_uri: str, destination: Path) -> Path:
    """Fetch a model's files (e.g. `models:/name/3`) into a local folder; returns its path."""
    import mlflow.artifacts

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(destination)))


def load_local_model(path: Path) -> Any:
    """A downloaded scikit-learn model (skops loads only the types the model states it needs)."""
    import mlflow.sklearn

    return mlflow.sklearn.load_model(str(path))


def model_input_names(path: Path) -> list[str] | None:
    """The input columns of a downloaded model's signature; None when it was logged without one."""
    from mlflow.models import Model

    signature = Model.load(str(path)).signature
    return None if signature is None else list(signature.inputs.input_names())


def model_input_example(path: Path) -> pd.DataFrame | None:
    """The rows a downloaded model was logged with as its input example, if any."""
    from mlflow.models import Model

    example = Model.load(str(path)).load_input_example(str(path))
    return example if isinstance(example, pd.DataFrame) else None
