"""Storage for the real node's pods: this kernel has no NFS client, so a claim is a `local` PersistentVolume
on this machine's disk (under the cluster's state directory), pinned to the real node. Specs use it through
`storage.existingClaim`; every pod that mounts it is scheduled onto the real node by the volume's affinity."""

from __future__ import annotations

from pathlib import Path

from ..ops import kube
from .realnode import NODE_NAME
from .state import State

DEFAULT_CLAIM = "local-storage"
DEFAULT_NAMESPACE = "llm-local"
# the storage layout the specs expect; pods run as uid 1000, files prepared here are written as root
LAYOUT = ("models", "data", "output")


RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
}


def folder(state: State, namespace: str) -> Path:
    """Where a namespace's storage lives on this machine: what its pods see as /storage."""
    return state.directory / "storage" / namespace


def provision(
    state: State, namespace: str = DEFAULT_NAMESPACE, claim: str = DEFAULT_CLAIM, size: str = "100Gi"
) -> Path:
    """The namespace, a folder of this machine, a PersistentVolume on it and the claim bound to it."""
    root = folder(state, namespace)
    for sub in ("", *LAYOUT):
        (root / sub).mkdir(parents=True, exist_ok=True)
        (root / sub).chmod(0o777)
    api = state.api()
    volume = f"lfk-local-{namespace}-{claim}"[:63].rstrip("-")
    # every pod the chart makes meets Pod Security `restricted`: the local namespace enforces it, so the demo
    # and the node tier show it in real pods
    kube.create(api, "/api/v1/namespaces", {"metadata": {"name": namespace, "labels": RESTRICTED}})
    kube.create(api, "/api/v1/persistentvolumes", {
        "metadata": {"name": volume, "labels": {"llamafactory-k8s/local-storage": namespace}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "local": {"path": str(root)},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]}
            ]}]}},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    })  # fmt: skip
    kube.create(api, f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", {
        "metadata": {"name": claim},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": volume,
                 "resources": {"requests": {"storage": size}}},
    })  # fmt: skip
    return root
