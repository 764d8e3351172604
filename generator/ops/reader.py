"""Reading the storage without mounting it here: a short-lived pod (no GPU, read-only, the experiment's own
image) mounts the claim, prints what was asked (the end of a file, a folder listing) and is deleted."""

from __future__ import annotations

import time
from typing import Any

from ..core import watch
from ..core.storage import STORAGE_ROOT
from ..errors import KubeError
from . import kube
from .target import Target

LINES = 2000  # the end of a file a reader pod prints


def claim_of(target: Target) -> str:
    return str(
        target.spec.data["storage"].get("existingClaim") or f"{target.facts.releases['train']}-storage"
    )


def reader_pod(target: Target, command: list[str], name: str) -> dict[str, Any]:
    """A pod that runs a read-only command over the storage (printing what it finds) and exits."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": target.namespace,
            "labels": {kube.INSTANCE: target.facts.releases["train"], kube.COMPONENT: "reader"},
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "read",
                    "image": target.spec.data["images"]["llamafactory"],
                    "command": command,
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "64Mi"},
                        "limits": {"cpu": "200m", "memory": "128Mi"},
                    },
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "storage", "mountPath": STORAGE_ROOT, "readOnly": True}],
                }
            ],  # fmt: skip
            "volumes": [
                {
                    "name": "storage",
                    "persistentVolumeClaim": {"claimName": claim_of(target), "readOnly": True},
                }
            ],
            # wherever the experiment's pods may run (the storage may be reachable only there)
            "tolerations": target.spec.data["resources"]["tolerations"],
        },
    }


def read_through_pod(target: Target, command: list[str], timeout: float = 120) -> str | None:
    """What `command` printed in a reader pod that is deleted afterwards; None if it failed."""
    name = f"{target.facts.releases['train']}-read-{int(time.time() * 1000) % 100000}"[:63]
    pods = f"/api/v1/namespaces/{target.namespace}/pods"
    kube.request(target.api, "POST", pods, json=reader_pod(target, command, name))
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            phase = kube.request(target.api, "GET", f"{pods}/{name}").get("status", {}).get("phase")
            if phase == "Succeeded":
                return kube.pod_log_tail(target.api, target.namespace, name, lines=LINES)
            if phase == "Failed":
                return None
            time.sleep(1)
        return None
    finally:
        try:
            kube.request(target.api, "DELETE", f"{pods}/{name}")
        except KubeError as exc:
            if exc.status != 404:
                raise


def read_file(target: Target, storage_path: str, from_cluster: bool) -> str | None:
    """A file of the storage: through the local mount when there is one, else (from_cluster) a reader pod."""
    path = target.local_path(storage_path)
    if path is not None:
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None
    return read_through_pod(target, ["tail", "-n", str(LINES), storage_path]) if from_cluster else None


# `checkpoint-STEP MTIME BYTES` per checkpoint folder (core.watch.parse_checkpoints reads it); du -sk is in
# both coreutils and busybox
LIST_CHECKPOINTS = (
    'cd "$1" 2>/dev/null || exit 0; for d in checkpoint-*; do [ -d "$d" ] || continue; '
    'echo "$d $(stat -c %Y "$d") $(( $(du -sk "$d" | cut -f1) * 1024 ))"; done'
)


def list_checkpoints(target: Target, storage_dir: str, from_cluster: bool) -> str | None:
    """The checkpoint folders of an output folder, one line each: through the local mount, else a reader pod."""
    folder = target.local_path(storage_dir)
    if folder is not None:
        if not folder.is_dir():
            return ""
        return "\n".join(
            watch.listing_line(
                d.name, d.stat().st_mtime, sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
            )
            for d in folder.glob("checkpoint-*")
            if d.is_dir()
        )
    return (
        read_through_pod(target, ["sh", "-c", LIST_CHECKPOINTS, "list", storage_dir])
        if from_cluster
        else None
    )
