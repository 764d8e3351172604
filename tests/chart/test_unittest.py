"""The helm-unittest suites under charts/llama-factory/tests, run with the real helm-unittest binary."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from generator.project import built_tool

from .conftest import CHART


def test_helm_unittest_suites_pass(update_golden: bool) -> None:
    binary = built_tool("helm-unittest", "HELM_UNITTEST_VERSION")
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run `make tools`")
    args = [str(binary), "--color=false", "-f", "tests/*_test.yaml", str(CHART)]
    if update_golden:
        args.insert(1, "-u")
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.search(r"Tests:\s+(\d+) passed, (\d+) total", result.stdout)
    assert passed and passed.group(1) == passed.group(2)
    assert int(passed.group(1)) >= 70


def test_every_template_has_a_suite() -> None:
    templates = {p.stem for p in (CHART / "templates").rglob("*.yaml")}
    suites = {p.name.removesuffix("_test.yaml") for p in (CHART / "tests").glob("*_test.yaml")}
    assert templates <= suites, f"templates without a suite: {sorted(templates - suites)}"
    assert Path(CHART / "tests" / "__snapshot__" / "defaults_test.yaml.snap").is_file()
