"""Problems found in a spec (one type for schema errors, cross-field rules and LLaMA-Factory's own messages),
and the items of the guide's checklists."""

from __future__ import annotations

from collections.abc import Iterable
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


@dataclass(frozen=True)
class Item:
    """One line of a checklist: passed, failed with the fix, or not checkable here and why."""

    name: str
    ok: bool | None  # None: could not be checked here (detail says why)
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = {True: "✓", False: "✗", None: "-"}[self.ok]
        return f"{mark} {self.name}: {self.detail}" + (
            f"\n    fix: {self.fix}" if self.fix and self.ok is False else ""
        )
