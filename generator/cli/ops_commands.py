"""lfk install | uninstall: the helm commands of an experiment's releases, printed, then run."""

from __future__ import annotations

import shlex
import subprocess

import click

from .. import releases
from ..facts import derive
from ..problems import errors
from ..tools import helm_binary
from .output import Failed, print_problems
from .spec_commands import load_and_check

component_option = click.option(
    "--component",
    default="all",
    show_default=True,
    type=click.Choice(["all", "webui", "train", "merge", "vllm"]),
    help="Which release.",
)
dry_run_option = click.option("--dry-run", is_flag=True, help="Print the helm commands without running them.")


def _commands(spec_path: str, component: str, build):  # type: ignore[no-untyped-def]
    spec, problems = load_and_check(spec_path)
    print_problems(spec_path, problems)
    if spec is None or errors(problems):
        raise Failed()
    facts = derive(spec)
    try:
        chosen = releases.selected(facts, component)
    except ValueError as exc:
        raise Failed(f"{spec_path}: {exc}") from None
    return [build(facts, c, spec.folder) for c in chosen]


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
    """helm upgrade --install the experiment's releases (train, merge, vllm, webui) from its values files."""
    helm = helm_binary()
    _run_all(_commands(spec, component, lambda f, c, d: releases.install_command(f, c, d, helm)), dry_run)


@click.command()
@click.argument("spec")
@component_option
@dry_run_option
def uninstall(spec: str, component: str, dry_run: bool) -> None:
    """helm uninstall the experiment's releases. The storage (PersistentVolume and claim) is kept."""
    helm = helm_binary()
    _run_all(_commands(spec, component, lambda f, c, d: releases.uninstall_command(f, c, helm)), dry_run)
