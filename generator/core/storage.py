"""Where things live on the shared storage, and the same paths seen through a local mount.

Pods mount the storage at /storage; a person (or a test) may mount the same export elsewhere and pass it as
`--storage-root`. Every mapping between the two goes through `local`, so there is one rule for it.
"""

from __future__ import annotations

from pathlib import Path

STORAGE_ROOT = "/storage"


def on_storage(path: str) -> bool:
    """A path strictly inside the storage mount, without `..` tricks."""
    return (
        path.startswith(STORAGE_ROOT + "/")
        and ".." not in path.split("/")
        and path.rstrip("/") != STORAGE_ROOT
    )


def local(storage_root: Path, path: str) -> Path:
    """/storage/a/b as seen through the storage mounted at storage_root: storage_root/a/b."""
    if path == STORAGE_ROOT:
        return storage_root
    if not path.startswith(STORAGE_ROOT + "/"):
        raise ValueError(f"{path} is not under {STORAGE_ROOT}")
    return storage_root / path[len(STORAGE_ROOT) + 1 :]


def in_cluster_host(host: str) -> bool:
    """A host name that resolves only inside the cluster: a bare Service name, or one under .svc /
    .cluster.local (cluster DNS)."""
    host = host.rstrip(".").lower()
    return bool(host) and ("." not in host or host.endswith((".svc", ".cluster.local")))
