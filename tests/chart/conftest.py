"""The chart tier runs the real helm binaries (Helm 3 and Helm 4) built by `make tools`."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from generator.project import built_tool

CHART = Path(__file__).resolve().parents[2] / "charts" / "llama-factory"


@dataclass(frozen=True)
class Helm:
    major: int
    binary: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.binary), *args], capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def template(
        self, *args: str, release: str = "demo-train", namespace: str = "llm-training"
    ) -> list[dict]:
        out = self.run("template", release, str(CHART), "--namespace", namespace, *args).stdout
        return [d for d in yaml.safe_load_all(out) if d]


def _helm(major: int) -> Helm:
    binary = built_tool("helm", f"HELM{major}_VERSION")
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run `make tools`")
    return Helm(major, binary)


@pytest.fixture(scope="session", params=[3, 4], ids=["helm3", "helm4"])
def helm(request: pytest.FixtureRequest) -> Helm:
    return _helm(request.param)


@pytest.fixture(scope="session")
def helm3() -> Helm:
    return _helm(3)
