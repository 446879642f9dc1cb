"""The project's deployments, as code, and the long-running process that serves them.

    python -m flows.deployments --config mlops.yaml     (`mlops up` starts it in the background)

- `training-pipeline/<project>`: the training flow, run from the Prefect UI's form;
- `monitoring/<project>`: the newest landed month against the champion, on a cron schedule;
- `retraining/<project>`: on a cron schedule, and whenever monitoring emits
  `mlops.drift.detected` for this project's model (a deployment trigger passes the month
  that drifted); it trains on the months before it and lets the promotion gates judge;
- `promotion/<project>`: the gates, run from the UI's form;
- `ground-truth/<project>`: the labels landed so far joined to the prediction log, from the form;
- `rollout/<project>`: the progressive canary of the challenger, from the form.

A run started from the Prefect UI runs the same flow function with the same typed request
as the CLI does; every deployment's `config_path` defaults to the config this process was
started with. The schedules live in `monitoring` in the config and are applied again each time
the process starts, so the config, not an edit in the UI, is what lasts.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from mlops.config import ProjectConfig, load_config

RUNNER_LIMIT = 2  # flow runs at once: two cores


def build_deployments(config: ProjectConfig, config_path: str) -> list[Any]:
    """The RunnerDeployments of this project (not yet applied)."""
    from prefect.deployments.runner import EntrypointType
    from prefect.events import DeploymentEventTrigger
    from prefect.schedules import Cron

    from flows.ground_truth import ground_truth
    from flows.monitoring import DRIFT_EVENT, monitoring
    from flows.promotion import promotion
    from flows.retraining import retraining
    from flows.rollout import rollout
    from flows.training import training_pipeline

    name = config.project
    settings = config.monitoring
    model = config.registry.model_name
    tags = ["mlops", config.project]
    defaults = {"request": {"config_path": config_path}}
    # Imported as `flows.monitoring`, not loaded from its file as `monitoring`: the results a
    # served run persists must unpickle wherever the package is installed.
    module = EntrypointType.MODULE_PATH
    drift_trigger = DeploymentEventTrigger(
        name=f"retrain {model} on drift",
        description="A monitoring verdict of drift or of a performance drop starts a retraining",
        expect={DRIFT_EVENT},
        match={"prefect.resource.id": f"mlops.model.{model}", "mlops.retraining": "requested"},
        parameters={
            "request": {
                "config_path": "{{ event.payload.config_path }}",
                "batch": "{{ event.payload.period }}",
                "reason": "{{ event.payload.verdict }} on {{ event.payload.batch }}"
                " against v{{ event.payload.model_version }}",
            }
        },
    )
    return [
        training_pipeline.to_deployment(
            name=name,
            parameters=defaults,
            description="Train, evaluate and register a model on a range of periods",
            tags=tags,
            entrypoint_type=module,
        ),
        monitoring.to_deployment(
            name=name,
            schedules=[Cron(settings.monitoring_cron, timezone=settings.timezone)],
            parameters=defaults,
            description="Judge the newest landed period against the champion's training data",
            tags=tags,
            entrypoint_type=module,
        ),
        retraining.to_deployment(
            name=name,
            schedules=[Cron(settings.retraining_cron, timezone=settings.timezone)],
            triggers=[drift_trigger],
            parameters=defaults,
            concurrency_limit=1,  # one drift event at a time retrains; the next waits its turn
            description="Retrain on the periods before a batch; the promotion gates judge on the batch",
            tags=tags,
            entrypoint_type=module,
        ),
        promotion.to_deployment(
            name=name,
            parameters=defaults,
            concurrency_limit=1,
            description="Gate a challenger against the champion, and promote it if it passes",
            tags=tags,
            entrypoint_type=module,
        ),
        ground_truth.to_deployment(
            name=name,
            parameters=defaults,
            description="Join the labels landed so far to the prediction log, by record key",
            tags=tags,
            entrypoint_type=module,
        ),
        rollout.to_deployment(
            name=name,
            parameters=defaults,
            description="Step the challenger's canary share up under guardrails, then promote it",
            tags=tags,
            entrypoint_type=module,
        ),
    ]


def serve_deployments(config_path: Path) -> None:
    """Register the deployments and run their flow runs until stopped (SIGTERM)."""
    config_path = config_path.resolve()
    config = load_config(config_path)
    # The runner's health endpoint runs in a thread of its own, which reads the settings
    # Prefect loaded from the environment at import, not the context `client_settings` sets.
    os.environ["PREFECT_RUNNER_SERVER_HOST"] = config.stack.host
    os.environ["PREFECT_RUNNER_SERVER_PORT"] = str(config.stack.runner_port)

    from prefect import serve

    from mlops.clients import client_settings

    deployments = build_deployments(config, str(config_path))
    with client_settings(config):
        # Schedules stay active while this process is down: a missed run starts late, not never.
        serve(*deployments, pause_on_shutdown=False, limit=RUNNER_LIMIT, webserver=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("mlops.yaml"), help="project config file")
    serve_deployments(parser.parse_args(argv).config)


if __name__ == "__main__":
    main()
