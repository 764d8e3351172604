"""Where things live on the shared storage, and the same paths seen through a local mount.

Pods mount the storage at /storage; a person (or a test) may mount the same export elsewhere and pass it as
`--storage-root`. Every mapping between the two goes through `local`, so there is one rule for it.

A path in a spec has one spelling here: `normalise` folds `//`, `/./` and a trailing `/`, and `..` is refused
outright (`climbs`), so two spellings of one folder always compare equal in the rules that keep a merge from
publishing over a model or a dataset.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

# the layout itself is the contract's (shared with the chart and the pods); this module holds the path rules
# over it and re-exports it for the rules and facts
from .contract import LLAMABOARD_DIR as LLAMABOARD_DIR
from .contract import MERGED_DIR as MERGED_DIR
from .contract import MODELS_DIR as MODELS_DIR
from .contract import OUTPUT_DIR as OUTPUT_DIR
from .contract import SERVING_DIR as SERVING_DIR
from .contract import STORAGE_ROOT as STORAGE_ROOT
from .contract import TOKENIZED_DIR as TOKENIZED_DIR


def climbs(path: str) -> bool:
    """Whether the path has a `..` segment (refused: it can leave any folder it starts in)."""
    return ".." in path.split("/")


def normalise(path: str) -> str:
    """One spelling of an absolute path: /storage//models/./x/ -> /storage/models/x. (`..` is refused before
    this is used, so folding it here cannot hide where a path leads.)"""
    return posixpath.normpath("/" + path.lstrip("/"))


def within(path: str, folder: str) -> bool:
    """The path is the folder or inside it (both normalised)."""
    path, folder = normalise(path), normalise(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def on_storage(path: str) -> bool:
    """An absolute path strictly inside the storage mount, without `..` tricks."""
    return (
        path.startswith("/")
        and not climbs(path)
        and within(path, STORAGE_ROOT)
        and normalise(path) != STORAGE_ROOT
    )


def local(storage_root: Path, path: str) -> Path:
    """/storage/a/b as seen through the storage mounted at storage_root: storage_root/a/b."""
    if not path.startswith("/") or climbs(path) or not within(path, STORAGE_ROOT):
        raise ValueError(f"{path} is not under {STORAGE_ROOT}")
    relative = normalise(path)[len(STORAGE_ROOT) + 1 :]
    return storage_root / relative if relative else storage_root


def in_cluster_host(host: str) -> bool:
    """A host name that resolves only inside the cluster: a bare Service name, or one under .svc /
    .cluster.local (cluster DNS)."""
    host = host.rstrip(".").lower()
    return bool(host) and ("." not in host or host.endswith((".svc", ".cluster.local")))
