"""What leaves the repository: the packaged chart (`make chart-package`, a .tgz for an OCI registry) with its
Artifact Hub metadata and changelog, and the Python package built as a wheel, which carries the chart and the
spec schema so `lfk` works without a checkout (as pre-commit installs it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml

from .conftest import CHART, Helm

ROOT = CHART.parents[1]
EXAMPLE = ROOT / "values" / "llama31-qa"
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
VERSION = CHART_META["version"]


def package(helm: Helm, destination: Path) -> Path:
    result = helm.run("package", str(CHART), "--destination", str(destination))
    archive = destination / f"llama-factory-{VERSION}.tgz"
    assert archive.is_file(), result.stdout
    return archive


def test_packaged_chart_lints_and_renders_like_the_folder(helm: Helm, tmp_path: Path) -> None:
    archive = package(helm, tmp_path)
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {
        "llama-factory/Chart.yaml",
        "llama-factory/values.schema.json",
        "llama-factory/CHANGELOG.md",
    } <= names
    assert "llama-factory/templates/tests/vllm-test-chat.yaml" in names  # the helm test hook travels
    assert not [n for n in names if n.startswith("llama-factory/tests/")], (
        "helm-unittest suites were packaged"
    )
    assert not [n for n in names if "__pycache__" in n]

    assert "0 chart(s) failed" in helm.run("lint", "--strict", str(archive)).stdout
    for component in ("train", "merge", "vllm", "webui"):
        values = EXAMPLE / f"{component}.yaml"
        args = ("--namespace", "llm-training", "--values", str(values))
        from_archive = helm.run("template", f"llama31-qa-{component}", str(archive), *args).stdout
        from_folder = helm.run("template", f"llama31-qa-{component}", str(CHART), *args).stdout
        assert from_archive == from_folder, component
        kinds = {d["kind"] for d in yaml.safe_load_all(from_archive) if d}
        assert kinds & {"Job", "Deployment"}, (component, kinds)


def test_make_chart_package_writes_the_versioned_archive_and_says_how_to_push_it() -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "chart-package"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (ROOT / "dist" / f"llama-factory-{VERSION}.tgz").is_file()
    assert "0 chart(s) failed" in result.stdout
    assert f"helm push dist/llama-factory-{VERSION}.tgz oci://" in result.stdout


def test_artifacthub_annotations_follow_values_and_project() -> None:
    annotations = CHART_META["annotations"]
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    images = {i["image"] for i in yaml.safe_load(annotations["artifacthub.io/images"])}
    vllm = values["vllm"]["image"]
    assert images == {
        f"docker.io/{values['image']['repository']}:{CHART_META['appVersion']}",
        f"docker.io/{vllm['repository']}:{vllm['tag']}",
    }
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert annotations["artifacthub.io/license"] == pyproject["project"]["license"]
    links = yaml.safe_load(annotations["artifacthub.io/links"])
    assert links and all(
        set(link) == {"name", "url"} and link["url"].startswith("https://") for link in links
    )
    changes = yaml.safe_load(annotations.get("artifacthub.io/changes") or "[]")
    kinds = {"added", "changed", "deprecated", "removed", "fixed", "security"}
    assert all(c["kind"] in kinds and c["description"] for c in changes)


def test_changelog_has_the_charts_version_and_appversion_follows_the_pinned_llamafactory() -> None:
    changelog = (CHART / "CHANGELOG.md").read_text(encoding="utf-8")
    versions = re.findall(r"^## \[([^\]]+)\]", changelog, re.MULTILINE)
    assert versions[0] == "Unreleased"
    assert versions[1] == VERSION, "Chart.yaml's version needs its CHANGELOG.md entry"
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pinned = [
        p for p in pyproject["project"]["optional-dependencies"]["llamafactory"] if "llamafactory==" in p
    ]
    assert pinned == [f"llamafactory=={CHART_META['appVersion']}"]


def working_tree(destination: Path) -> Path:
    """A copy of the working tree: tracked files and the untracked ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a file deleted but not yet staged is still listed
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode)
    return destination


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{' '.join(map(str, args))}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_wheel_works_outside_a_checkout(helm3: Helm, tmp_path: Path) -> None:
    """pip install of a real wheel into a fresh venv (dependencies from PyPI): validate, render --check and the
    bundled chart, with no checkout anywhere near."""
    source = working_tree(tmp_path / "source")
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", wheels, cwd=source)
    (wheel,) = wheels.glob("llamafactory_k8s-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel, cwd=tmp_path)

    work = tmp_path / "elsewhere"
    (work / "values").mkdir(parents=True)
    example = work / "values" / EXAMPLE.name
    example.mkdir()
    for path in EXAMPLE.glob("*.yaml"):
        (example / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "LFK_HELM")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    lfk = venv / "bin" / "lfk"
    spec = f"values/{EXAMPLE.name}/experiment.yaml"

    where = run(
        venv / "bin" / "python", "-c", "import generator.project as p; print(p.DATA_ROOT)", cwd=work, env=env
    )
    bundle = Path(where.stdout.strip())
    assert bundle.is_relative_to(venv) and bundle.name == "_bundle", bundle

    assert "valid (run" in run(lfk, "validate", spec, cwd=work, env=env).stdout
    assert "values are up to date" in run(lfk, "render", "--check", spec, cwd=work, env=env).stdout

    # the whole chart travels: the same files as the checkout's (less helm-unittest's), lint-clean
    chart = bundle / "charts" / "llama-factory"
    # (pip byte-compiles the chart's Python scripts on install: their __pycache__ is not part of the wheel)
    shipped = {p.relative_to(chart) for p in chart.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    expected = {
        p.relative_to(CHART)
        for p in CHART.rglob("*")
        if p.is_file()
        and p.relative_to(CHART).parts[0] != "tests"
        and "__pycache__" not in p.parts
        and p.suffix not in (".pyc", ".tmp")
    }
    assert shipped == expected
    assert "0 chart(s) failed" in helm3.run("lint", "--strict", str(chart)).stdout

    # a stale values file is found from the installed package too
    train = example / "train.yaml"
    train.write_text(train.read_text(encoding="utf-8").replace('runId: "', 'runId: "x'), encoding="utf-8")
    stale = subprocess.run(
        [lfk, "render", "--check", spec], cwd=work, capture_output=True, text=True, env=env
    )
    assert stale.returncode == 1 and "values are stale" in stale.stderr, stale.stdout + stale.stderr
