"""lfk check | ui: the guide's checklists, and port-forwards to the web UI, the API and MLflow."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import click

from .output import Failed
from .run_commands import cluster_options, storage_option, target_of


@click.command("check")
@click.argument("spec")
@click.option(
    "--after", is_flag=True, help="The after-training list: merged model complete, vLLM serving the name."
)
@click.option(
    "--in-cluster", is_flag=True, help="Run the storage checks as the GPU-less preflight Job in the cluster."
)
@click.option("--vllm-url", help="With --after: the OpenAI API to ask (e.g. http://localhost:8000).")
@click.option(
    "--api-key-env",
    default="VLLM_API_KEY",
    show_default=True,
    help="Environment variable holding the API key.",
)
@click.option("--no-cluster", is_flag=True, help="Skip the items that need the Kubernetes API.")
@cluster_options
@storage_option
def check_cmd(
    spec: str, after: bool, in_cluster: bool, vllm_url: str | None, api_key_env: str, no_cluster: bool,
    kubeconfig: str | None, context: str | None, storage_root: Path | None,
) -> None:  # fmt: skip
    """The before-training checklist (or --after, the after-training one). Each item: ✓, ✗ with the fix, or -
    when it cannot be checked from here. Exit 1 when an item fails."""
    from ..core.problems import Item
    from ..errors import KubeError
    from ..ops import cluster_readiness, readiness

    target = target_of(spec, kubeconfig, context, storage_root)
    api = None
    if not no_cluster:
        try:
            api = target.api
        except KubeError as exc:
            click.echo(f"- cluster items skipped: {exc}")
    if after:
        items = readiness.after_training(
            target.spec, storage_root, vllm_url, os.environ.get(api_key_env), facts=target.facts
        )
    else:
        items = readiness.before_training(target.spec, storage_root, api, facts=target.facts)
        if in_cluster:
            if api is None:
                raise Failed("--in-cluster needs the cluster")
            passed, output = cluster_readiness.preflight_in_cluster(target, click.echo)
            items = [i for i in items if i.ok is not None or "storage" not in i.detail]
            detail = "every item passed" if passed else "failed"
            items.append(Item("preflight Job in the cluster", passed, detail, "see its output above"))
            click.echo("  " + output.replace("\n", "\n  "))
    for item in items:
        click.echo(item.line())
    failed = [i for i in items if i.ok is False]
    if failed:
        raise Failed(f"{len(failed)} item(s) failed: {', '.join(i.name for i in failed)}")


@click.command("ui")
@click.argument("spec")
@click.argument("what", type=click.Choice(["webui", "vllm", "mlflow"]))
@click.option("--port", type=int, help="Local port (default: the service's own: 7860, 8000, 5000).")
@cluster_options
def ui_cmd(spec: str, what: str, port: int | None, kubeconfig: str | None, context: str | None) -> None:
    """Port-forward to the LlamaBoard web UI, the vLLM API or MLflow and print the URL (Ctrl-C stops it).
    Without a Ready pod it fails, saying why."""
    from ..ops import ui
    from ..project import kubectl_binary

    target = target_of(spec, kubeconfig, context, None)
    forward = ui.forward(target, what, port)
    if not forward.args:
        click.echo(f"{what} is outside the cluster: open {forward.url}")
        return
    args = [kubectl_binary(), *forward.args]
    if kubeconfig:
        args += ["--kubeconfig", kubeconfig]
    if context:
        args += ["--context", context]
    click.echo(f"{forward.url}  ({what}; Ctrl-C to stop)")
    try:
        code = subprocess.call(args)
    except KeyboardInterrupt:
        return
    if code != 0:
        raise Failed(f"ui: kubectl port-forward exited {code}")
