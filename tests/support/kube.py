"""API helpers only the tests need, over the client the operations use."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from generator.cluster import nodes
from generator.errors import KubeError
from generator.ops import kube


def jobs(api: Any, namespace: str, release: str, component: str | None = None) -> list[dict[str, Any]]:
    """The release's batch Jobs; with a component, only that component's (not its preflight or checks)."""
    selector = f"{kube.INSTANCE}={release}" + (f",{kube.COMPONENT}={component}" if component else "")
    answer = kube.request(
        api, "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs", params={"labelSelector": selector}
    )
    return list(answer.get("items", []))


def remove_nodes(api: Any, names: Iterable[str]) -> None:
    for name in names:
        try:
            kube.request(api, "DELETE", f"/api/v1/nodes/{name}")
        except KubeError as exc:
            if exc.status != 404:
                raise


def gpu_placement(api: Any, namespace: str, name: str) -> dict[str, str | None]:
    """Two 4-GPU pods, one after the other, then an 8-GPU pod, on two empty 8-GPU nodes of their own (tainted
    and labelled so that no other pod lands there, and these land nowhere else): the node each pod is bound to,
    None for a pod the scheduler calls Unschedulable. Spreading puts the two 4-GPU pods on different nodes and
    strands the 8-GPU pod; packing puts them on one node and leaves the other whole. Nodes and pods are deleted
    at the end."""
    taint = {"key": "lfk.test/packing", "value": name, "effect": "NoSchedule"}
    pool = [
        nodes.NodeSpec(f"{name}-{x}", gpus=8, labels={"lfk.test/packing": name}, taints=[taint])
        for x in ("a", "b")
    ]
    nodes.add_nodes(api, pool)
    placed: dict[str, str | None] = {}
    try:
        nodes.wait_ready(api, [n.name for n in pool])
        for pod, gpus in ((f"{name}-4-first", 4), (f"{name}-4-second", 4), (f"{name}-8", 8)):
            kube.request(api, "POST", f"/api/v1/namespaces/{namespace}/pods", json=gpu_pod(pod, name, gpus))
            deadline = time.monotonic() + 60
            while pod not in placed:
                got = kube.request(api, "GET", f"/api/v1/namespaces/{namespace}/pods/{pod}")
                if got["spec"].get("nodeName"):
                    placed[pod] = got["spec"]["nodeName"]
                elif kube.conditions(got).get("PodScheduled", {}).get("reason") == "Unschedulable":
                    placed[pod] = None
                elif time.monotonic() > deadline:
                    raise AssertionError(
                        f"{pod}: neither bound nor unschedulable after 60 s: {got['status']}"
                    )
                else:
                    time.sleep(0.3)
    finally:
        for pod in (f"{name}-4-first", f"{name}-4-second", f"{name}-8"):
            try:
                kube.request(
                    api,
                    "DELETE",
                    f"/api/v1/namespaces/{namespace}/pods/{pod}",
                    params={"gracePeriodSeconds": "0"},
                )
            except KubeError as exc:
                if exc.status != 404:
                    raise
        remove_nodes(api, [n.name for n in pool])
    return placed


def gpu_pod(name: str, packing: str, gpus: int) -> dict[str, Any]:
    """A pod shaped like a training pod (GPUs with CPU and memory, as the chart asks), for the packing nodes;
    compliant with the restricted Pod Security level."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"lfk.test/packing": packing},
            "tolerations": [{"key": "lfk.test/packing", "value": packing, "effect": "NoSchedule"}],
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "train",
                    "image": "lfk.local/llamafactory:0.9.5",
                    "resources": {
                        "requests": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": str(gpus)},
                        "limits": {"memory": "64Gi", "nvidia.com/gpu": str(gpus)},
                    },
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }
