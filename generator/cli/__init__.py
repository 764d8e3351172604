"""`lfk`: the thin command line over the generator core. It parses, calls the core, prints, and picks
the exit code: 0 ok, 1 invalid input (every problem listed, no traceback), 2 usage error."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from ..errors import LfkError

# command name -> (module of this package, its click command): a command's module, and what it imports (the
# Kubernetes client for the cluster-facing ones), is imported only when that command runs or help lists it,
# so `lfk validate` and `lfk render` start without anything cluster-side
COMMANDS = {
    "new": ("new_command", "new_cmd"),
    "import": ("import_command", "import_cmd"),
    "validate": ("spec_commands", "validate_cmd"),
    "render": ("spec_commands", "render_cmd"),
    "describe": ("spec_commands", "describe"),
    "install": ("ops_commands", "install"),
    "uninstall": ("ops_commands", "uninstall"),
    "cluster": ("cluster_commands", "cluster"),
    "data": ("data_commands", "data"),
    "run": ("run_commands", "run_cmd"),
    "status": ("run_commands", "status_cmd"),
    "check": ("check_commands", "check_cmd"),
    "ui": ("check_commands", "ui_cmd"),
    "exec": ("session_commands", "exec_cmd"),
    "chat": ("session_commands", "chat_cmd"),
    "report": ("report_command", "report_cmd"),
}


class LfkGroup(click.Group):
    """Every LfkError (and an OSError, such as an unreadable file) ends as its message and exit 1: the one
    place where errors meet the user, never as a traceback. Commands load on first use (COMMANDS)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attr = COMMANDS[cmd_name]
            command = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

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


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
