"""The pods' command lines as the chart renders them (`helm template`), run on this machine: a Job container's
command and literal environment, with the pod's paths (/storage, /scripts, /config) moved to local folders.
The harness takes what a pod runs from the chart instead of retyping it."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from generator.core.storage import STORAGE_ROOT, local
from generator.project import CHART_DIR, CHART_FILES, helm_binary

# what the chart sets for the pod's own home on its read-only root filesystem, not for this machine
POD_ONLY_ENV = frozenset({"HOME", "USER", "HF_HOME"})
POD_SCRIPTS = "/scripts/"


@dataclass(frozen=True)
class PodCommand:
    """A Job's container as `helm template` renders it: its command line and its literal environment."""

    argv: list[str]
    env: dict[str, str]


def rendered_command(manifests: list[dict[str, Any]], container: str) -> PodCommand:
    """The command (command + args) and the literal env values of the one Job container of that name."""
    found = [
        c
        for doc in manifests
        if doc.get("kind") == "Job"
        for c in doc["spec"]["template"]["spec"]["containers"]
        if c.get("name") == container
    ]
    if len(found) != 1:
        raise ValueError(f"{len(found)} Job containers named {container} in the rendered chart, expected 1")
    env = {
        e["name"]: str(e["value"])
        for e in found[0].get("env") or []
        if "value" in e and e["name"] not in POD_ONLY_ENV
    }
    return PodCommand([*(found[0].get("command") or []), *(found[0].get("args") or [])], env)


def localised_argument(value: str, root: Path, files: dict[str, Path]) -> str:
    """One argument or env value with the pod's paths moved to this machine: /storage under root, /scripts
    to the chart's files/, a /config file to the local copy named in files (`--flag=PATH` too)."""
    flag, sep, path = value.partition("=") if value.startswith("--") else ("", "", value)
    if path in files:
        path = str(files[path])
    elif path.startswith("/config/"):
        raise ValueError(f"{path}: no local copy of this pod config file")
    elif path == STORAGE_ROOT or path.startswith(STORAGE_ROOT + "/"):
        path = str(local(root, path))
    elif path.startswith(POD_SCRIPTS):
        path = str(CHART_FILES / path[len(POD_SCRIPTS) :])
    return flag + sep + path


def localised(pod: PodCommand, root: Path, files: dict[str, Path] | None = None) -> PodCommand:
    files = files or {}
    return PodCommand(
        [localised_argument(a, root, files) for a in pod.argv],
        {k: localised_argument(v, root, files) for k, v in pod.env.items()},
    )


def helm_template(values_file: Path, release: str, namespace: str) -> list[dict[str, Any]]:
    """The chart rendered with one release's values file, as `helm upgrade --install` would apply it."""
    command = [
        helm_binary(),
        "template",
        release,
        str(CHART_DIR),
        "-f",
        str(values_file),
        "--namespace",
        namespace,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"helm template {release} failed:\n{result.stderr}")
    return [d for d in yaml.safe_load_all(result.stdout) if d]
