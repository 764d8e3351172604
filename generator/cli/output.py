"""Printing problems the same way in every command."""

from __future__ import annotations

from collections.abc import Iterable

import click

from ..core.problems import Problem
from ..errors import LfkError


def print_problems(source: str, problems: Iterable[Problem]) -> None:
    for problem in problems:
        click.secho(problem.format(source), fg="yellow" if problem.severity == "warning" else "red", err=True)


class Failed(LfkError):
    """A command failed on input it was given; the details were printed already, or are the message."""
