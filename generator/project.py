"""Where the project's own files are: the chart, the spec schema, the pinned tool versions and the tools
built from them. Every room reads locations from here, so a moved folder is changed once.

They are found in the checkout the package runs from, else in the installed package (a wheel carries the
chart, the schema and the versions under generator/_bundle/), so `lfk` works from `pip install` too, as
pre-commit installs it."""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from types import ModuleType

from .errors import ToolMissing

PACKAGE_DIR = Path(__file__).resolve().parent
# in a checkout the package lies at the repository's root; installed, this is site-packages
REPO_ROOT = PACKAGE_DIR.parent
# what a built wheel carries besides the code, laid out as in the repository (setup.py copies it there): the
# chart, the spec schema and hack/versions.env. Not there in a checkout, whose own files are used instead.
BUNDLE_DIR = PACKAGE_DIR / "_bundle"


def _data_root() -> Path:
    """The checkout when the package runs from one (so an edited chart or schema counts at once), else the
    copies the installed wheel carries."""
    if (REPO_ROOT / "charts" / "llama-factory" / "Chart.yaml").is_file() and (
        REPO_ROOT / "schemas" / "experiment.schema.json"
    ).is_file():
        return REPO_ROOT
    return BUNDLE_DIR


DATA_ROOT = _data_root()
CHART_DIR = DATA_ROOT / "charts" / "llama-factory"
CHART_FILES = CHART_DIR / "files"
CHART_SCHEMA = CHART_DIR / "values.schema.json"
SPEC_SCHEMA = DATA_ROOT / "schemas" / "experiment.schema.json"
VERSIONS_FILE = DATA_ROOT / "hack" / "versions.env"
# tools built by hack/build-tools.sh: only in a checkout (installed, helm and kubectl come from PATH)
TOOLS_DIR = REPO_ROOT / ".tools"


@functools.cache
def pinned_versions() -> dict[str, str]:
    """hack/versions.env as a dict: the one place tool versions are pinned (Make and bash read it too)."""
    versions = {}
    for line in VERSIONS_FILE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            versions[key] = value
    return versions


def built_tool(name: str, version_key: str, binary: str | None = None) -> Path:
    """A binary that hack/build-tools.sh built: .tools/<name>-<version>/<binary>."""
    return TOOLS_DIR / f"{name}-{pinned_versions()[version_key]}" / (binary or name)


def helm_binary() -> str:
    """$LFK_HELM, else the project's pinned Helm 3 build, else `helm` on PATH."""
    if env := os.environ.get("LFK_HELM"):
        return env
    built = built_tool("helm", "HELM3_VERSION")
    if built.is_file():
        return str(built)
    import shutil  # imports compression modules: only where a tool is looked up on PATH

    return shutil.which("helm") or "helm"


def kubectl_binary() -> str:
    """$LFK_KUBECTL, else the project's kubectl build, else `kubectl` on PATH."""
    if env := os.environ.get("LFK_KUBECTL"):
        return env
    built = built_tool("kube", "KUBE_VERSION", "kubectl")
    if built.is_file():
        return str(built)
    import shutil

    found = shutil.which("kubectl")
    if found is None:
        raise ToolMissing("kubectl not found: `make cluster-tools` builds one (or set LFK_KUBECTL)")
    return found


@functools.cache
def chart_module(name: str) -> ModuleType:
    """One of the scripts the chart's pods run (charts/llama-factory/files/<name>.py), imported here, so
    `lfk` and the pods share one copy of what both need (readiness checks, the merge verification)."""
    spec = importlib.util.spec_from_file_location(f"chart_files_{name}", CHART_FILES / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ToolMissing(f"{CHART_FILES / name}.py is missing")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
