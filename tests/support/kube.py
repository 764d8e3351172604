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


def delete_if_present(api: Any, path: str, params: dict[str, str] | None = None) -> None:
    """DELETE path; one already gone is fine."""
    try:
        kube.request(api, "DELETE", path, params=params or {})
    except KubeError as exc:
        if exc.status != 404:
            raise


def remove_nodes(api: Any, names: Iterable[str]) -> None:
    for name in names:
        delete_if_present(api, f"/api/v1/nodes/{name}")


KUEUE = "/apis/kueue.x-k8s.io/v1beta2"


def kueue_create(api: Any, path: str, kind: str, body: dict[str, Any]) -> str:
    """A Kueue object POSTed to KUEUE + path (e.g. /clusterqueues); its own API path, for deletion."""
    kube.request(
        api, "POST", f"{KUEUE}{path}", json={"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": kind, **body}
    )
    return f"{KUEUE}{path}/{body['metadata']['name']}"


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
    pods = {f"{name}-4-first": 4, f"{name}-4-second": 4, f"{name}-8": 8}
    placed: dict[str, str | None] = {}
    try:
        nodes.wait_ready(api, [n.name for n in pool])
        for pod, gpus in pods.items():  # one after the other: each is placed knowing where the last went
            kube.request(api, "POST", f"/api/v1/namespaces/{namespace}/pods", json=gpu_pod(pod, name, gpus))
            placed[pod] = placement(api, namespace, pod)
    finally:
        for pod in pods:
            delete_if_present(
                api, f"/api/v1/namespaces/{namespace}/pods/{pod}", params={"gracePeriodSeconds": "0"}
            )
        remove_nodes(api, [n.name for n in pool])
    return placed


def placement(api: Any, namespace: str, pod: str, timeout: float = 60) -> str | None:
    """The node the scheduler binds pod to, or None once it calls the pod Unschedulable."""
    deadline = time.monotonic() + timeout
    while True:
        got = kube.request(api, "GET", f"/api/v1/namespaces/{namespace}/pods/{pod}")
        if got["spec"].get("nodeName"):
            return str(got["spec"]["nodeName"])
        if kube.conditions(got).get("PodScheduled", {}).get("reason") == "Unschedulable":
            return None
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{pod}: neither bound nor unschedulable after {timeout:.0f} s: {got['status']}"
            )
        time.sleep(0.3)


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
