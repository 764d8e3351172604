"""`lfk`: the thin command line over the generator core. It parses, calls the core, prints, and picks
the exit code: 0 ok, 1 invalid input (every problem listed, no traceback), 2 usage error."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import LfkError
from .check_commands import check_cmd, ui_cmd
from .cluster_commands import cluster
from .data_commands import data
from .new_command import new_cmd
from .ops_commands import install, uninstall
from .report_command import report_cmd
from .run_commands import run_cmd, status_cmd
from .session_commands import chat_cmd, exec_cmd
from .spec_commands import describe, render_cmd, validate_cmd


class LfkGroup(click.Group):
    """Every LfkError (and an OSError, such as an unreadable file) ends as its message and exit 1: the one
    place where errors meet the user, never as a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (LfkError, OSError) as exc:
            if str(exc):
                click.secho(str(exc), fg="red", err=True)
            raise click.exceptions.Exit(1) from None
        except UnicodeDecodeError as exc:  # a file read without the core's checks: still one line
            click.secho(f"a file is not UTF-8: byte offset {exc.start}: {exc.reason}", fg="red", err=True)
            raise click.exceptions.Exit(1) from None


@click.group(cls=LfkGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="llamafactory-k8s", prog_name="lfk")
def cli() -> None:
    """Experiment specs -> validated Helm values for LLaMA-Factory on Kubernetes."""


cli.add_command(new_cmd)
cli.add_command(validate_cmd)
cli.add_command(render_cmd)
cli.add_command(describe)
cli.add_command(install)
cli.add_command(uninstall)
cli.add_command(cluster)
cli.add_command(data)
cli.add_command(run_cmd)
cli.add_command(status_cmd)
cli.add_command(check_cmd)
cli.add_command(ui_cmd)
cli.add_command(exec_cmd)
cli.add_command(chat_cmd)
cli.add_command(report_cmd)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
