"""JobSet's and Kueue's own controllers acting on our training workloads (`lfk cluster up --engines jobset
--engines kueue --scheduling binpack`, the set-up docs/local-cluster.md recommends for a shared GPU cluster):
a cluster of its own with two simulated 8-GPU nodes and a ClusterQueue with a GPU quota. The packing
scheduler keeps a node whole for an 8-GPU pod where the default one strands it (test_scheduling.py). A
second experiment waits in the queue until the first finishes, and `lfk status` says why in Kueue's words; a
two-node run is admitted whole or not at all; a higher WorkloadPriorityClass preempts a running experiment,
which Kueue readmits afterwards; a two-node run on the jobset engine is admitted by Kueue, and the JobSet
controller starts its ranks and completes; so does one on the trainjob engine (Kueue admits the TrainJob,
Kubeflow Trainer makes its JobSet) and one on the pytorchjob engine (the training operator makes its Master
and Worker), each admitted whole once the quota holds both ranks. A two-node run on the rayjob engine is
admitted by Kueue and KubeRay makes its Ray cluster, head and both GPU workers; no image here carries Ray, so
the simulated cluster never answers KubeRay's job submission and the run is stopped there."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pykube
import pytest

from generator.cluster import lifecycle, nodes
from generator.errors import KubeError, LfkError
from generator.ops import kube
from generator.project import built_tool
from tests.support.kube import KUEUE, gpu_placement, kueue_create

from .conftest import CHART, Helm, create_prerequisites, lfk, render_spec

NAMESPACE = "queued"
SPEC = """
name: {name}
namespace: queued
storage: {{existingClaim: llm-storage}}
model: {{path: /storage/models/llama-3.1-8b-instruct}}
data: {{datasets: [qa_dataset]}}
resources: {{gpus: 8}}
distributed: {{nodes: {nodes}, engine: {engine}}}
queue: llm-team
queuePriority: {priority}
serve: {{enabled: false}}
webui: {{enabled: false}}
merge: {{enabled: false}}
"""


@pytest.fixture(scope="module")
def kueue_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, pykube.HTTPClient]]:
    directory = tmp_path_factory.mktemp("kueue-cluster")
    try:
        state, _ = lifecycle.up(
            directory,
            nodes.default_nodes(2, 8),
            engines=("jobset", "trainer", "training-operator", "kuberay", "kueue"),
            scheduling="binpack",
        )
    except LfkError as exc:
        pytest.fail(f"the local cluster with its engines and Kueue did not start: {exc}")
    try:
        api = state.api()
        kube.request(api, "POST", "/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}})
        create_prerequisites(api, NAMESPACE)
        for path, kind, obj in (
            ("/resourceflavors", "ResourceFlavor", {"metadata": {"name": "gpu"}}),
            ("/workloadpriorityclasses", "WorkloadPriorityClass", {"metadata": {"name": "routine"}, "value": 100}),
            ("/workloadpriorityclasses", "WorkloadPriorityClass", {"metadata": {"name": "urgent"}, "value": 1000}),
            ("/clusterqueues", "ClusterQueue", cluster_queue(8)),
            (f"/namespaces/{NAMESPACE}/localqueues", "LocalQueue",
             {"metadata": {"name": "llm-team"}, "spec": {"clusterQueue": "team"}}),
        ):  # fmt: skip
            kueue_create(api, path, kind, obj)
        yield str(state.kubeconfig), api
    finally:
        lifecycle.down(directory)


def cluster_queue(gpus: int) -> dict[str, Any]:
    return {
        "metadata": {"name": "team"},
        "spec": {
            "namespaceSelector": {},
            "preemption": {"withinClusterQueue": "LowerPriority"},
            "resourceGroups": [{
                "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                "flavors": [{"name": "gpu", "resources": [
                    {"name": "cpu", "nominalQuota": 1000},
                    {"name": "memory", "nominalQuota": "100Ti"},
                    {"name": "nvidia.com/gpu", "nominalQuota": gpus},
                ]}],
            }],
        },
    }  # fmt: skip


def set_gpu_quota(api: pykube.HTTPClient, gpus: int) -> None:
    current = kube.request(api, "GET", f"{KUEUE}/clusterqueues/team")
    current["spec"]["resourceGroups"][0]["flavors"][0]["resources"][2]["nominalQuota"] = gpus
    kube.request(api, "PUT", f"{KUEUE}/clusterqueues/team", json=current)


@contextmanager
def gpu_quota(api: pykube.HTTPClient, gpus: int) -> Iterator[None]:
    """The ClusterQueue's GPU quota at gpus for a while, then back at the 8 the other tests expect."""
    set_gpu_quota(api, gpus)
    try:
        yield
    finally:
        set_gpu_quota(api, 8)


def install(
    kubeconfig: str,
    tmp_path: Path,
    name: str,
    run_for: str,
    nodes_: int = 1,
    priority: str = "routine",
    engine: str = "job",
) -> tuple[Any, Path]:
    """The experiment's train release, its pods (simulated) running for run_for; (facts, spec path)."""
    facts, folder = render_spec(
        SPEC.format(name=name, nodes=nodes_, priority=priority, engine=engine), tmp_path / name
    )
    helm = Helm(built_tool("helm", "HELM3_VERSION"), kubeconfig)
    helm("upgrade", "--install", facts.releases["train"], str(CHART), "-n", NAMESPACE, "-f", str(folder / "train.yaml"),
         "--set-string", f"train.podAnnotations.lfk\\.local/run-duration={run_for}")  # fmt: skip
    return facts, folder / "experiment.yaml"


def train_job(api: pykube.HTTPClient, facts: Any, engine: str = "job") -> dict[str, Any]:
    [job] = kube.workloads(api, NAMESPACE, facts.releases["train"], "train", engine)
    return job


def until(what: str, check: Callable[[], Any], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def running_pods(api: pykube.HTTPClient, facts: Any) -> list[dict[str, Any]]:
    pods = kube.pods(api, NAMESPACE, {kube.INSTANCE: facts.releases["train"], kube.COMPONENT: "train"})
    return [
        p
        for p in pods
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


def status_text(kubeconfig: str, spec: Path) -> str:
    result = lfk(kubeconfig, "status", str(spec))
    assert result.exit_code == 0, result.output
    return str(result.output)


def saying(kubeconfig: str, spec: Path, words: str) -> str | None:
    """lfk status of the spec, once it contains words."""
    text = status_text(kubeconfig, spec)
    return text if words in text else None


def test_the_packing_scheduler_keeps_a_node_whole_for_an_eight_gpu_pod(
    kueue_cluster: tuple[str, pykube.HTTPClient],
) -> None:
    """The same pods as test_scheduling's spreading case: the two 4-GPU pods share a node, the 8-GPU pod gets
    the other."""
    kubeconfig = kueue_cluster[0]
    status = lfk(kubeconfig, "cluster", "status", "--state-dir", str(Path(kubeconfig).parent))
    assert status.exit_code == 0 and "scheduling: binpack" in status.output, status.output
    placed = gpu_placement(kueue_cluster[1], NAMESPACE, "binpack")
    first, second, eight = placed.values()
    assert first and first == second, placed
    assert eight and eight != first, placed


def test_a_second_experiment_waits_in_the_queue_until_the_first_finishes(
    kueue_cluster: tuple[str, pykube.HTTPClient], tmp_path: Path
) -> None:
    kubeconfig, api = kueue_cluster
    first, _ = install(kubeconfig, tmp_path, "first", "20s")
    until("the first experiment admitted and running", lambda: running_pods(api, first))
    second, second_spec = install(kubeconfig, tmp_path, "second", "3s")
    # Kueue has no room for 8 more GPUs: the second Job stays suspended, without a pod, and status says why
    waiting = until(
        "lfk status naming the queue's reason", lambda: saying(kubeconfig, second_spec, "insufficient")
    )
    assert "waiting in queue llm-team: couldn't assign flavors to pod set" in waiting, waiting
    assert "nvidia.com/gpu" in waiting, waiting
    print(next(line.strip() for line in waiting.splitlines() if "waiting in queue" in line))
    assert train_job(api, second)["spec"]["suspend"] is True
    assert not kube.pods(api, NAMESPACE, {kube.INSTANCE: second.releases["train"], kube.COMPONENT: "train"})
    assert running_pods(api, first)
    # the first finishes; its quota goes to the second
    until(
        "the first experiment complete",
        lambda: kube.workload_state(train_job(api, first))[0] == "Complete",
        120,
    )
    freed = time.monotonic()
    until("the second admitted", lambda: train_job(api, second)["spec"].get("suspend") is False)
    admitted_after = time.monotonic() - freed
    until("the second complete", lambda: kube.workload_state(train_job(api, second))[0] == "Complete", 120)
    print(f"Kueue: quota freed to the second experiment admitted in {admitted_after:.1f} s")


def test_a_two_node_run_is_admitted_whole_or_not_at_all(
    kueue_cluster: tuple[str, pykube.HTTPClient], tmp_path: Path
) -> None:
    kubeconfig, api = kueue_cluster
    wide, spec = install(kubeconfig, tmp_path, "wide", "5s", nodes_=2)
    text = until("lfk status naming the missing quota", lambda: saying(kubeconfig, spec, "insufficient"))
    assert "waiting in queue llm-team:" in text and "16" in text, (
        text
    )  # two pods of 8 GPUs against a quota of 8
    time.sleep(3)
    assert not kube.pods(api, NAMESPACE, {kube.INSTANCE: wide.releases["train"], kube.COMPONENT: "train"}), (
        "never half the pods of a run"
    )
    with gpu_quota(api, 16):
        pods = until("both pods at once", lambda: [p] if len(p := running_pods(api, wide)) == 2 else None)[0]
        assert {p["spec"]["nodeName"] for p in pods} == {"kwok-gpu-0", "kwok-gpu-1"}
        until(
            "the two-node run complete",
            lambda: kube.workload_state(train_job(api, wide))[0] == "Complete",
            120,
        )


def test_an_urgent_experiment_preempts_a_routine_one_which_is_readmitted_afterwards(
    kueue_cluster: tuple[str, pykube.HTTPClient], tmp_path: Path
) -> None:
    kubeconfig, api = kueue_cluster
    routine, routine_spec = install(kubeconfig, tmp_path, "routine", "40s")
    [before] = until("the routine experiment running", lambda: running_pods(api, routine))
    urgent, _ = install(kubeconfig, tmp_path, "urgent", "5s", priority="urgent")
    # Kueue evicts the routine Job (suspends it: its pod goes) to admit the urgent one
    until("the urgent experiment running", lambda: running_pods(api, urgent))
    job = train_job(api, routine)
    assert job["spec"]["suspend"] is True and not running_pods(api, routine)
    assert job["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "routine"
    assert train_job(api, urgent)["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "urgent"
    workload = kube.kueue_workload(api, job)
    assert workload is not None, job
    evicted = kube.conditions(workload).get("Evicted", {})
    assert evicted.get("reason") == "Preempted", workload["status"]
    # when the urgent one is done, the routine one is admitted again: a new pod, which resumes from its
    # checkpoint (the node tier shows the resume of an evicted pod for real)
    until(
        "the urgent experiment complete",
        lambda: kube.workload_state(train_job(api, urgent))[0] == "Complete",
        120,
    )
    [after] = until("the routine experiment running again", lambda: running_pods(api, routine), 120)
    assert after["metadata"]["name"] != before["metadata"]["name"]
    assert train_job(api, routine)["spec"]["suspend"] is False


def test_a_two_node_run_on_the_jobset_engine_is_admitted_and_run_by_jobset(
    kueue_cluster: tuple[str, pykube.HTTPClient], tmp_path: Path
) -> None:
    kubeconfig, api = kueue_cluster
    with gpu_quota(api, 16):
        ranks, spec = install(kubeconfig, tmp_path, "ranks", "5s", nodes_=2, engine="jobset")
        # Kueue unsuspends the JobSet; the JobSet controller makes its Job, whose two pods are the ranks
        until("the JobSet admitted", lambda: train_job(api, ranks, "jobset")["spec"].get("suspend") is False)
        pods = until("both ranks running", lambda: [p] if len(p := running_pods(api, ranks)) == 2 else None)[
            0
        ]
        indexes = sorted(p["metadata"]["annotations"][kube.COMPLETION_INDEX] for p in pods)
        assert indexes == ["0", "1"]
        until(
            "the JobSet complete",
            lambda: kube.workload_state(train_job(api, ranks, "jobset"))[0] == "Complete",
            120,
        )
        status = status_text(kubeconfig, spec)
        assert re.search(r"jobset ranks-train-\S+ run \S+: Complete", status), status
        assert "(node rank 0) Succeeded" in status and "(node rank 1) Succeeded" in status, status


@pytest.mark.parametrize("engine", ["trainjob", "pytorchjob"])
def test_a_two_node_run_on_a_kubeflow_engine_is_admitted_whole_by_kueue_and_run_by_its_operator(
    kueue_cluster: tuple[str, pykube.HTTPClient], tmp_path: Path, engine: str
) -> None:
    """Kueue manages TrainJobs and PyTorchJobs beside their operators: the two-node run waits in the queue with
    no pod while the quota holds one rank, then Kueue unsuspends it and the operator makes both ranks at once
    (Trainer through a JobSet, the training operator as Master and Worker)."""
    kubeconfig, api = kueue_cluster
    ranks, spec = install(kubeconfig, tmp_path, f"ranks-{engine}", "5s", nodes_=2, engine=engine)

    text = until("lfk status naming the missing quota", lambda: saying(kubeconfig, spec, "insufficient"))
    assert "waiting in queue llm-team:" in text, text
    time.sleep(3)
    assert kube.workload_state(train_job(api, ranks, engine))[0] == "Suspended"
    release = {kube.INSTANCE: ranks.releases["train"], kube.COMPONENT: "train"}
    assert not kube.pods(api, NAMESPACE, release), "never a rank before the run is admitted"
    with gpu_quota(api, 16):
        pods = until("both ranks running", lambda: [p] if len(p := running_pods(api, ranks)) == 2 else None)[
            0
        ]
        assert sorted(str(kube.node_rank(p)) for p in pods) == ["0", "1"], pods
        assert {p["spec"]["nodeName"] for p in pods} == {"kwok-gpu-0", "kwok-gpu-1"}
        until(
            f"the {engine} complete",
            lambda: kube.workload_state(train_job(api, ranks, engine))[0] == "Complete",
            120,
        )
        status = status_text(kubeconfig, spec)
        assert re.search(rf"{engine} ranks-{engine}-train-\S+ run \S+: Complete", status), status
        assert "(node rank 0) Succeeded" in status and "(node rank 1) Succeeded" in status, status


def test_a_two_node_run_on_the_rayjob_engine_is_admitted_by_kueue_and_kuberay_makes_its_ray_cluster(
    kueue_cluster: tuple[str, pykube.HTTPClient], tmp_path: Path
) -> None:
    kubeconfig, api = kueue_cluster
    ray, spec = install(kubeconfig, tmp_path, "ray", "600s", nodes_=2, engine="rayjob")
    release = ray.releases["train"]
    text = until("lfk status naming the missing quota", lambda: saying(kubeconfig, spec, "insufficient"))
    assert "waiting in queue llm-team:" in text, text
    assert kube.workload_state(train_job(api, ray, "rayjob"))[0] == "Suspended"
    with gpu_quota(api, 16):
        try:
            # Kueue unsuspends the RayJob; KubeRay makes its RayCluster: a head without GPU and the two GPU workers
            def cluster() -> dict[str, Any] | None:
                name = train_job(api, ray, "rayjob").get("status", {}).get("rayClusterName")
                if not name:
                    return None
                try:
                    found: dict[str, Any] = kube.request(
                        api, "GET", f"/apis/ray.io/v1/namespaces/{NAMESPACE}/rayclusters/{name}"
                    )
                except KubeError as exc:  # the RayJob's status may name its cluster before KubeRay made it
                    if exc.status == 404:
                        return None
                    raise
                return found

            raycluster = until("KubeRay's RayCluster of the run", cluster)
            assert raycluster["metadata"]["ownerReferences"][0]["kind"] == "RayJob"

            def ray_pods() -> list[dict[str, Any]] | None:
                pods = kube.pods(api, NAMESPACE, {"ray.io/cluster": raycluster["metadata"]["name"]})
                running = [p for p in pods if p["status"].get("phase") == "Running"]
                return running if len(running) == 3 else None

            pods = until("the head and both workers running", ray_pods)
            kinds = sorted(p["metadata"]["labels"]["ray.io/node-type"] for p in pods)
            assert kinds == ["head", "worker", "worker"], kinds
            workers = [p for p in pods if p["metadata"]["labels"]["ray.io/node-type"] == "worker"]
            assert {p["spec"]["nodeName"] for p in workers} == {"kwok-gpu-0", "kwok-gpu-1"}
            assert all(kube.gpu_request(p) == 8 for p in workers)
            rayjob = train_job(api, ray, "rayjob")
            assert rayjob["status"].get("jobDeploymentStatus") in ("Initializing", "Running"), rayjob[
                "status"
            ]
        finally:
            Helm(built_tool("helm", "HELM3_VERSION"), kubeconfig)(
                "uninstall", release, "-n", NAMESPACE, "--wait"
            )
