"""Reads the comments of charts/llama-factory/values.yaml for the JSON schema (chart-schema.py) and for
tests/chart/test_docs.py, which checks helm-docs' README table against the schema: helm-docs reads the same
`# --` comments, so the table and the schema see the same keys and the same text.

Above a key, in its comment:
    # -- text            the key's description (continued by following `# text` lines); the README lists it
    # plain text         without a `# --`, a comment block directly above the key describes it in the schema
    # @schema {...}      JSON Schema keywords for the key (a JSON object; several lines are merged)
Anywhere (by convention at the top of the file):
    # @schema-def NAME {...}   a shape that annotations bring in with {"$ref": "#/$defs/NAME"} (several
                               lines of one NAME are merged, like a key's `# @schema` lines)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHART = Path(__file__).resolve().parent.parent / "charts" / "llama-factory"
VALUES = CHART / "values.yaml"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?P<rest>.*)$")
ANNOTATION, DEFINITION = "@schema ", "@schema-def "


class AnnotationError(ValueError):
    """A malformed `# @schema` or `# @schema-def` line, with its line number."""


@dataclass
class Key:
    """One key of values.yaml and what its comment says."""

    path: tuple[str, ...]
    line: int
    description: str = ""  # the `# --` text
    note: str = ""  # a plain comment block directly above, used when there is no `# --`
    schema: list[dict[str, Any]] = field(default_factory=list)  # the `# @schema` objects, in order

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@dataclass
class Comments:
    keys: list[Key]
    definitions: dict[str, list[dict[str, Any]]]  # NAME: its `# @schema-def` objects, in order


def _json_object(text: str, lineno: int) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise AnnotationError(
            f"values.yaml:{lineno}: the annotation is not JSON ({err.msg}): {text}"
        ) from err
    if not isinstance(value, dict):
        raise AnnotationError(f"values.yaml:{lineno}: an annotation must be a JSON object: {text}")
    return value


def read(text: str) -> Comments:
    """Every key of values.yaml (file order, path from the indentation) with its comment, and the shapes."""
    stack: list[tuple[int, str]] = []
    described: list[str] = []  # the open `# --` block
    note: list[str] = []  # the open plain comment block
    schema: list[dict[str, Any]] = []
    keys: list[Key] = []
    definitions: dict[str, list[dict[str, Any]]] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        comment = stripped[1:].strip() if stripped.startswith("#") else None
        if comment is not None and comment.startswith(DEFINITION):
            name, _, body = comment[len(DEFINITION) :].strip().partition(" ")
            definitions.setdefault(name, []).append(_json_object(body.strip(), lineno))
            continue
        if comment is not None and comment.startswith(ANNOTATION):
            schema.append(_json_object(comment[len(ANNOTATION) :].strip(), lineno))
            continue
        if stripped.startswith("# --"):
            described, note = [stripped[4:].strip()], []
            continue
        if comment is not None:
            (described if described else note).append(comment)
            continue
        match = KEY.match(line)
        if not match:
            if stripped:  # a continued flow value: whatever was open documented nothing
                described, schema = [], []
            note = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        keys.append(Key(tuple(k for _, k in stack), lineno, " ".join(described), " ".join(note), schema))
        described, note, schema = [], [], []
    return Comments(keys, definitions)
