"""What training records beside the model, for lineage and reproduction: the artifact
files of a training run, the records written into them, and how a record is read back and
compared with now.

- `environment_record` → `environment/packages.json` (Python, platform, every package);
  `package_changes` and `likely_causes` compare it with the current environment.
- `config_record` → `config/resolved.json`; `config_from_record` loads it back.
- `validation_record` → one entry of `validation/summary.json` (and the training frame's
  `validation/training-frame-summary.json`).
- `lineage/inputs.json`: the snapshots a run ingested (written by the training flow).
- `compare_metrics`: recorded metrics against reproduced ones.

A fact with no record is `NOT_RECORDED`, here and in the chain built from these records
(`tasks.lineage`).
"""

from __future__ import annotations

import math
import platform
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mlops.config import ProjectConfig
from mlops.errors import ConfigError

if TYPE_CHECKING:
    from tasks.validate import ValidationReport

NOT_RECORDED = "not recorded"
# The packages whose versions change what a fit computes; shown first when they differ.
KEY_PACKAGES = ("scikit-learn", "numpy", "scipy", "pandas", "pyarrow", "threadpoolctl", "joblib")


def environment_record() -> dict[str, Any]:
    """Python, platform and every installed distribution with its version."""
    from importlib.metadata import distributions

    packages = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name:
            packages[canonical_name(name)] = dist.version
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": dict(sorted(packages.items())),
    }


def canonical_name(name: str) -> str:
    """PEP 503 normalisation: `Scikit_Learn` and `scikit-learn` are the same package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def config_record(config: ProjectConfig) -> dict[str, Any]:
    """The resolved config as JSON: enough to rebuild the object that trained."""
    return config.model_dump(mode="json", exclude={"root"})


def config_from_record(current: ProjectConfig, recorded: dict[str, Any]) -> ProjectConfig:
    """The recorded config, running where the current one runs: what to compute comes from
    the record; where the stores and servers are (and the post-training settings) from now."""
    data = {
        **recorded["data"],
        "landing_uri": current.data.landing_uri,
        "snapshot_uri": current.data.snapshot_uri,
        "quarantine_uri": current.data.quarantine_uri,
        "s3": current.data.s3.model_dump(),
    }
    payload = {
        **recorded,
        "data": data,
        "stack": current.stack.model_dump(),
        "promotion": current.promotion.model_dump(),
        "serving": current.serving.model_dump(),
        "monitoring": current.monitoring.model_dump(),
        "compute": current.compute.model_dump(),
        "expectations_dir": current.expectations_dir,
    }
    try:
        return ProjectConfig(**payload, root=current.root)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"the recorded config does not load with this code ({problems})") from None


def validation_record(report: ValidationReport, artifact: str) -> dict[str, Any]:
    """One suite's outcome on one batch, with the suite's content hash as its version."""
    return {
        "batch": report.batch,
        "suite": report.suite,
        "suite_sha256": report.suite_sha256,
        "passed": report.success,
        "expectations": report.evaluated,
        "failed": len(report.failures),
        "rows": report.rows,
        "artifact": artifact,
    }


# -- a record against now -------------------------------------------------------------------


@dataclass
class MetricComparison:
    name: str
    recorded: float | None
    reproduced: float | None

    @property
    def equal(self) -> bool:
        if self.recorded is None or self.reproduced is None:
            return False
        both_nan = math.isnan(self.recorded) and math.isnan(self.reproduced)  # e.g. an undefined score
        return both_nan or self.recorded == self.reproduced

    @property
    def difference(self) -> float | None:
        if self.recorded is None or self.reproduced is None:
            return None
        return self.reproduced - self.recorded


def compare_metrics(recorded: dict[str, float], reproduced: dict[str, float]) -> list[MetricComparison]:
    """Every metric on either side, recorded against reproduced (exact equality is the test)."""

    def plain(value: float | None) -> float | None:
        return None if value is None else float(value)  # numpy scalars print as np.float64(...)

    return [
        MetricComparison(k, plain(recorded.get(k)), plain(reproduced.get(k)))
        for k in sorted(set(recorded) | set(reproduced))
    ]


def package_changes(recorded: dict[str, str], current: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Packages whose version differs (or that exist on one side only), key packages first."""
    names = sorted(set(recorded) | set(current), key=lambda n: (n not in KEY_PACKAGES, n))
    return {
        n: (recorded.get(n, "absent"), current.get(n, "absent"))
        for n in names
        if recorded.get(n) != current.get(n)
    }


def likely_causes(
    recorded_env: dict[str, Any] | None,
    current_env: dict[str, Any],
    recorded_commit: str,
    current_commit: str,
) -> list[str]:
    """Why a rebuild from the same bytes, config and seeds could compute something else."""
    causes = []
    if recorded_env is None:
        causes.append(f"package versions at training time: {NOT_RECORDED}")
    else:
        changed = package_changes(recorded_env.get("packages", {}), current_env["packages"])
        key = {n: v for n, v in changed.items() if n in KEY_PACKAGES}
        if changed:
            shown = ", ".join(f"{n} {old} → {new}" for n, (old, new) in list((key or changed).items())[:8])
            causes.append(f"package versions differ ({len(changed)} packages): {shown}")
        for what in ("python", "platform", "machine"):
            if recorded_env.get(what) != current_env.get(what):
                causes.append(f"{what} differs: {recorded_env.get(what)} → {current_env.get(what)}")
    if recorded_commit != current_commit:
        causes.append(f"code commit differs: {recorded_commit} → {current_commit}")
    elif recorded_commit.endswith("-dirty"):
        causes.append(
            f"both runs had uncommitted changes on {recorded_commit.removesuffix('-dirty')}: the code may differ"
        )
    if not causes:
        causes.append(
            "same code, packages and platform: training is not deterministic here (an unseeded"
            " random step or a thread count that changes floating-point sums)"
        )
    return causes
