#!/usr/bin/env python3
"""Regenerates the parameter table of charts/llama-factory/README.md from the `# --` comments of values.yaml.

    hack/chart-docs.py           rewrite the table between the markers
    hack/chart-docs.py --check   exit 1 when the README is stale (the chart tier runs this)

A `# -- text` comment (continued by following `# text` lines) documents the key right below it; the key's
path comes from the indentation, its default from the YAML value. The comments are read by chart_values.py,
which chart-schema.py shares; `# @schema` annotation lines are not part of the text.
"""

from __future__ import annotations

import json
import sys

import yaml
from chart_values import CHART, documented_keys

BEGIN, END = "<!-- parameters:begin -->", "<!-- parameters:end -->"


def lookup(values: dict, dotted: str) -> object:
    node: object = values
    for part in dotted.split("."):
        assert isinstance(node, dict), dotted
        node = node[part]
    return node


def type_name(value: object) -> str:
    return {dict: "object", list: "list", bool: "bool", int: "int", float: "float", str: "string"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def table(values_text: str) -> str:
    values = yaml.safe_load(values_text)
    rows = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for key, description in documented_keys(values_text):
        value = lookup(values, key)
        default = json.dumps(value, separators=(", ", ": "))
        cell = description.replace("|", "\\|")
        rows.append(f"| `{key}` | {type_name(value)} | `{default}` | {cell} |")
    return "\n".join(rows)


def main() -> int:
    readme = CHART / "README.md"
    text = readme.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    fresh = f"{head}{BEGIN}\n{table((CHART / 'values.yaml').read_text(encoding='utf-8'))}\n{END}{tail}"
    if "--check" in sys.argv:
        if fresh != text:
            print(f"{readme} is stale: run `make chart-docs`", file=sys.stderr)
            return 1
        return 0
    if fresh != text:
        readme.write_text(fresh, encoding="utf-8")
        print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
