"""GPU scheduling on the real scheduler: GPU requests beyond any node stay Pending with the scheduler's own
reason; nodeSelector (GPU product) and tolerations of tainted GPU nodes are honoured; Kubernetes' default
scoring spreads small GPU pods and strands a large one (the packing scheduler that avoids it is shown in
test_engines.py, on a cluster started with --scheduling binpack)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pykube
import pytest

from generator.cluster import nodes
from generator.ops import kube, wait
from tests.support import kube as support_kube
from tests.support.kube import gpu_placement, remove_nodes

from .conftest import CHART, Helm, create_prerequisites, render_spec, restricted_namespace

SPEC = """
name: sched
storage: {existingClaim: llm-storage}
model: {path: /storage/models/llama-3.2-3b-instruct}
data: {datasets: [qa_dataset]}
webui: {enabled: false}
serve: {enabled: false}
merge: {enabled: false}
"""


def pending_events(api: pykube.HTTPClient, namespace: str, release: str, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = kube.pods(api, namespace, {kube.INSTANCE: release})
        if pods:
            pod = pods[0]
            assert pod["status"].get("phase") == "Pending" and not pod["spec"].get("nodeName")
            events = kube.events_of(api, namespace, "Pod", pod["metadata"]["name"])
            if any("FailedScheduling" in e for e in events):
                return events
        time.sleep(0.5)
    raise AssertionError(f"no FailedScheduling event for {release}")


def install_train(helm: Helm, namespace: str, folder: Path, release: str) -> None:
    helm("upgrade", "--install", release, str(CHART), "-n", namespace, "-f", str(folder / "train.yaml"))


def test_more_gpus_than_any_node_stay_pending_with_the_schedulers_reason(
    helm3: Helm, api: pykube.HTTPClient, namespace_factory: Any, tmp_path: Path
) -> None:
    namespace = restricted_namespace(namespace_factory, "sched-too-many-gpus")
    create_prerequisites(api, namespace)
    facts, folder = render_spec(SPEC + "resources: {gpus: 16, gpu: {memoryGiB: 80}}\n", tmp_path / "sched")
    install_train(helm3, namespace, folder, facts.releases["train"])
    events = pending_events(api, namespace, facts.releases["train"])
    assert any("Insufficient nvidia.com/gpu" in e for e in events), events


def test_the_default_scoring_spreads_small_gpu_pods_and_strands_an_eight_gpu_pod(
    api: pykube.HTTPClient, namespace_factory: Any
) -> None:
    """Why docs/local-cluster.md recommends --scheduling binpack on a shared GPU cluster: two 4-GPU pods on two
    empty 8-GPU nodes land one per node, and an 8-GPU pod then finds no node although 8 GPUs are free."""
    namespace = restricted_namespace(namespace_factory, "sched-spread")
    placed = gpu_placement(api, namespace, "spread")
    first, second, eight = placed.values()
    assert first and second and first != second, placed
    assert eight is None, placed


@pytest.fixture()
def tainted_node(cluster_kubeconfig: str, api: pykube.HTTPClient) -> Any:
    node = nodes.NodeSpec(
        "kwok-h200-dedicated",
        gpus=8,
        product="NVIDIA-H200",
        taints=[{"key": "dedicated", "value": "llm", "effect": "NoSchedule"}],
    )
    nodes.add_nodes(api, [node])
    nodes.wait_ready(api, [node.name])
    yield node
    remove_nodes(api, [node.name])


def test_node_selector_and_tolerations_are_honoured(
    tainted_node: Any, helm3: Helm, api: pykube.HTTPClient, namespace_factory: Any, tmp_path: Path
) -> None:
    namespace = restricted_namespace(namespace_factory, "sched-tolerations")
    create_prerequisites(api, namespace)
    h200 = "resources: {gpu: {product: NVIDIA-H200}, tolerations: [{key: dedicated, operator: Equal, value: llm, effect: NoSchedule}]}\n"
    facts, folder = render_spec(SPEC + h200, tmp_path / "tolerating")
    install_train(helm3, namespace, folder, facts.releases["train"])
    [job] = support_kube.jobs(api, namespace, facts.releases["train"])
    assert wait.job(api, namespace, job["metadata"]["name"], timeout=60).ok
    [pod] = kube.pods(api, namespace, {kube.INSTANCE: facts.releases["train"]})
    assert pod["spec"]["nodeName"] == tainted_node.name

    untolerating = (
        SPEC.replace("name: sched", "name: sched-untol") + "resources: {gpu: {product: NVIDIA-H200}}\n"
    )
    facts, folder = render_spec(untolerating, tmp_path / "untolerating")
    install_train(helm3, namespace, folder, facts.releases["train"])
    events = pending_events(api, namespace, facts.releases["train"])
    assert any("untolerated taint" in e for e in events), events
