"""Kueue's own controller on the real node: a routine experiment in a queue whose quota holds one training at a
time is preempted by an urgent one (a higher WorkloadPriorityClass) after its first checkpoint; Kueue
suspends its Job, runs the urgent experiment to the end, readmits the routine one, and it resumes from its
checkpoint with no optimizer step lost or repeated."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from generator.cluster import engines
from generator.core.facts import derive
from generator.core.spec import load_spec
from generator.core.storage import local
from generator.errors import KubeError
from generator.ops import kube

from .conftest import NAMESPACE, NodeCluster, variant, wait_for

KUEUE = "/apis/kueue.x-k8s.io/v1beta2"
QUEUE = "cpu-team"
# one tiny training at a time: each train pod asks for 1 CPU and 6Gi (values/tiny-cpu)
QUOTA = {"cpu": "1500m", "memory": "12Gi"}


def queued(priority: str, steps: int) -> Any:
    def change(d: dict[str, Any]) -> None:
        d["queue"], d["queuePriority"] = QUEUE, priority
        d["training"].update(maxSteps=steps, saveSteps=8)
        d["data"]["tokenizeOnce"] = False

    return change


def kueue_objects(cluster: NodeCluster) -> list[str]:
    """The queue, its quota and the two priorities; their API paths, for deletion."""
    objects = [
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
        (f"/namespaces/{NAMESPACE}/localqueues", "LocalQueue",
         {"metadata": {"name": QUEUE}, "spec": {"clusterQueue": QUEUE}}),
    ]  # fmt: skip
    paths = []
    for path, kind, body in objects:
        kube.request(
            cluster.api,
            "POST",
            f"{KUEUE}{path}",
            json={"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": kind, **body},
        )
        paths.append(f"{KUEUE}{path}/{body['metadata']['name']}")
    return paths


def workload(cluster: NodeCluster, job: dict[str, Any]) -> dict[str, Any] | None:
    answer = kube.request(
        cluster.api, "GET", f"{KUEUE}/namespaces/{NAMESPACE}/workloads",
        params={"labelSelector": f"kueue.x-k8s.io/job-uid={job['metadata']['uid']}"},
    )  # fmt: skip
    items = answer.get("items", [])
    return items[0] if items else None


def train_job(cluster: NodeCluster, facts: Any) -> dict[str, Any] | None:
    jobs = kube.workloads(cluster.api, NAMESPACE, facts.releases["train"], "train")
    return jobs[0] if jobs else None


def steps_logged(output: Path) -> list[int]:
    rows = [json.loads(line) for line in (output / "trainer_log.jsonl").read_text().splitlines() if line]
    return [r["current_steps"] for r in rows if "loss" in r]


def test_an_urgent_experiment_preempts_a_routine_one_which_resumes_from_its_checkpoint(
    node_cluster: NodeCluster, tmp_path: Path
) -> None:
    engines.start(node_cluster.state, ("kueue",))
    paths = kueue_objects(node_cluster)
    routine_spec = variant(tmp_path, "tiny-routine", queued("routine", 48))
    urgent_spec = variant(tmp_path, "tiny-urgent", queued("urgent", 8))
    routine, urgent = derive(load_spec(routine_spec)), derive(load_spec(urgent_spec))
    output = local(node_cluster.storage, routine.output_dir)
    try:
        started = time.monotonic()
        install = node_cluster.lfk("install", str(routine_spec), "--component", "train", timeout=600)
        assert install.returncode == 0, install.stdout + install.stderr
        wait_for(
            "the routine run's first checkpoint",
            lambda: list(output.glob("checkpoint-*/trainer_state.json")),
            600,
            0.2,
        )
        install = node_cluster.lfk("install", str(urgent_spec), "--component", "train", timeout=600)
        preempted_at = time.monotonic()
        assert install.returncode == 0, install.stdout + install.stderr

        seen: dict[str, Any] = {}

        def preempted() -> bool:
            job = train_job(node_cluster, routine)
            found = kube.conditions(workload(node_cluster, job) or {}) if job else {}
            evicted = found.get("Evicted", {})
            if evicted.get("status") == "True":
                seen["evicted"] = evicted
            return bool(seen)

        wait_for("Kueue evicting the routine run", preempted, 120, 0.5)
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
        resumed = [int(n) for n in re.findall(r"Resuming training from \S+/checkpoint-(\d+)", log)]
        assert len(resumed) == 1 and resumed[0] >= 8, log[-3000:]
        [checkpoint] = resumed
        steps = steps_logged(output)
        after = steps[len(steps) - (48 - checkpoint) :]
        assert after == list(range(checkpoint + 1, 49)), steps
        assert checkpoint in steps[: len(steps) - len(after)], steps
        assert routine_job["status"].get("succeeded") == 1
        print(
            f"Kueue on the real node: routine preempted {preempted_at - started:.0f} s after its install (at "
            f"checkpoint {checkpoint}), the urgent run complete {urgent_done - preempted_at:.0f} s later, the "
            f"routine one resumed from checkpoint {checkpoint} and complete {time.monotonic() - urgent_done:.0f} s "
            "after that"
        )
    finally:
        for facts in (routine, urgent):
            node_cluster.helm("uninstall", facts.releases["train"], "-n", NAMESPACE, "--wait", timeout=300)
        for path in reversed(paths):
            try:
                kube.request(node_cluster.api, "DELETE", path)
            except KubeError as exc:
                if exc.status != 404:
                    raise
