"""The local cluster's nodes: simulated GPU nodes that kwok plays the kubelet of (Node objects with GPUs in
their capacity, which the real scheduler fits pods to), and listing every node for `lfk cluster status`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ClusterError, KubeError, LfkError
from ..ops import kube

FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
# the default pool: the products the examples in values/ ask for, 8 GPUs each (two H100 nodes for the
# multi-node example)
DEFAULT_PRODUCTS = ("NVIDIA-A100-SXM4-80GB", "NVIDIA-L4", "NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-80GB-HBM3")


@dataclass(frozen=True)
class NodeSpec:
    """A simulated GPU node."""

    name: str
    gpus: int = 8
    product: str = DEFAULT_PRODUCTS[0]
    cpu: str = "128"
    memory: str = "1Ti"
    gpu_resource: str = "nvidia.com/gpu"
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)

    def manifest(self) -> dict[str, Any]:
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110", self.gpu_resource: str(self.gpus)}
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
            GPU_PRODUCT_LABEL: self.product,
            "nvidia.com/gpu.count": str(self.gpus),
            **self.labels,
        }
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels, "annotations": {FAKE_NODE_ANNOTATION: "fake"}},
            "spec": {"taints": list(self.taints)},
            "status": {"capacity": capacity, "allocatable": capacity},
        }


def default_nodes(
    count: int = 4, gpus: int = 8, products: Iterable[str] = DEFAULT_PRODUCTS
) -> list[NodeSpec]:
    pool = list(products) or [DEFAULT_PRODUCTS[0]]
    return [NodeSpec(f"kwok-gpu-{i}", gpus=gpus, product=pool[i % len(pool)]) for i in range(count)]


def parse_taint(text: str) -> dict[str, str]:
    """`key=value:Effect` or `key:Effect` -> a taint."""
    key_value, _, effect = text.rpartition(":")
    if not key_value or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise LfkError(f"taint {text!r}: expected key[=value]:NoSchedule|PreferNoSchedule|NoExecute")
    key, _, value = key_value.partition("=")
    return {"key": key, "value": value, "effect": effect} if value else {"key": key, "effect": effect}


def add_nodes(api: Any, nodes: Iterable[NodeSpec]) -> None:
    for node in nodes:
        manifest = node.manifest()
        try:
            kube.request(api, "POST", "/api/v1/nodes", json=manifest)
        except KubeError as exc:
            if exc.status != 409:
                raise
        # status is a subresource: set capacity there too, so the scheduler sees the GPUs at once
        kube.request(
            api,
            "PATCH",
            f"/api/v1/nodes/{node.name}/status",
            json={"status": manifest["status"]},
            headers={"Content-Type": "application/merge-patch+json"},
        )


NOT_READY_TAINT = "node.kubernetes.io/not-ready"


def ready_names(api: Any) -> set[str]:
    return {n["name"] for n in listing(api) if n["ready"]}


def wait_ready(
    api: Any, names: Iterable[str], timeout: float = 60, log: Callable[[], str] = lambda: ""
) -> None:
    """Wait for the nodes' Ready condition and the not-ready taint lifted; on time-out say why each is not Ready and show `log()`, read then
    (not when the wait began, when the log may still be empty)."""
    wanted = set(names)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wanted <= ready_names(api):
            return
        time.sleep(0.5)
    found = {n["name"]: n for n in listing(api)}
    why = [
        f"  {name}: {found[name]['why'] if name in found else 'never registered'}" for name in sorted(wanted)
    ]
    raise ClusterError("\n".join([f"nodes not Ready after {timeout:.0f} s:", *why, log()]))


def listing(api: Any) -> list[dict[str, Any]]:
    """Every node: name, Ready, real or simulated, GPUs and product, taints."""
    nodes = []
    for node in kube.request(api, "GET", "/api/v1/nodes")["items"]:
        ready = kube.conditions(node).get("Ready", {})
        meta = node["metadata"]
        taints = node.get("spec", {}).get("taints", []) or []
        # the node controller lifts its not-ready taint a moment after Ready: until then nothing lands there
        lagging = any(t["key"] == NOT_READY_TAINT for t in taints)
        nodes.append({
            "name": meta["name"],
            "ready": ready.get("status") == "True" and not lagging,
            "why": (f"Ready, but still tainted {NOT_READY_TAINT}" if lagging and ready.get("status") == "True"
                    else ready.get("message") or "no Ready condition yet"),
            "simulated": meta.get("annotations", {}).get(FAKE_NODE_ANNOTATION) == "fake",
            "product": meta.get("labels", {}).get(GPU_PRODUCT_LABEL, ""),
            "gpus": node.get("status", {}).get("allocatable", {}).get("nvidia.com/gpu", "0"),
            "taints": [t["key"] + ":" + t["effect"] for t in taints],
        })  # fmt: skip
    return nodes
