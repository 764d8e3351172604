"""lfk cluster up | down | status: the local cluster: control plane, simulated GPU nodes, one real node (see\ngenerator.cluster)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..errors import LfkError
from .output import Failed

state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the cluster keeps its data, logs and kubeconfig (default: .cluster/).",
)


@click.group()
def cluster() -> None:
    """A local Kubernetes cluster: a real control plane, simulated GPU nodes (kwok) and one real node."""


@cluster.command()
@click.option("--nodes", default=4, show_default=True, help="Number of simulated GPU nodes.")
@click.option("--gpus", default=8, show_default=True, help="GPUs per simulated node.")
@click.option(
    "--product", "products", multiple=True, help="nvidia.com/gpu.product of the nodes, cycled (repeatable)."
)
@click.option(
    "--taint", "taints", multiple=True, help="Taint of every simulated node, key[=value]:Effect (repeatable)."
)
@click.option(
    "--real-node/--no-real-node",
    default=True,
    show_default=True,
    help="Also run one real node (containerd, kubelet, kube-proxy, CoreDNS; needs root and make node-tools).",
)
@click.option(
    "--kubeconfig/--no-kubeconfig",
    "export",
    default=True,
    show_default=True,
    help="Add the cluster to your kubeconfig and select it (as kind does); cluster down removes it.",
)
@click.option(
    "--engines",
    "engines",
    multiple=True,
    type=click.Choice(["jobset", "trainer", "training-operator", "kuberay", "kueue"]),
    help="Workload controllers to run in the cluster too (repeatable; built by make cluster-tools; trainer brings "
    "jobset along; kueue needs root).",
)
@click.option(
    "--scheduling",
    type=click.Choice(["spread", "binpack"]),
    default="spread",
    show_default=True,
    help="How the scheduler scores nodes: Kubernetes' default (spread), or GPUs packed onto the fullest node "
    "first (binpack, MostAllocated: fewer 8-GPU pods stranded; docs/local-cluster.md).",
)
@state_dir_option
def up(
    nodes: int, gpus: int, products: tuple[str, ...], taints: tuple[str, ...], real_node: bool, export: bool,
    engines: tuple[str, ...], scheduling: str, state_dir: Path | None,
) -> None:  # fmt: skip
    """Start the control plane on 127.0.0.1, the simulated GPU nodes and the real node. A running cluster is
    left alone."""
    from ..cluster import kubeconfig, lifecycle
    from ..cluster import nodes as node_pool
    from ..cluster.state import DEFAULT_STATE_DIR

    try:
        taint_list = [node_pool.parse_taint(t) for t in taints]
    except LfkError as exc:
        raise click.BadParameter(str(exc), param_hint="--taint") from None
    pool = node_pool.default_nodes(nodes, gpus, products or node_pool.DEFAULT_PRODUCTS)
    pool = [node_pool.NodeSpec(n.name, n.gpus, n.product, taints=taint_list) for n in pool]
    started_at = time.monotonic()

    def report(line: str) -> None:
        click.echo(f"[{time.monotonic() - started_at:5.0f} s] {line}")

    try:
        state, started = lifecycle.up(
            state_dir or DEFAULT_STATE_DIR,
            pool,
            real_node=real_node,
            engines=engines,
            scheduling=scheduling,
            report=report,
        )
    except LfkError as exc:
        raise Failed(f"cluster: {exc}") from None
    click.echo(f"cluster {'started' if started else 'already running'}: {state.server}")
    if export:
        written = kubeconfig.export(state)
        where = "(KUBECONFIG is the cluster's own file)" if written == state.kubeconfig else f"in {written}"
        click.echo(f"  kubeconfig: context {kubeconfig.NAME} selected {where}; kubectl, helm and lfk use it")
    click.echo(f"  its own kubeconfig: {state.kubeconfig}")
    click.echo("  stop it with: make cluster-down")


@cluster.command()
@state_dir_option
def down(state_dir: Path | None) -> None:
    """Stop every process of the local cluster by its PID and delete its state."""
    from ..cluster import lifecycle
    from ..cluster.state import DEFAULT_STATE_DIR

    started_at = time.monotonic()
    stopped = lifecycle.down(
        state_dir or DEFAULT_STATE_DIR,
        lambda line: click.echo(f"[{time.monotonic() - started_at:5.0f} s] {line}"),
    )
    click.echo(f"cluster stopped ({', '.join(stopped)})" if stopped else "no cluster was running")


@cluster.command()
@click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@state_dir_option
def status(output: str, state_dir: Path | None) -> None:
    """Processes, API health and nodes of the local cluster. Exit 1 when it is not running."""
    from ..cluster import lifecycle
    from ..cluster.state import DEFAULT_STATE_DIR

    info = lifecycle.status(state_dir or DEFAULT_STATE_DIR)
    if output == "json":
        click.echo(json.dumps(info, indent=1))
    elif not info["processes"]:
        click.echo("no local cluster (start one with: make cluster-up)")
    else:
        click.echo(
            f"API {info['server']}: {'ready' if info['running'] else 'NOT ready'}   kubeconfig {info['kubeconfig']}"
        )
        click.echo(f"  scheduling: {info['scheduling']} (lfk cluster up --scheduling)")
        for name, process in info["processes"].items():
            click.echo(f"  {name:<24} pid {process['pid']:<8} {'running' if process['alive'] else 'DEAD'}")
        for node in info.get("nodes", []):
            taints = f"  taints {','.join(node['taints'])}" if node["taints"] else ""
            kind = f"simulated, {node['gpus']} x {node['product']}" if node["simulated"] else "real"
            click.echo(
                f"  node {node['name']:<20} {'Ready' if node['ready'] else 'NotReady':<9} {kind}{taints}"
            )
    if not info["running"]:
        raise Failed()
