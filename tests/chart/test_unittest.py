"""The helm-unittest suites under charts/llama-factory/tests, run with the real helm-unittest binary."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

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
    assert passed, result.stdout
    # every case of every suite ran and passed: none skipped, none lost to a suite that failed to load
    assert int(passed.group(1)) == int(passed.group(2)) == count_cases(), result.stdout


def count_cases() -> int:
    return sum(len(yaml.safe_load(p.read_text())["tests"]) for p in (CHART / "tests").glob("*_test.yaml"))


def test_every_template_has_a_suite() -> None:
    templates = {p.stem for p in (CHART / "templates").rglob("*.yaml")}
    suites = {p.name.removesuffix("_test.yaml") for p in (CHART / "tests").glob("*_test.yaml")}
    assert templates <= suites, f"templates without a suite: {sorted(templates - suites)}"
    assert Path(CHART / "tests" / "__snapshot__" / "defaults_test.yaml.snap").is_file()
