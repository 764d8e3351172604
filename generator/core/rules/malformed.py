"""Values no schema keyword can refuse (control characters, keys that are not strings, NaN, YAML's dates):
refused before anything is derived from the spec."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from ..problems import Problem, json_path

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators (YAML 1.1 breaks lines at those)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# a pass-through value is written with the YAML dumper's escapes: it may hold lines and tabs (a system prompt)
_CONTROL_IN_ARGUMENT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def malformed_values(value: Any, parts: list[str | int]) -> Iterator[Problem]:
    """What the schema's patterns and bounds let through, anywhere in the spec: a control character (Python's
    `$` matches before a final newline, so `name: "demo\\n"` passes `^[a-z]+$`), a key that is not a string, a
    number that is not finite (`.nan` passes every bound: comparisons with NaN are false), and values JSON
    has no type for (YAML reads 2024-01-01 as a date)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                yield Problem(json_path(parts), f"the key {key!r} is not a string", "quote it")
                continue
            if found := _CONTROL.search(key):  # located at the mapping: the key itself cannot be printed
                yield Problem(
                    json_path(parts),
                    f"the key {key!r} holds the control character U+{ord(found.group()):04X}",
                    "remove it",
                )
                continue
            yield from malformed_values(item, [*parts, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from malformed_values(item, [*parts, index])
    elif isinstance(value, str):
        control = _CONTROL_IN_ARGUMENT if parts[:1] == ["llamafactoryArgs"] else _CONTROL
        if found := control.search(value):
            yield Problem(
                json_path(parts), f"holds the control character U+{ord(found.group()):04X}", "remove it"
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            yield Problem(json_path(parts), f"{value} is not a finite number", "write a number")
    elif not isinstance(value, bool | int) and value is not None:
        yield Problem(
            json_path(parts),
            f"YAML reads {value!r} as a {type(value).__name__}, which a spec does not hold",
            "quote it to make it a string",
        )
