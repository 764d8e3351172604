"""Two pods that train together on the real node: tiny-cpu with distributed.nodes: 2 (engine job: an Indexed Job
of two pods, a headless Service for the first pod's name, torch elastic over gloo on CPU). The second pod is
evicted right after the first checkpoint; the Job replaces it, the first pod's torchrun restarts its worker,
both meet again and resume from the last checkpoint. The resumed two-pod run's losses match one uninterrupted
process of the same global batch (run here from the same model, data and config), step for step. A rank that
never meets the other is named by lfk status; the same two ranks as a JobSet, with JobSet's controller, and as
a TrainJob, with Kubeflow Trainer's, restart as a group after an eviction and resume; as a PyTorchJob, with the
Kubeflow training operator's controller, the operator replaces the evicted pod and torch restarts the group."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from generator.cluster import engines
from generator.core.facts import derive
from generator.core.spec import load_spec
from generator.core.storage import local
from generator.ops import kube
from tests.support import smoke

from .conftest import (
    NAMESPACE,
    RESUMED_FROM,
    NodeCluster,
    assert_resumed_once,
    evict,
    losses,
    variant,
    wait_for,
)

# the losses of two ranks of batch 2 (averaged over the ranks) and of one process of batch 4 (tests/llamafactory/
# test_distributed.py measures them 1e-4 apart)
LOSS_TOLERANCE = 1e-3


def two_pods(d: dict[str, Any]) -> None:
    d["distributed"] = {"nodes": 2, "engine": "job", "rendezvousTimeout": 180}
    d["resources"]["cpu"] = "900m"  # both ranks on the 2-core node


class RankEviction(threading.Thread):
    """Evicts the pod of node rank 1 through the API as soon as the first checkpoint is complete."""

    def __init__(self, cluster: NodeCluster, release: str, output: Path, engine: str = "job") -> None:
        super().__init__(daemon=True)
        self.cluster, self.release, self.output, self.engine = cluster, release, output, engine
        self.stop = threading.Event()
        self.evicted: str | None = None
        self.checkpoint = 0
        self.at: datetime | None = None

    def run(self) -> None:
        while not self.stop.is_set():
            done = sorted(
                int(p.parent.name.split("-")[1]) for p in self.output.glob("checkpoint-*/trainer_state.json")
            )
            if done:
                [pod] = [
                    p for p in self.cluster.pods(self.selector())
                    if kube.node_rank(p) == "1" and p["status"].get("phase") == "Running"
                ]  # fmt: skip
                name = pod["metadata"]["name"]
                evict(self.cluster, name)
                self.evicted, self.checkpoint, self.at = name, done[0], datetime.now(UTC)
                return
            time.sleep(0.05)

    def selector(self) -> dict[str, str]:
        """The ranks' pods: the release's, or a TrainJob's (Trainer labels them with its JobSet's name only)."""
        if self.engine != "trainjob":
            return {kube.INSTANCE: self.release, kube.COMPONENT: "train"}
        [trainjob] = kube.workloads(self.cluster.api, NAMESPACE, self.release, "train", "trainjob")
        return {kube.JOBSET_NAME: trainjob["metadata"]["name"]}


def install_with_eviction(cluster: NodeCluster, spec: Path) -> tuple[Any, Path, RankEviction, float]:
    """The spec's train release installed, rank 1 to be evicted after the first checkpoint; (facts, its
    output folder, the eviction, when the install began)."""
    facts = derive(load_spec(spec))
    output = local(cluster.storage, facts.output_dir)
    eviction = RankEviction(cluster, facts.releases["train"], output)
    eviction.start()
    started = time.monotonic()
    install = cluster.lfk("install", str(spec), "--component", "train", timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    return facts, output, eviction, started


@pytest.fixture(scope="module")
def ddp_run(node_cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    spec = variant(tmp_path_factory.mktemp("ddp"), "tiny-ddp", two_pods)
    facts, output, eviction, started = install_with_eviction(node_cluster, spec)

    def finished() -> dict[str, Any] | None:
        jobs = kube.workloads(node_cluster.api, NAMESPACE, facts.releases["train"], "train")
        return next((j for j in jobs if kube.workload_state(j)[0] in ("Complete", "Failed")), None)

    job = wait_for("the two-pod training Job", finished, 900, 2)
    seconds = time.monotonic() - started
    eviction.stop.set()
    try:
        yield {
            "spec": spec,
            "facts": facts,
            "output": output,
            "job": job,
            "eviction": eviction,
            "seconds": seconds,
        }
    finally:
        node_cluster.uninstall(facts.releases["train"])


def test_two_pods_train_together_and_resume_after_one_is_evicted(
    node_cluster: NodeCluster, ddp_run: dict[str, Any]
) -> None:
    job, eviction, facts = ddp_run["job"], ddp_run["eviction"], ddp_run["facts"]
    assert eviction.evicted, "the first checkpoint never appeared while the pods ran"
    # the eviction counted as no failure: the Job replaced the pod and completed both indexes
    assert kube.workload_state(job)[0] == "Complete" and not job["status"].get("failed"), job["status"]
    pods = sorted(
        node_cluster.pods({kube.INSTANCE: facts.releases["train"], kube.COMPONENT: "train"}),
        key=lambda p: p["metadata"]["annotations"][kube.COMPLETION_INDEX],
    )
    assert [p["metadata"]["annotations"][kube.COMPLETION_INDEX] for p in pods] == ["0", "1"]
    assert eviction.evicted not in [p["metadata"]["name"] for p in pods]
    first, replacement = (node_cluster.log(p["metadata"]["name"]) for p in pods)
    # both ranks trained in one group of two, over the headless Service's name of the first pod
    for log in (first, replacement):
        assert "world size: 2, device: cpu" in log, log[-3000:]
    service = f"{facts.releases['train']}-nodes"
    assert re.search(
        rf"Initializing 1 distributed tasks at: {facts.releases['train']}-[0-9a-f]{{8}}-0\.{service}:", first
    )
    # the first pod's worker lost its peer and torch elastic restarted it in place; both resumed from one checkpoint
    assert "Connection reset by peer" in first or "Connection closed by peer" in first, first[-3000:]
    resumed = {int(n) for log in (first, replacement) for n in RESUMED_FROM.findall(log)}
    assert len(resumed) == 1 and min(resumed) >= eviction.checkpoint, resumed
    [checkpoint] = resumed
    # checkpoints are written by global rank 0 alone (the rendezvous ranks the pods by their names: the
    # first pod, whose log says so)
    saving = [
        bool(re.search(r"Saving model checkpoint to \S+/checkpoint-\d+", log)) for log in (first, replacement)
    ]
    assert saving == [True, False] and "Process rank: 0, world size: 2" in first, saving
    # no optimizer step lost or repeated after the restart: the resumed run logs checkpoint+1 .. maxSteps once
    max_steps = load_spec(ddp_run["spec"]).data["training"]["maxSteps"]
    assert_resumed_once([s for s, _ in losses(ddp_run["output"])], checkpoint, max_steps)
    stamp = re.search(
        r"\[INFO\|(\S+ \S+)\] llamafactory\.hparams\.parser:\d+ >> Resuming training from", replacement
    )
    assert stamp and eviction.at
    resumed_at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    print(
        f"two pods on the real node: {ddp_run['seconds']:.0f} s for {max_steps} steps with rank 1 evicted after "
        f"checkpoint {eviction.checkpoint}; eviction to the resumed start from checkpoint {checkpoint}: "
        f"{(resumed_at - eviction.at).total_seconds():.0f} s"
    )


def test_status_names_every_rank(node_cluster: NodeCluster, ddp_run: dict[str, Any]) -> None:
    status = node_cluster.lfk("status", str(ddp_run["spec"]))
    assert status.returncode == 0, status.stderr
    for rank in (0, 1):
        assert re.search(rf"pod \S+ \(node rank {rank}\) Succeeded on \S+ GPUs 0", status.stdout), (
            status.stdout
        )


def test_the_two_pods_lose_as_one_process_of_their_global_batch(
    node_cluster: NodeCluster, ddp_run: dict[str, Any], tmp_path: Path
) -> None:
    """The pods' own training config, run here in one process with both ranks' examples per step."""
    rendered = yaml.safe_load((ddp_run["spec"].parent / "train.yaml").read_text())["train"]["config"]
    rendered.update(per_device_train_batch_size=2 * rendered["per_device_train_batch_size"])
    config = yaml.safe_load(
        smoke.localised_config(rendered, node_cluster.storage, tmp_path / "pods.yaml").read_text()
    )
    alone = dict(losses(smoke.train_alone(config, tmp_path / "one")))
    pods = dict(losses(ddp_run["output"]))  # a step logged twice (before and after the restart): the last
    assert sorted(pods) == sorted(alone)
    for step, loss in pods.items():
        assert loss == pytest.approx(alone[step], rel=LOSS_TOLERANCE), (step, pods, alone)


def assert_lose_as_the_job_engines_pods(output: Path, ddp_run: dict[str, Any]) -> None:
    """Another engine's two ranks of the same spec lose as the job engine's (which lose as one process of their
    global batch, above), step for step: the same DDP, only started by another operator."""
    pods, job_engine = dict(losses(output)), dict(losses(ddp_run["output"]))
    assert sorted(pods) == sorted(job_engine)
    for step, loss in pods.items():
        assert loss == pytest.approx(job_engine[step], rel=LOSS_TOLERANCE), (step, pods, job_engine)


def test_a_rendezvous_that_never_completes_is_named_by_status(
    node_cluster: NodeCluster, ddp_run: dict[str, Any], tmp_path: Path
) -> None:
    """Rank 1 cannot be scheduled (two pods of 1.5 CPUs on a 2-core node): rank 0 waits rendezvousTimeout
    seconds at the rendezvous, fails, and lfk status says what happened and where to look."""

    def starved(d: dict[str, Any]) -> None:
        two_pods(d)
        d["distributed"]["rendezvousTimeout"] = 30
        d["resources"]["cpu"] = "1500m"
        d["data"]["tokenizeOnce"] = False

    spec = variant(tmp_path, "tiny-lonely", starved)
    facts = derive(load_spec(spec))
    install = node_cluster.lfk("install", str(spec), "--component", "train", timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    try:

        def failed() -> bool:
            jobs = kube.workloads(node_cluster.api, NAMESPACE, facts.releases["train"], "train")
            return any(kube.workload_state(j)[0] == "Failed" for j in jobs)

        wait_for("the lonely rank's Job failed", failed, 300, 2)
        status = node_cluster.lfk("status", str(spec))
        assert status.returncode == 0, status.stderr
        assert "(node rank 0) Failed" in status.stdout, status.stdout
        assert "! the rendezvous never completed" in status.stdout, status.stdout
        assert "distributed.rendezvousTimeout" in status.stdout
    finally:
        node_cluster.uninstall(facts.releases["train"])


def test_two_pods_on_the_jobset_engine_restart_as_a_group_and_resume(
    node_cluster: NodeCluster, tmp_path: Path
) -> None:
    """The same two ranks as a JobSet, with JobSet's controller started beside the node cluster: rank 1 is
    evicted after the first checkpoint, its Job fails (a JobSet's Jobs do not retry by themselves), and the
    JobSet's failure policy starts the whole group again, which resumes from the checkpoint."""
    engines.start(node_cluster.state, ("jobset",))

    def on_jobset(d: dict[str, Any]) -> None:
        two_pods(d)
        d["distributed"]["engine"] = "jobset"

    spec = variant(tmp_path, "tiny-jobset", on_jobset)
    facts, output, eviction, started = install_with_eviction(node_cluster, spec)
    try:

        def finished() -> dict[str, Any] | None:
            sets = kube.workloads(node_cluster.api, NAMESPACE, facts.releases["train"], "train", "jobset")
            return next((j for j in sets if kube.workload_state(j)[0] in ("Complete", "Failed")), None)

        jobset = wait_for("the two-pod JobSet", finished, 900, 2)
        eviction.stop.set()
        assert eviction.evicted, "the first checkpoint never appeared while the pods ran"
        assert kube.workload_state(jobset)[0] == "Complete", jobset["status"]
        assert jobset["status"].get("restarts", 0) >= 1, jobset["status"]  # the group started again
        pods = node_cluster.pods({kube.INSTANCE: facts.releases["train"], kube.COMPONENT: "train"})
        logs = [node_cluster.log(p["metadata"]["name"]) for p in pods]
        assert len(logs) == 2 and all("world size: 2, device: cpu" in log for log in logs), logs
        resumed = {int(n) for log in logs for n in RESUMED_FROM.findall(log)}
        assert len(resumed) == 1 and min(resumed) >= eviction.checkpoint, resumed
        [checkpoint] = resumed
        max_steps = load_spec(spec).data["training"]["maxSteps"]
        steps = [s for s, _ in losses(output)]
        assert steps[len(steps) - (max_steps - checkpoint) :] == list(range(checkpoint + 1, max_steps + 1)), (
            steps
        )
        print(
            f"two pods as a JobSet: {time.monotonic() - started:.0f} s for {max_steps} steps, rank 1 evicted after "
            f"checkpoint {eviction.checkpoint}, the group restarted {jobset['status']['restarts']} time(s) and "
            f"resumed from checkpoint {checkpoint}"
        )
    finally:
        eviction.stop.set()
        node_cluster.uninstall(facts.releases["train"])


def test_two_pods_on_the_trainer_engine_train_as_one_trainjob_and_resume_as_a_group(
    node_cluster: NodeCluster, ddp_run: dict[str, Any], tmp_path: Path
) -> None:
    """The same two ranks as a TrainJob, with Kubeflow Trainer's controller (and JobSet's, which it runs on)
    started beside the node cluster: Trainer admits the TrainJob through its webhook, makes a JobSet of two pods
    on the project's torch-distributed runtime and hands them the group as PET_* variables; both train as one
    group of two, rank 0 alone writing checkpoints. Rank 1 is evicted after the first checkpoint: the runtime's
    failure policy starts the group again and it resumes from the checkpoint, no step lost or repeated, and the
    losses are the job engine's. lfk status finds both ranks (Trainer labels the pods with its JobSet's name,
    not the release's)."""
    engines.start(node_cluster.state, ("trainer",))
    assert {"jobset", "trainer"} <= set(node_cluster.state.extra["engines"])

    def on_trainer(d: dict[str, Any]) -> None:
        two_pods(d)
        d["distributed"]["engine"] = "trainjob"

    spec = variant(tmp_path, "tiny-trainer", on_trainer)
    facts = derive(load_spec(spec))
    output = local(node_cluster.storage, facts.output_dir)
    eviction = RankEviction(node_cluster, facts.releases["train"], output, "trainjob")
    eviction.start()
    started = time.monotonic()
    run = node_cluster.lfk("run", str(spec), "--components", "train", "--timeout", "600", timeout=900)
    try:
        # lfk run follows the ranks by their JobSet's name and waits through the group's restart
        assert run.returncode == 0, run.stdout + run.stderr
        assert re.search(
            r"train: trainjob \S+: \S+-node-0-0-\S+ Running on cpu-0, \S+-node-0-1-\S+ Running", run.stdout
        ), run.stdout

        def finished() -> dict[str, Any] | None:
            jobs = kube.workloads(node_cluster.api, NAMESPACE, facts.releases["train"], "train", "trainjob")
            return next((j for j in jobs if kube.workload_state(j)[0] in ("Complete", "Failed")), None)

        trainjob = wait_for("the two-pod TrainJob", finished, 900, 2)
        eviction.stop.set()
        name = trainjob["metadata"]["name"]
        assert kube.workload_state(trainjob)[0] == "Complete", trainjob["status"]
        assert eviction.evicted, "the first checkpoint never appeared while the pods ran"
        jobset = kube.workload(node_cluster.api, NAMESPACE, name, "jobset")
        assert jobset["status"].get("restarts", 0) >= 1, jobset["status"]  # the group started again
        pods = sorted(
            node_cluster.pods({kube.JOBSET_NAME: name}),
            key=lambda p: p["metadata"]["annotations"][kube.COMPLETION_INDEX],
        )
        assert [p["metadata"]["annotations"][kube.COMPLETION_INDEX] for p in pods] == ["0", "1"], pods
        first, second = (node_cluster.log(p["metadata"]["name"]) for p in pods)
        for rank, log in enumerate((first, second)):
            assert f"distributed: node {rank} of 2, 1 processes, rendezvous {name}-node-0-0.{name}:" in log, (
                log[-3000:]
            )
            assert "world size: 2, device: cpu" in log, log[-3000:]
        saving = [
            bool(re.search(r"Saving model checkpoint to \S+/checkpoint-\d+", log)) for log in (first, second)
        ]
        assert saving == [True, False], saving
        resumed = {int(n) for log in (first, second) for n in RESUMED_FROM.findall(log)}
        assert len(resumed) == 1 and min(resumed) >= eviction.checkpoint, resumed
        [checkpoint] = resumed
        max_steps = load_spec(spec).data["training"]["maxSteps"]
        assert_resumed_once([s for s, _ in losses(output)], checkpoint, max_steps)
        assert_lose_as_the_job_engines_pods(output, ddp_run)
        status = node_cluster.lfk("status", str(spec))
        assert status.returncode == 0, status.stderr
        for rank in (0, 1):
            assert re.search(rf"pod \S+ \(node rank {rank}\) Succeeded on \S+ GPUs 0", status.stdout), (
                status.stdout
            )
        print(
            f"two pods as a TrainJob of Kubeflow Trainer: {time.monotonic() - started:.0f} s for {max_steps} "
            f"steps, rank 1 evicted after checkpoint {eviction.checkpoint}, the group restarted "
            f"{jobset['status']['restarts']} time(s) and resumed from checkpoint {checkpoint}"
        )
    finally:
        eviction.stop.set()
        node_cluster.uninstall(facts.releases["train"])


def test_two_pods_on_the_training_operator_train_as_one_pytorchjob_and_resume(
    node_cluster: NodeCluster, ddp_run: dict[str, Any], tmp_path: Path
) -> None:
    """The same two ranks as a PyTorchJob (a Master and one Worker), with the Kubeflow training operator's
    controller started beside the node cluster: the operator admits it through its webhook, makes both pods and
    a Service per replica and hands them the group (PET_NNODES, PET_NODE_RANK, MASTER_ADDR). The Worker (node
    rank 1) is evicted after the first checkpoint: the operator makes it again, the Master's torch elastic
    agent restarts its rank, both meet again and resume from the checkpoint, no step lost or repeated, and the
    losses are the job engine's; the PyTorchJob never failed."""
    engines.start(node_cluster.state, ("training-operator",))
    assert "training-operator" in node_cluster.state.extra["engines"]

    def on_pytorchjob(d: dict[str, Any]) -> None:
        two_pods(d)
        d["distributed"]["engine"] = "pytorchjob"

    spec = variant(tmp_path, "tiny-pytorchjob", on_pytorchjob)
    facts = derive(load_spec(spec))
    output = local(node_cluster.storage, facts.output_dir)
    eviction = RankEviction(node_cluster, facts.releases["train"], output, "pytorchjob")
    eviction.start()
    started = time.monotonic()
    run = node_cluster.lfk("run", str(spec), "--components", "train", "--timeout", "600", timeout=900)
    try:
        assert run.returncode == 0, run.stdout + run.stderr
        assert re.search(
            r"train: pytorchjob \S+: \S+-master-0 Running on cpu-0, \S+-worker-0 Running", run.stdout
        ), run.stdout

        def finished() -> dict[str, Any] | None:
            jobs = kube.workloads(node_cluster.api, NAMESPACE, facts.releases["train"], "train", "pytorchjob")
            return next((j for j in jobs if kube.workload_state(j)[0] in ("Complete", "Failed")), None)

        job = wait_for("the two-pod PyTorchJob", finished, 900, 2)
        eviction.stop.set()
        name = job["metadata"]["name"]
        assert kube.workload_state(job)[0] == "Complete", job["status"]
        assert eviction.evicted == f"{name}-worker-0", eviction.evicted
        pods = sorted(
            node_cluster.pods({kube.INSTANCE: facts.releases["train"], kube.COMPONENT: "train"}),
            key=kube.node_rank,
        )
        assert [p["metadata"]["name"] for p in pods] == [f"{name}-master-0", f"{name}-worker-0"], pods
        master, worker = (node_cluster.log(p["metadata"]["name"]) for p in pods)
        for rank, log in enumerate((master, worker)):
            assert f"distributed: node {rank} of 2, 1 processes, rendezvous {name}-master-0:" in log, log[
                -3000:
            ]
            assert "world size: 2, device: cpu" in log, log[-3000:]
        saving = [
            bool(re.search(r"Saving model checkpoint to \S+/checkpoint-\d+", log)) for log in (master, worker)
        ]
        assert saving == [True, False], saving
        # the Master's container never stopped: its log holds both rounds, the second resuming
        resumed = {int(n) for log in (master, worker) for n in RESUMED_FROM.findall(log)}
        assert len(resumed) == 1 and min(resumed) >= eviction.checkpoint, resumed
        [checkpoint] = resumed
        max_steps = load_spec(spec).data["training"]["maxSteps"]
        assert_resumed_once([s for s, _ in losses(output)], checkpoint, max_steps)
        assert_lose_as_the_job_engines_pods(output, ddp_run)
        status = node_cluster.lfk("status", str(spec))
        assert status.returncode == 0, status.stderr
        for rank in (0, 1):
            assert re.search(rf"pod \S+ \(node rank {rank}\) Succeeded on \S+ GPUs 0", status.stdout), (
                status.stdout
            )
        print(
            f"two pods as a PyTorchJob: {time.monotonic() - started:.0f} s for {max_steps} steps, the Worker evicted "
            f"after checkpoint {eviction.checkpoint}, replaced by the operator, resumed from checkpoint {checkpoint}"
        )
    finally:
        eviction.stop.set()
        node_cluster.uninstall(facts.releases["train"])
