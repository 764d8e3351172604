"""lfk run | status: an experiment on a cluster, from nothing to a served model, and where it stands."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

import click

from ..core.components import INSTALL_ORDER
from ..core.lossplot import loss_png
from ..core.write import atomic_write
from ..errors import LfkError
from ..ops.target import Target
from ..project import helm_binary
from .output import Failed
from .spec_commands import load_valid


def cluster_options(fn: Any) -> Any:
    fn = click.option("--kube-context", "context", help="kubeconfig context to use.")(fn)
    fn = click.option(
        "--kubeconfig", type=click.Path(dir_okay=False), help="kubeconfig file (default: $KUBECONFIG)."
    )(fn)
    return fn


def storage_option(fn: Any) -> Any:
    return click.option(
        "--storage-root",
        type=click.Path(file_okay=False, path_type=Path),
        help="Where the shared storage is mounted on this machine (it is /storage in the pods).",
    )(fn)


def target_of(
    spec_path: str, kubeconfig: str | None, context: str | None, storage_root: Path | None
) -> Target:
    experiment = load_valid(spec_path)
    return Target.of(experiment.spec, helm_binary(), kubeconfig, context, storage_root, experiment.facts)


@click.command("run")
@click.argument("spec")
@click.option(
    "--components",
    default=",".join(INSTALL_ORDER),
    show_default=True,
    help="Comma-separated steps to run, in the order train, merge, eval (the gate), vllm (with helm test), adapter "
    "(into a shared vLLM, with helm test), webui.",
)
@click.option("--dry-run", is_flag=True, help="Print the helm commands without running them.")
@click.option("--timeout", default=6 * 3600, show_default=True, help="Seconds to wait for each step.")
@click.option(
    "--pending-timeout", default=300, show_default=True, help="Seconds a pod may stay unschedulable."
)
@cluster_options
@storage_option
def run_cmd(
    spec: str,
    components: str,
    dry_run: bool,
    timeout: int,
    pending_timeout: int,
    kubeconfig: str | None,
    context: str | None,
    storage_root: Path | None,
) -> None:
    """Install train, wait, merge, wait, the evaluation gate, wait, serve with vLLM, wait, helm test, then the
    web UI. A re-run skips
    the steps the current run id already completed; the first failure stops with its pod's events and logs."""
    from ..ops import helm, run

    chosen = [c.strip() for c in components.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(INSTALL_ORDER))
    if unknown:
        raise click.BadParameter(f"unknown component(s) {', '.join(unknown)}", param_hint="--components")
    target = target_of(spec, kubeconfig, context, storage_root)
    if dry_run:
        for step in helm.plan(target.facts, target.spec.folder, target.helm, chosen):
            for command in step.commands:
                click.echo(shlex.join(command))
        return
    started = time.monotonic()
    try:
        simulated = run.run(target, chosen, click.echo, float(timeout), float(pending_timeout))
    except (LfkError, OSError) as exc:  # a failed step, the cluster gone, a broken kubeconfig, ...
        raise Failed(f"run stopped: {exc}") from None
    click.echo(f"done in {time.monotonic() - started:.0f} s: {outcome_line(target.facts, simulated)}")


def outcome_line(facts: Any, simulated: dict[str, bool]) -> str:
    """What the run really achieved: a served model only when vLLM's pod really ran."""
    run = f"{facts.name} run {facts.run_id}"
    fake = [c for c, s in simulated.items() if s]
    if fake:
        return (
            f"{run}: SIMULATED on kwok nodes ({', '.join(fake)}): the control plane scheduled and admitted the "
            "pods, but no container ran, nothing was trained and nothing serves"
        )
    if simulated.get("vllm") is False:
        return f"{run} is served as {facts.served_name!r} (vLLM answered its helm test)"
    if simulated.get("adapter") is False and (host := facts.serving_host):
        return f"{run} is served as {facts.served_name!r} by {host.name}'s vLLM (the adapter answered its helm test)"
    return f"{run}: {', '.join(simulated) or 'nothing'} done"


def gate_line(scores: dict[str, Any]) -> str:
    """The evaluation gate in one line: the metric, both models' scores, the rule and the verdict."""
    from ..core.report import gate_rule

    metric = scores["metric"]
    rule = gate_rule(scores)
    verdict = "passed" if scores["passed"] else "FAILED: not served"
    return (
        f"evaluation {metric}: tuned {scores['tuned'][metric]:.2f} vs base {scores['base'][metric]:.2f} "
        f"({rule}): {verdict}"
    )


def render_status(data: dict[str, Any]) -> str:
    """The status as a plain-text table (one block per release)."""
    lines = [f"experiment {data['experiment']} (namespace {data['namespace']}, run {data['run_id']})"]
    for release in data["releases"]:
        revision = f" rev {release['revision']}" if release["revision"] else ""
        lines.append(f"  {release['component']:<6} {release['release']:<32} helm {release['helm']}{revision}")
        for obj in release["objects"]:
            extra = (
                f" active {obj['active']} succeeded {obj['succeeded']} failed {obj['failed']}"
                if obj["kind"] != "Deployment"
                else f" ready {obj['ready']}"
            )
            reason = f" ({obj['reason']})" if obj.get("reason") else ""
            lines.append(
                f"         {obj['kind'].lower()} {obj['name']} run {obj['run_id'] or '-'}: {obj['state']}{reason}{extra}"
            )
            if obj.get("queue"):
                lines.append(f"           {obj['queue']}")
        for pod in release["pods"]:
            waiting = f" waiting: {pod['waiting']}" if pod["waiting"] else ""
            node = (
                pod["node"] + (" (simulated: no container runs)" if pod.get("simulated") else "")
            ) or "(unscheduled)"
            rank = f" (node rank {pod['rank']})" if pod.get("rank") is not None else ""
            lines.append(
                f"         pod {pod['name']}{rank} {pod['phase']} on {node} GPUs {pod['gpus']}{waiting}"
            )
            if pod.get("problem"):
                lines.append(f"           ! {pod['problem']}")
    training = data.get("training")
    if training:
        from ..core.trainlog import Progress

        progress = Progress(
            training["current_steps"], training["total_steps"], training["percentage"], training["loss"], training["lr"],
            training["epoch"], training["elapsed"], training["remaining"],
        )  # fmt: skip
        lines.append(
            f"  training {progress.bar()} {training['percentage']:.0f}%  loss {training['loss']}  lr {training['lr']}  "
            f"epoch {training['epoch']}  elapsed {training['elapsed']}  remaining {training['remaining']}"
        )
        lines += [f"  ! {p}" for p in training["problems"]]
    checkpoints = data.get("checkpoints")
    if checkpoints is not None:
        from ..core.watch import human_size

        saved = ", ".join(
            f"step {c['step']} at {c['saved_at']} ({human_size(c['size_bytes'])})" for c in checkpoints[-3:]
        )
        lines.append(
            f"  checkpoints {len(checkpoints)}" + (f", the last: {saved}" if saved else " (none saved yet)")
        )
    if (scores := data.get("evaluation")) is not None:
        lines.append("  " + gate_line(scores))
        lines += [f"  ! {why}" for why in scores["why"]]
    gpu = data.get("gpu_utilisation")
    if gpu is not None:
        mean = f"{gpu['mean']:.0f} % mean" if gpu["mean"] is not None else "no figure"
        per_gpu = "  ".join(f"{k} {v:.0f} %" for k, v in gpu["per_gpu"].items())
        lines.append(f"  GPU utilisation {mean} ({gpu['source']}){'  ' + per_gpu if per_gpu else ''}")
        if gpu["warning"]:
            lines.append(f"  ! {gpu['warning']}")
    return "\n".join(lines)


def write_plot(path: Path, data: dict[str, Any]) -> None:
    if not data.get("training") or not data["training"]["loss_curve"]:
        raise Failed(f"status --plot: no loss logged yet for {data['experiment']}; nothing to plot")
    try:
        atomic_write(path, loss_png(data["training"], f"{data['experiment']} run {data['run_id']}"))
    except ModuleNotFoundError:
        raise Failed("status --plot needs matplotlib: pip install 'llamafactory-k8s[plot]'") from None
    except OSError as exc:
        raise Failed(f"status --plot: cannot write {path}: {exc}") from None


@click.command("status")
@click.argument("spec")
@click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--watch", is_flag=True, help="Refresh every few seconds until interrupted.")
@click.option("--interval", default=5.0, show_default=True, help="Seconds between refreshes with --watch.")
@click.option(
    "--read-log-in-cluster",
    "from_cluster",
    is_flag=True,
    help="Read trainer_log.jsonl through a short-lived pod mounting the claim (no local mount needed).",
)
@click.option(
    "--gpu-metrics",
    "prometheus",
    default="",
    metavar="URL",
    help="Prometheus base URL with dcgm-exporter's metrics, for GPU utilisation (else nvidia-smi in the pod).",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the loss curve as a PNG (needs matplotlib).",
)
@cluster_options
@storage_option
def status_cmd(
    spec: str,
    output: str,
    watch: bool,
    interval: float,
    from_cluster: bool,
    prometheus: str,
    plot: Path | None,
    kubeconfig: str | None,
    context: str | None,
    storage_root: Path | None,
) -> None:
    """Per release: helm status, Job or Deployment, pods, nodes and GPUs; training progress, NaN loss and a
    stalled loss from trainer_log.jsonl and the checkpoints saved (read through --storage-root, or
    --read-log-in-cluster); the training GPUs' utilisation, with a warning under 80 %."""
    from ..ops import status

    target = target_of(spec, kubeconfig, context, storage_root)
    while True:
        try:
            data = status.status(target, from_cluster, prometheus)
        except (LfkError, OSError) as exc:
            raise Failed(f"status: {exc}") from None
        if plot is not None:
            write_plot(plot, data)
        text = json.dumps(data, indent=1) if output == "json" else render_status(data)
        if watch and output == "table":
            click.clear()
        click.echo(text)
        if not watch:
            return
        time.sleep(interval)
