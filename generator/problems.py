"""Problems found in a spec: one type for schema errors, cross-field checks and LLaMA-Factory's own messages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One finding about a spec, located by a JSON path such as ``$.method.lora.rank``."""

    path: str
    message: str
    hint: str = ""
    severity: Severity = "error"

    def format(self, source: str) -> str:
        """`file::$.a.b: message (hint: ...)`; warnings say so after the path."""
        prefix = "warning: " if self.severity == "warning" else ""
        text = f"{source}::{self.path}: {prefix}{self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


def errors(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


class SpecError(Exception):
    """Raised by the core when a spec cannot be used; carries every problem found."""

    def __init__(self, source: str, problems: Sequence[Problem]):
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join(p.format(source) for p in self.problems))


def json_path(parts: Iterable[str | int]) -> str:
    """Render path parts as ``$.a.b[0]``; keys that are not identifiers are quoted: ``$['a.b']``."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.replace("_", "a").replace("-", "a").isalnum() and not part[:1].isdigit():
            out += f".{part}"
        else:
            out += "[" + repr(part) + "]"
    return out
