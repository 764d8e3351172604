"""lfk report: one self-contained page about one run of the experiment (the current one, or --run ID)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import click

from ..core import report
from ..core.facts import for_run
from ..core.lossplot import loss_png
from ..core.write import atomic_write
from ..errors import LfkError
from .output import Failed
from .run_commands import cluster_options, storage_option, target_of


@click.command("report")
@click.argument("spec")
@click.option("--format", "form", type=click.Choice(["html", "md"]), default="html", show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The page (default: report-<run id>.<format> next to the spec). Markdown gets its loss curve beside it.",
)
@click.option(
    "--price-per-gpu-hour",
    type=float,
    help="To put a cost on the GPU-hours (default: the spec's resources.gpu.pricePerHour).",
)
@click.option(
    "--mlflow-tags",
    is_flag=True,
    help="Also set the report's figures as tags (lfk.*) on the training's MLflow run (spec: tracking.mlflow).",
)
@click.option(
    "--mlflow-uri",
    metavar="URL",
    help="Reach MLflow here instead of the spec's trackingUri (a port-forward, say); credentials from "
    "MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN.",
)
@click.option(
    "--run",
    "run_id",
    metavar="ID",
    help="An earlier run of the experiment (its run id, as `lfk status` and the output folders show it); "
    "default: the spec's current run.",
)
@click.option(
    "--read-log-in-cluster",
    "from_cluster",
    is_flag=True,
    help="Read trainer_log.jsonl and the checkpoints through a short-lived pod mounting the claim.",
)
@cluster_options
@storage_option
def report_cmd(
    spec: str, form: str, out: Path | None, price_per_gpu_hour: float | None, mlflow_tags: bool,
    mlflow_uri: str | None, run_id: str | None, from_cluster: bool, kubeconfig: str | None, context: str | None,
    storage_root: Path | None,
) -> None:  # fmt: skip
    """The run as one page: lineage (spec hash, run id, versions, images by digest), training (steps, loss,
    checkpoints, the loss curve, tokens/s), the evaluation gate's scores, each stage's wall time, GPU-hours and
    cost, what is served."""
    from ..ops import status

    target = target_of(spec, kubeconfig, context, storage_root)
    if run_id is not None:
        if not re.fullmatch(r"[0-9a-f]{8}", run_id):
            raise Failed(
                f"report: --run {run_id!r}: a run id is 8 hexadecimal digits (lfk status shows them)"
            )
        target = dataclasses.replace(target, facts=for_run(target.spec, target.facts, run_id))
    try:
        data = status.status(target, from_cluster)
    except (LfkError, OSError) as exc:
        raise Failed(f"report: {exc}") from None
    facts = target.facts
    if run_id is not None and data.get("training") is None and not report.stages(report.of_run(data, run_id)):
        raise Failed(
            f"report: nothing of run {run_id} was found: no workload of it in the cluster, and no trainer log "
            f"read from {facts.output_dir} (pass --storage-root or --read-log-in-cluster)"
        )
    spec_text = Path(spec).read_text(encoding="utf-8")
    parts = report.sections(spec_text, target.spec.data, facts, data, price_per_gpu_hour)
    training = data.get("training")
    try:
        png = (
            loss_png(training, f"{facts.name} run {facts.run_id}")
            if training and training["loss_curve"]
            else None
        )
    except ModuleNotFoundError:
        png = None  # matplotlib is optional: the page goes without the curve
    out = out or Path(spec).parent / f"report-{facts.run_id}.{form}"
    title = f"{facts.name}: run {facts.run_id}"
    try:
        if form == "html":
            atomic_write(out, report.html_page(title, parts, png))
        else:
            picture = out.with_suffix(".loss.png") if png else None
            if picture is not None and png is not None:
                atomic_write(picture, png)
            atomic_write(out, report.markdown(title, parts, picture.name if picture else None))
    except OSError as exc:
        raise Failed(f"report: cannot write {out}: {exc}") from None
    click.echo(f"report of {facts.name} run {facts.run_id}: {out}")
    if mlflow_tags:
        mlflow = target.spec.data["tracking"].get("mlflow")
        if not mlflow:
            raise Failed("report: --mlflow-tags: the spec has no tracking.mlflow")
        from ..ops.mlflow_tags import set_tags

        tags = report.figures(spec_text, target.spec.data, facts, data, price_per_gpu_hour)
        uri = mlflow_uri or mlflow["trackingUri"]
        try:
            run = set_tags(
                uri, mlflow.get("experiment", facts.name), facts.run_id, facts.releases["train"], tags
            )
        except LfkError as exc:
            raise Failed(f"report: {exc}") from None
        click.echo(f"MLflow: {len(tags)} tags (lfk.*) set on run {run} at {uri}")
