"""The chart README is helm-docs' output for README.md.gotmpl and values.yaml (`make chart-docs`), its table
says what values.schema.json says, and every key is documented."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from generator.project import built_tool

from .test_schema_generated import HACK, _generator

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "llama-factory"
# as the Makefile's HELM_DOCS_ARGS, less the chart folder, which differs here
HELM_DOCS_ARGS = ("--sort-values-order", "file", "--log-level", "warning")
CELL = re.compile(r"(?<!\\)\|")


def helm_docs(chart: Path) -> str:
    """What `make chart-docs` would write into `chart`'s README.md."""
    binary = built_tool("helm-docs", "HELM_DOCS_VERSION")
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run `make tools`")
    result = subprocess.run(
        [str(binary), "--chart-search-root", str(chart), *HELM_DOCS_ARGS, "--dry-run"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    # helm-docs reports a broken template or values file as a warning and still exits 0
    assert result.returncode == 0 and not result.stderr, result.stderr
    return result.stdout


def documented_keys(values_text: str) -> list[str]:
    """The keys with a `# --` comment, as the schema generator reads them."""
    sys.path.insert(0, str(HACK))
    try:
        from chart_values import read
    finally:
        sys.path.remove(str(HACK))
    return [key.dotted for key in read(values_text).keys if key.description]


def table(readme: str) -> dict[str, list[str]]:
    """Key: [type, default, description] of every row of the parameter table, `\\|` unescaped."""
    rows = {}
    for line in readme.splitlines():
        if line.startswith("| `"):
            key, *cells = (c.strip().replace("\\|", "|") for c in CELL.split(line)[1:-1])
            rows[key.strip("`")] = cells
    return rows


def disagreements(readme: str, values_text: str) -> list[str]:
    """Where the README's table and the schema generated from the same values.yaml say different things."""
    generator = _generator()
    schema = json.loads(generator.generate(values_text))
    rows = table(readme)
    wanted = documented_keys(values_text)
    found = [f"rows {list(rows)} are not the `# --` keys {wanted}"] if list(rows) != wanted else []
    for key, (kind, default, description) in rows.items():
        prop: dict[str, Any] = schema
        for part in key.split("."):
            prop = prop["properties"][part]
        allowed = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
        if generator.README_TYPES.get(kind) not in allowed:
            found.append(f"{key}: type {kind}, the schema allows {allowed}")
        if json.loads(default.strip("`")) != prop["default"]:
            found.append(f"{key}: default {default}, the schema's {prop['default']!r}")
        if description != prop["description"]:
            found.append(f"{key}: description {description!r}, the schema's {prop['description']!r}")
    return found


def test_readme_is_helm_docs_output() -> None:
    committed = (CHART / "README.md").read_text(encoding="utf-8")
    assert helm_docs(CHART) == committed, "charts/llama-factory/README.md is stale: run `make chart-docs`"


def test_readme_table_says_what_the_schema_says() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    assert disagreements(readme, (CHART / "values.yaml").read_text(encoding="utf-8")) == []


def test_comments_helm_docs_misreads_are_caught(tmp_path: Path) -> None:
    """values.yaml's header rules, each broken once: helm-docs' table then disagrees with the schema."""
    chart = tmp_path / "llama-factory"
    chart.mkdir()
    for name in ("Chart.yaml", "README.md.gotmpl"):
        shutil.copy(CHART / name, chart / name)
    values = (
        "# -- Port.\n"
        '# @schema {"minimum": 1}\n'  # below the `# --` line: helm-docs reads it as description
        "port: 80\n"
        '# @schema {"type": ["integer", "null"]}\n'
        "# -- Seconds (null: none).\n"  # no `(int)`: helm-docs calls a null default a string
        "deadline: null\n"
        # ` --` on the first line: helm-docs reads the text before it as a key name, and drops the comment
        "# -- The adapter, served with --enable-lora.\n"
        "lora:\n"
        "  # -- Its name.\n"
        "  name: a\n"
    )
    (chart / "values.yaml").write_text(values, encoding="utf-8")
    found = disagreements(helm_docs(chart), values)
    assert found == [
        "rows ['port', 'deadline', 'lora.name'] are not the `# --` keys ['port', 'deadline', 'lora', 'lora.name']",
        "port: description 'Port. @schema {\"minimum\": 1}', the schema's 'Port.'",
        "deadline: type string, the schema allows ['integer', 'null']",
    ]


def _leaves(node: object, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")]


def test_every_value_is_documented() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for leaf in _leaves(values):
        parts = leaf.split(".")
        documented = any(f"| `{'.'.join(parts[:i])}` |" in readme for i in range(len(parts), 0, -1))
        assert documented, f"{leaf} has no `# --` comment in values.yaml"
