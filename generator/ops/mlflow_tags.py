"""The run report's figures as tags on the training's MLflow run (`lfk report --mlflow-tags`), through the
MLflow client (mlflow-skinny is enough): the run is the one the chart's MLFLOW_TAGS marked with the
experiment's run id and its train release, as the evaluation gate finds it. Credentials come from the
environment as MLflow reads them (MLFLOW_TRACKING_USERNAME / _PASSWORD or _TOKEN)."""

from __future__ import annotations

from typing import Any

from ..errors import LfkError


def training_run(client: Any, experiment: str, run_id: str, train_release: str) -> str:
    """The MLflow run id of the experiment run's training (its latest start, after a restart)."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise LfkError(f"MLflow has no experiment {experiment!r}")
    runs = client.search_runs([found.experiment_id], f"tags.run_id = '{run_id}'")
    training = [r for r in runs if r.data.tags.get("release") == train_release]
    if not training:
        raise LfkError(
            f"MLflow experiment {experiment!r} has no run of the training of run {run_id} (tags run_id={run_id}, "
            f"release={train_release}); did the training report to MLflow?"
        )
    return str(max(training, key=lambda r: r.info.start_time).info.run_id)


def set_tags(
    tracking_uri: str, experiment: str, run_id: str, train_release: str, tags: dict[str, str]
) -> str:
    """Set every tag on the training's MLflow run; its MLflow run id."""
    try:
        from mlflow import MlflowClient
        from mlflow.entities import RunTag
    except ImportError:
        raise LfkError("--mlflow-tags needs the mlflow client here: pip install mlflow-skinny") from None
    client = MlflowClient(tracking_uri)
    try:
        mlflow_run = training_run(client, experiment, run_id, train_release)
        client.log_batch(mlflow_run, tags=[RunTag(k, v) for k, v in sorted(tags.items())])
    except LfkError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow's own errors (unreachable, refused), said plainly
        raise LfkError(f"MLflow at {tracking_uri}: {exc}") from None
    return mlflow_run
