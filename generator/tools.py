"""Where the external programs are: the helm binary (and, for the local cluster, the kube binaries)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TOOLS_DIR = REPO_ROOT / ".tools"


def pinned_versions() -> dict[str, str]:
    """hack/versions.env as a dict: the one place tool versions are pinned."""
    versions = {}
    for line in (REPO_ROOT / "hack" / "versions.env").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            versions[key] = value
    return versions


def built_tool(name: str, version_key: str, binary: str | None = None) -> Path:
    return TOOLS_DIR / f"{name}-{pinned_versions()[version_key]}" / (binary or name)


def helm_binary() -> str:
    """$LFK_HELM, else the project's pinned Helm 3 build, else `helm` on PATH."""
    if env := os.environ.get("LFK_HELM"):
        return env
    built = built_tool("helm", "HELM3_VERSION")
    if built.is_file():
        return str(built)
    return shutil.which("helm") or "helm"
