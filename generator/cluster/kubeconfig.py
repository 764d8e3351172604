"""The local cluster in the user's own kubeconfig, as kind does it: `lfk cluster up` adds a cluster, a user
and a context named `lfk-local` to $KUBECONFIG (its first file) or ~/.kube/config and selects the context;
`lfk cluster down` removes them and selects the context that was current before. kubectl, helm and lfk then
reach the cluster without anything exported."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ..core.spec import load_yaml_file
from ..core.write import atomic_write
from ..errors import ClusterError, SpecError
from .state import State

NAME = "lfk-local"
SECTIONS = ("clusters", "users", "contexts")


def user_kubeconfig() -> Path:
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return Path(listed[0]).expanduser() if listed else Path.home() / ".kube" / "config"


def _load(path: Path) -> dict[str, Any]:
    """The user's kubeconfig without our entries; ClusterError naming the file when it cannot be used (it is
    the user's file: it is never overwritten with what could be read of it)."""
    if not path.exists():
        data: Any = {}
    else:
        try:
            data = load_yaml_file(path, what="the kubeconfig") or {}
        except SpecError as exc:
            raise ClusterError(f"kubeconfig {path}: {exc.problems[0].message}") from None
    if not isinstance(data, dict):
        raise ClusterError(
            f"kubeconfig {path}: not a kubeconfig (a YAML mapping with clusters, users, contexts)"
        )
    data.setdefault("apiVersion", "v1")
    data.setdefault("kind", "Config")
    for section in SECTIONS:
        entries = data.get(section) or []
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ClusterError(f"kubeconfig {path}: {section} must be a list of named entries")
        data[section] = [e for e in entries if e.get("name") != NAME]
    return data


def _save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, yaml.safe_dump(data, sort_keys=False))
    path.chmod(0o600)


def export(state: State, path: Path | None = None) -> Path:
    """Add the cluster's entries to the user's kubeconfig and select its context; the file written."""
    path = path or user_kubeconfig()
    if path.resolve() == state.kubeconfig.resolve():
        return path  # $KUBECONFIG is the cluster's own file already
    ours = yaml.safe_load(state.kubeconfig.read_text(encoding="utf-8"))
    created = not path.exists()
    data = _load(path)
    previous = data.get("current-context")
    for section in SECTIONS:
        data[section] += [e for e in ours[section] if e.get("name") == NAME]
    data["current-context"] = NAME
    _save(path, data)
    state.extra["kubeconfig"] = {
        "path": str(path),
        "previous": previous if previous != NAME else None,
        "created": created,
    }
    state.save()
    return path


def withdraw(state: State) -> Path | None:
    """Remove the cluster's entries from the kubeconfig `export` wrote, restoring the previous context."""
    record = state.extra.get("kubeconfig")
    if not record:
        return None
    path = Path(record["path"])
    if not path.is_file():
        return None
    data = _load(path)
    if data.get("current-context") == NAME:
        if record.get("previous"):
            data["current-context"] = record["previous"]
        else:
            data.pop("current-context", None)
    if record.get("created") and not any(data[s] for s in SECTIONS):
        path.unlink()  # export made the file: nothing of the user's is in it
        return path
    _save(path, data)
    return path
