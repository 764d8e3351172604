"""Kueue's own controller on the real node: a routine experiment in a queue whose quota holds one training at a
time is preempted by an urgent one (a higher WorkloadPriorityClass) after its first checkpoint; Kueue
suspends its Job, runs the urgent experiment to the end, readmits the routine one, and it resumes from its
checkpoint with no optimizer step lost or repeated. The urgent experiment is installed early, into a
LocalQueue that does not exist yet (Kueue holds its Workload), and the queue is opened at the routine run's
first checkpoint: the preemption comes then, whatever the machine's speed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from generator.cluster import engines
from generator.core.facts import derive
from generator.core.spec import load_spec
from generator.core.storage import local
from generator.ops import kube
from tests.support.kube import delete_if_present, kueue_create

from .conftest import NAMESPACE, RESUMED_FROM, NodeCluster, assert_resumed_once, losses, variant, wait_for

QUEUE = "cpu-team"
URGENT_QUEUE = "cpu-urgent"  # the same ClusterQueue, opened at the routine run's first checkpoint
# one tiny training at a time: each train pod asks for 1 CPU and 6Gi (values/tiny-cpu)
QUOTA = {"cpu": "1500m", "memory": "12Gi"}
ROUTINE_STEPS = 96  # tiny-cpu's 48 are over in about 8 s of training


def queued(queue: str, priority: str, steps: int) -> Any:
    def change(d: dict[str, Any]) -> None:
        d["queue"], d["queuePriority"] = queue, priority
        d["training"].update(maxSteps=steps, saveSteps=8)
        d["data"]["tokenizeOnce"] = False

    return change


def kueue_objects(cluster: NodeCluster) -> list[str]:
    """The queue, its quota and the two priorities; their API paths, for deletion."""
    objects: list[tuple[str, str, dict[str, Any]]] = [
        ("/resourceflavors", "ResourceFlavor", {"metadata": {"name": "cpu"}}),
        ("/workloadpriorityclasses", "WorkloadPriorityClass", {"metadata": {"name": "routine"}, "value": 100}),
        ("/workloadpriorityclasses", "WorkloadPriorityClass", {"metadata": {"name": "urgent"}, "value": 1000}),
        ("/clusterqueues", "ClusterQueue", {"metadata": {"name": QUEUE}, "spec": {
            "namespaceSelector": {},
            "preemption": {"withinClusterQueue": "LowerPriority"},
            "resourceGroups": [{"coveredResources": list(QUOTA), "flavors": [{"name": "cpu", "resources": [
                {"name": name, "nominalQuota": value} for name, value in QUOTA.items()
            ]}]}],
        }}),
        local_queue(QUEUE),
    ]  # fmt: skip
    return [kueue_create(cluster.api, *item) for item in objects]


def local_queue(name: str) -> tuple[str, str, dict[str, Any]]:
    return (
        f"/namespaces/{NAMESPACE}/localqueues",
        "LocalQueue",
        {"metadata": {"name": name}, "spec": {"clusterQueue": QUEUE}},
    )


def train_job(cluster: NodeCluster, facts: Any) -> dict[str, Any] | None:
    jobs = kube.workloads(cluster.api, NAMESPACE, facts.releases["train"], "train")
    return jobs[0] if jobs else None


def test_an_urgent_experiment_preempts_a_routine_one_which_resumes_from_its_checkpoint(
    node_cluster: NodeCluster, tmp_path: Path
) -> None:
    engines.start(node_cluster.state, ("kueue",))
    paths = kueue_objects(node_cluster)
    routine_spec = variant(tmp_path, "tiny-routine", queued(QUEUE, "routine", ROUTINE_STEPS))
    urgent_spec = variant(tmp_path, "tiny-urgent", queued(URGENT_QUEUE, "urgent", 8))
    routine, urgent = derive(load_spec(routine_spec)), derive(load_spec(urgent_spec))
    output = local(node_cluster.storage, routine.output_dir)
    try:
        # the urgent run first: its Workload waits for its queue while the routine run trains
        for spec in (urgent_spec, routine_spec):
            install = node_cluster.lfk("install", str(spec), "--component", "train", timeout=600)
            assert install.returncode == 0, install.stdout + install.stderr
        wait_for(
            "the routine run's first checkpoint",
            lambda: list(output.glob("checkpoint-*/trainer_state.json")),
            600,
            0.1,
        )
        paths.append(kueue_create(node_cluster.api, *local_queue(URGENT_QUEUE)))
        opened = time.monotonic()

        seen: dict[str, Any] = {}

        def preempted() -> bool:
            job = train_job(node_cluster, routine)
            found = kube.conditions(kube.kueue_workload(node_cluster.api, job) or {}) if job else {}
            evicted = found.get("Evicted", {})
            if evicted.get("status") == "True":
                seen["evicted"] = evicted
            return bool(seen)

        wait_for("Kueue evicting the routine run", preempted, 120, 0.2)
        preempted_after = time.monotonic() - opened
        assert seen["evicted"]["reason"] == "Preempted", seen

        def says_waiting() -> str | None:
            status = node_cluster.lfk("status", str(routine_spec))
            return status.stdout if "waiting in queue cpu-team: " in status.stdout else None

        wait_for("lfk status saying the routine run waits in its queue", says_waiting, 60, 1)

        def complete(facts: Any) -> Any:
            def check() -> dict[str, Any] | None:
                job = train_job(node_cluster, facts)
                return job if job and kube.workload_state(job)[0] == "Complete" else None

            return check

        urgent_job = wait_for("the urgent run complete", complete(urgent), 600, 1)
        urgent_done = time.monotonic()
        routine_job = wait_for("the routine run readmitted and complete", complete(routine), 900, 1)
        assert kube.workload_state(urgent_job)[0] == "Complete"
        # the routine run trained again only after the urgent one had finished (the quota holds one)
        [pod] = node_cluster.pods({kube.INSTANCE: routine.releases["train"], kube.COMPONENT: "train"})
        assert pod["metadata"]["creationTimestamp"] >= urgent_job["status"]["completionTime"], (
            pod,
            urgent_job,
        )
        log = node_cluster.log(pod["metadata"]["name"])
        resumed = [int(n) for n in RESUMED_FROM.findall(log)]
        assert resumed and set(resumed) == {resumed[0]} and 8 <= resumed[0] < ROUTINE_STEPS, log[-3000:]
        checkpoint = resumed[0]
        assert_resumed_once([s for s, _ in losses(output)], checkpoint, ROUTINE_STEPS)
        assert routine_job["status"].get("succeeded") == 1
        print(
            f"Kueue on the real node: the routine run preempted {preempted_after:.1f} s after the urgent one's "
            f"queue opened, the urgent run complete {urgent_done - opened:.0f} s after that, the routine one "
            f"resumed from checkpoint {checkpoint} and complete {time.monotonic() - urgent_done:.0f} s later"
        )
    finally:
        node_cluster.uninstall(routine.releases["train"], urgent.releases["train"])
        for path in reversed(paths):
            delete_if_present(node_cluster.api, path)
