"""Every error a person can cause or fix has one root, `LfkError`: the CLI prints its message and exits 1,
never a traceback. Subclasses say which side failed, so callers can catch just that side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core.problems import Problem


class LfkError(Exception):
    """Base of every error the user can act on; the message says what went wrong and where."""


class SpecError(LfkError):
    """A spec cannot be used; carries every problem found, each located by its JSON path."""

    def __init__(self, source: str, problems: Sequence[Problem]):
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join(p.format(source) for p in self.problems))


class DataError(LfkError):
    """A data file or dataset_info.json cannot be read or used."""


class KubeError(LfkError):
    """The cluster could not be reached or answered with an error; `status` is the HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ClusterError(LfkError):
    """The local cluster could not be started, stopped or reached; the message names the part and its log."""


class RunFailed(LfkError):
    """A step of `lfk run` failed; the message has the step, the pod, its last events and log lines."""


class ToolMissing(LfkError):
    """A program the command needs (helm, kubectl, a cluster binary) is not there; the message says how to get it."""
