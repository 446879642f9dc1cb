"""Register the project's deployments on a Prefect work pool, where a worker runs them.

    python infra/prefect/deploy.py --config infra/mlops.production.yaml --pool mlops-process
    python infra/prefect/deploy.py --config /etc/mlops/mlops.yaml --pool mlops-kubernetes \\
        --type kubernetes --base-job-template infra/k8s/base-job-template.json \\
        --image registry.example.com/mlops-flights:0.1.0

The deployments (names, parameters, cron schedules, the drift trigger, concurrency limits) are
`flows.deployments.build_deployments`, the same list `mlops up` serves in-process: only where
their runs execute differs. The compose stack runs this once (service `prefect-deploy`) before
its `process` worker starts; applying again updates the deployments in place.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from flows.deployments import build_deployments
from mlops.clients import client_settings
from mlops.config import load_config
from mlops.errors import ConfigError, MlopsError

DEFAULT_POOL = "mlops-process"


def default_base_job_template(pool_type: str) -> dict[str, Any]:
    """Prefect's own template for a worker type installed here (`process` always is)."""
    if pool_type != "process":
        raise ConfigError(
            f"a {pool_type!r} work pool needs --base-job-template (see infra/k8s/base-job-template.json)"
        )
    from prefect.workers.process import ProcessWorker

    return ProcessWorker.get_default_base_job_template()


def ensure_work_pool(name: str, pool_type: str, base_job_template: dict[str, Any]) -> bool:
    """Create the work pool unless it exists (an existing pool is left as it is); True if created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            existing = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(name=name, type=pool_type, base_job_template=base_job_template)
            )
            return True
    if existing.type != pool_type:
        raise ConfigError(f"work pool {name!r} exists with type {existing.type!r}, not {pool_type!r}")
    return False


def deploy_to_pool(
    config_path: Path,
    pool: str = DEFAULT_POOL,
    pool_type: str = "process",
    base_job_template: dict[str, Any] | None = None,
    image: str | None = None,
    run_config_path: str | None = None,
) -> list[str]:
    """Apply every deployment of the project to `pool`; returns their full names.

    `run_config_path` is the config file the flow runs read (their `config_path` parameter),
    when it lives elsewhere on the workers than here (a ConfigMap in a Kubernetes job).
    """
    config = load_config(config_path)
    deployments = build_deployments(config, run_config_path or str(config_path.resolve()))
    template = base_job_template or default_base_job_template(pool_type)
    with client_settings(config):
        ensure_work_pool(pool, pool_type, template)
        for deployment in deployments:
            deployment.apply(work_pool_name=pool, image=image)
    return [deployment.full_name for deployment in deployments]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("mlops.yaml"), help="project config file")
    parser.add_argument("--pool", default=DEFAULT_POOL, help="work pool name")
    parser.add_argument("--type", dest="pool_type", default="process", help="work pool type")
    parser.add_argument("--base-job-template", type=Path, help="JSON base job template of a new pool")
    parser.add_argument("--image", help="image of the flow runs (container work pools)")
    parser.add_argument("--run-config", help="config path as the flow runs see it (default: --config)")
    args = parser.parse_args(argv)
    template = json.loads(args.base_job_template.read_text()) if args.base_job_template else None
    try:
        names = deploy_to_pool(args.config, args.pool, args.pool_type, template, args.image, args.run_config)
    except MlopsError as exc:
        parser.exit(1, f"error: {exc}\n")
    for name in names:
        print(f"{name} -> work pool {args.pool}")


if __name__ == "__main__":
    main()
