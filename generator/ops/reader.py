"""Reading a file of the storage without mounting it here: a short-lived pod (no GPU, read-only, the
experiment's own image) mounts the claim, prints the end of the file and is deleted."""

from __future__ import annotations

import time
from typing import Any

from ..core.storage import STORAGE_ROOT
from ..errors import KubeError
from . import kube
from .target import Target


def claim_of(target: Target) -> str:
    return str(
        target.spec.data["storage"].get("existingClaim") or f"{target.facts.releases['train']}-storage"
    )


def reader_pod(target: Target, path: str, name: str) -> dict[str, Any]:
    """A pod that prints the end of one file of the storage and exits."""
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
                    "command": ["tail", "-n", "2000", path],
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


def read_through_pod(target: Target, path: str, timeout: float = 120) -> str | None:
    """The end of a file on the storage, read by a reader pod that is deleted afterwards; None if unreadable."""
    name = f"{target.facts.releases['train']}-read-{int(time.time() * 1000) % 100000}"[:63]
    pods = f"/api/v1/namespaces/{target.namespace}/pods"
    kube.request(target.api, "POST", pods, json=reader_pod(target, path, name))
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            phase = kube.request(target.api, "GET", f"{pods}/{name}").get("status", {}).get("phase")
            if phase == "Succeeded":
                return kube.pod_log_tail(target.api, target.namespace, name, lines=2000)
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
    return read_through_pod(target, storage_path) if from_cluster else None
