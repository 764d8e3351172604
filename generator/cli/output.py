"""Printing problems the same way in every command."""

from __future__ import annotations

from collections.abc import Iterable

import click

from ..problems import Problem


def print_problems(source: str, problems: Iterable[Problem]) -> None:
    for problem in problems:
        click.secho(problem.format(source), fg="yellow" if problem.severity == "warning" else "red", err=True)


class Failed(click.ClickException):
    """Invalid input: the problems were printed already; exit 1 without a traceback."""

    exit_code = 1

    def __init__(self, message: str = ""):
        super().__init__(message)

    def show(self, file: object = None) -> None:
        if self.message:
            click.secho(self.message, fg="red", err=True)
