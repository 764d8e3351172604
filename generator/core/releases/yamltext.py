"""The values files' YAML, written by hand: block mappings with comments, every value inline as JSON-style flow
YAML. The text and the data come from one structure (a Block), so nothing is parsed back; a unit test reads
every rendered file with PyYAML and compares."""

from __future__ import annotations

import json
import math
import re
from typing import Any


class Bare(str):
    """A word written without quotes, as LLaMA-Factory's examples write it (`stage: sft`, `report_to: none`);
    only words that YAML reads back as the same string."""

    def __new__(cls, word: str) -> Bare:
        if not _plain_word(word):
            raise ValueError(f"{word!r} would not read back as the same string without quotes")
        return super().__new__(cls, word)


class Comment:
    """A comment line inside a block, above what follows it; `###` marks a heading, as in LLaMA-Factory's
    example configs."""

    __slots__ = ("text", "mark")

    def __init__(self, text: str, mark: str = "#") -> None:
        if "\n" in text or "\r" in text:
            raise ValueError("a comment is one line")
        self.text, self.mark = text, mark


class Block:
    """A YAML block mapping, in order: keys with their values (a nested Block, or any value written inline)
    and comment lines. `Block.data()` is what YAML reads the text back as."""

    __slots__ = ("entries",)

    def __init__(self, *entries: tuple[str, Any] | Comment) -> None:
        self.entries: list[tuple[str, Any] | Comment] = list(entries)

    def add(self, key: str, value: Any) -> Block:
        self.entries.append((key, value))
        return self

    def comment(self, text: str) -> Block:
        self.entries.append(Comment(text))
        return self

    def heading(self, text: str) -> Block:
        self.entries.append(Comment(text, "###"))
        return self

    def extend(self, other: Block) -> Block:
        self.entries.extend(other.entries)
        return self

    def data(self) -> dict[str, Any]:
        return {
            entry[0]: entry[1].data() if isinstance(entry[1], Block) else _plain(entry[1])
            for entry in self.entries
            if not isinstance(entry, Comment)
        }

    def text(self, indent: int = 0) -> str:
        pad = " " * indent
        lines = []
        for entry in self.entries:
            if isinstance(entry, Comment):
                lines.append(f"{pad}{entry.mark} {entry.text}\n")
                continue
            key, value = entry
            if isinstance(value, Block):
                lines.append(f"{pad}{yaml_key(key)}:\n{value.text(indent + 2)}")
            else:
                lines.append(f"{pad}{yaml_key(key)}: {yaml_scalar(value)}\n")
        return "".join(lines)


def _plain(value: Any) -> Any:
    """The value as YAML reads it back: a Bare word is a str; tuples are lists."""
    if isinstance(value, Bare):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# words YAML 1.1 (PyYAML, and Helm's reader) takes for booleans or null when written bare
_NOT_STRINGS = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null"})
_PLAIN = re.compile(r"/?[A-Za-z_][A-Za-z0-9_]*(?:[./-][A-Za-z0-9_]+)*\Z")


def _plain_word(word: str) -> bool:
    return bool(_PLAIN.match(word)) and word.lower() not in _NOT_STRINGS


def yaml_key(key: str) -> str:
    """A mapping key: bare when YAML reads it back as the same string, JSON-quoted otherwise."""
    return key if _plain_word(key) else json.dumps(key, ensure_ascii=False)


def yaml_scalar(value: Any) -> str:
    """A value as inline YAML that PyYAML and Helm read back identically (JSON flow style, floats with a dot)."""
    if isinstance(value, Bare):
        return str(value)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"cannot render {value!r}")
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {yaml_scalar(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_scalar(v) for v in value) + "]"
    raise TypeError(f"cannot render {type(value).__name__}")
