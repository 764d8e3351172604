"""The chart README's parameter table is generated from values.yaml, and every key is documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "llama-factory"


def test_readme_parameter_table_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "chart-docs.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


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
