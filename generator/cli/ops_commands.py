"""lfk install | uninstall: the helm commands of an experiment's releases, printed, then run."""

from __future__ import annotations

import shlex
import subprocess

import click

from ..core.components import NAMES
from ..ops import helm
from ..project import helm_binary
from .output import Failed
from .spec_commands import load_valid

component_option = click.option(
    "--component",
    default="all",
    show_default=True,
    type=click.Choice(["all", *NAMES]),
    help="Which release.",
)
dry_run_option = click.option("--dry-run", is_flag=True, help="Print the helm commands without running them.")


def _commands(spec_path: str, component: str, build):  # type: ignore[no-untyped-def]
    experiment = load_valid(spec_path)
    facts = experiment.facts
    return [build(facts, c, experiment.spec.folder) for c in helm.selected(facts, component)]


def _run_all(commands: list[list[str]], dry_run: bool) -> None:
    for command in commands:
        click.echo("+ " + shlex.join(command))
        if dry_run:
            continue
        if subprocess.run(command, check=False).returncode != 0:
            raise Failed(f"failed: {shlex.join(command)}")


@click.command()
@click.argument("spec")
@component_option
@dry_run_option
def install(spec: str, component: str, dry_run: bool) -> None:
    """helm upgrade --install the experiment's releases (train, merge, eval, vllm, webui) from its values files."""
    binary = helm_binary()
    _run_all(_commands(spec, component, lambda f, c, d: helm.install_command(f, c, d, binary)), dry_run)


@click.command()
@click.argument("spec")
@component_option
@dry_run_option
def uninstall(spec: str, component: str, dry_run: bool) -> None:
    """helm uninstall the experiment's releases. The storage (PersistentVolume and claim) is kept."""
    binary = helm_binary()
    _run_all(_commands(spec, component, lambda f, c, d: helm.uninstall_command(f, c, binary)), dry_run)
