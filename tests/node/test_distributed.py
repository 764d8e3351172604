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
from contextlib import contextmanager
from dataclasses import dataclass
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

    def __init__(self, cluster: NodeCluster, release: str, output: Path) -> None:
        super().__init__(daemon=True)
        self.cluster, self.release, self.output = cluster, release, output
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
                # every engine's ranks carry the release's labels (a TrainJob's through the chart's patch)
                [pod] = [
                    p for p in self.cluster.pods({kube.INSTANCE: self.release, kube.COMPONENT: "train"})
                    if kube.node_rank(p) == "1" and p["status"].get("phase") == "Running"
                ]  # fmt: skip
                name = pod["metadata"]["name"]
                evict(self.cluster, name)
                self.evicted, self.checkpoint, self.at = name, done[0], datetime.now(UTC)
                return
            time.sleep(0.05)


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


@dataclass
class EngineRun:
    """Two ranks of tiny-cpu run by an engine's own controller through lfk run, rank 1 evicted on the way."""

    spec: Path
    output: Path
    eviction: RankEviction
    started: float
    workload: dict[str, Any]  # the finished JobSet, TrainJob, PyTorchJob
    stdout: str  # lfk run's

    def pods(self, cluster: NodeCluster) -> list[dict[str, Any]]:
        release = derive(load_spec(self.spec)).releases["train"]
        return sorted(
            cluster.pods({kube.INSTANCE: release, kube.COMPONENT: "train"}),
            key=lambda p: int(kube.node_rank(p) or 0),
        )


@contextmanager
def two_ranks_on(cluster: NodeCluster, tmp_path: Path, engine: str) -> Iterator[EngineRun]:
    """The two ranks on the engine through `lfk run --components train` (which follows them and waits through
    a restart), rank 1 evicted after the first checkpoint; the run once its workload completed. The release
    is uninstalled afterwards."""

    def on_engine(d: dict[str, Any]) -> None:
        two_pods(d)
        d["distributed"]["engine"] = engine

    spec = variant(tmp_path, f"tiny-{engine}", on_engine)
    facts = derive(load_spec(spec))
    output = local(cluster.storage, facts.output_dir)
    eviction = RankEviction(cluster, facts.releases["train"], output)
    eviction.start()
    started = time.monotonic()
    run = cluster.lfk("run", str(spec), "--components", "train", "--timeout", "600", timeout=900)
    try:
        assert run.returncode == 0, run.stdout + run.stderr

        def finished() -> dict[str, Any] | None:
            found = kube.workloads(cluster.api, NAMESPACE, facts.releases["train"], "train", engine)
            return next((w for w in found if kube.workload_state(w)[0] in ("Complete", "Failed")), None)

        workload = wait_for(f"the two-pod {engine}", finished, 900, 2)
        eviction.stop.set()
        assert kube.workload_state(workload)[0] == "Complete", workload["status"]
        assert eviction.evicted, "the first checkpoint never appeared while the pods ran"
        yield EngineRun(spec, output, eviction, started, workload, run.stdout)
    finally:
        eviction.stop.set()
        cluster.uninstall(facts.releases["train"])


def assert_one_group_resumed(
    cluster: NodeCluster, run: EngineRun, rendezvous: str, ddp_run: dict[str, Any]
) -> tuple[int, float]:
    """Both ranks met at the rendezvous (the start of its address as rank 0's launcher logs it) as a group of
    two, rank 0 alone saved checkpoints, the group resumed once from a checkpoint no older than the eviction's
    with no step lost or repeated, the losses are the job engine's, and lfk status names both ranks; the
    checkpoint it resumed from and the seconds from the eviction until both ranks had started from it again."""
    logs = [cluster.log(p["metadata"]["name"]) for p in run.pods(cluster)]
    assert len(logs) == 2, run.pods(cluster)
    first = logs[0]
    assert f"Initializing 1 distributed tasks at: {rendezvous}" in first, first[-3000:]
    for log in logs:
        assert "world size: 2, device: cpu" in log, log[-3000:]
    saving = [bool(re.search(r"Saving model checkpoint to \S+/checkpoint-\d+", log)) for log in logs]
    assert saving == [True, False], saving
    # a rank whose container kept running logs both rounds, the second resuming
    resumed = {int(n) for log in logs for n in RESUMED_FROM.findall(log)}
    assert len(resumed) == 1 and min(resumed) >= run.eviction.checkpoint, resumed
    [checkpoint] = resumed
    max_steps = load_spec(run.spec).data["training"]["maxSteps"]
    assert_resumed_once([s for s, _ in losses(run.output)], checkpoint, max_steps)
    assert_lose_as_the_job_engines_pods(run.output, ddp_run)
    status = cluster.lfk("status", str(run.spec))
    assert status.returncode == 0, status.stderr
    for rank in (0, 1):
        assert re.search(rf"pod \S+ \(node rank {rank}\) Succeeded on \S+ GPUs 0", status.stdout), (
            status.stdout
        )
    stamps = [
        datetime.strptime(m, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        for log in logs
        for m in re.findall(
            r"\[INFO\|(\S+ \S+)\] llamafactory\.hparams\.parser:\d+ >> Resuming training from", log
        )
    ]
    assert stamps and run.eviction.at, "no resumed start logged"
    # both ranks started again from the checkpoint: the later one's start ends the group's restart
    return checkpoint, (max(stamps) - run.eviction.at).total_seconds()


def test_two_pods_on_the_jobset_engine_restart_as_a_group_and_resume(
    node_cluster: NodeCluster, ddp_run: dict[str, Any], tmp_path: Path
) -> None:
    """The same two ranks as a JobSet, with JobSet's controller started beside the node cluster: rank 1 is
    evicted after the first checkpoint, its Job fails (a JobSet's Jobs do not retry by themselves), and the
    JobSet's failure policy starts the whole group again, which resumes from the checkpoint with no step lost or
    repeated, rank 0 alone saving; the losses are the job engine's."""
    engines.start(node_cluster.state, ("jobset",))
    with two_ranks_on(node_cluster, tmp_path, "jobset") as run:
        name = run.workload["metadata"]["name"]
        # the group started again
        assert run.workload["status"].get("restarts", 0) >= 1, run.workload["status"]
        checkpoint, seconds = assert_one_group_resumed(node_cluster, run, f"{name}-node-0-0.", ddp_run)
        print(
            f"two pods as a JobSet: {time.monotonic() - run.started:.0f} s for 48 steps, rank 1 evicted after "
            f"checkpoint {run.eviction.checkpoint}, the group restarted {run.workload['status']['restarts']} "
            f"time(s) and resumed from checkpoint {checkpoint} {seconds:.0f} s after the eviction"
        )


def test_two_pods_on_the_trainer_engine_train_as_one_trainjob_and_resume_as_a_group(
    node_cluster: NodeCluster, ddp_run: dict[str, Any], tmp_path: Path
) -> None:
    """The same two ranks as a TrainJob, with Kubeflow Trainer's controller (and JobSet's, which it runs on)
    started beside the node cluster: Trainer admits the TrainJob through its webhook, makes a JobSet of two pods
    on the project's torch-distributed runtime and hands them the group as PET_* variables; both train as one
    group of two, rank 0 alone writing checkpoints. Rank 1 is evicted after the first checkpoint: the runtime's
    failure policy starts the group again and it resumes from the checkpoint, no step lost or repeated, and the
    losses are the job engine's. lfk status finds both ranks by the release's labels (the chart's runtime
    patch puts them on the pods)."""
    engines.start(node_cluster.state, ("trainer",))
    assert {"jobset", "trainer"} <= set(node_cluster.state.extra["engines"])
    with two_ranks_on(node_cluster, tmp_path, "trainjob") as run:
        # lfk run follows the ranks by their JobSet's name and waits through the group's restart
        assert re.search(
            r"train: trainjob \S+: \S+-node-0-0-\S+ Running on cpu-0, \S+-node-0-1-\S+ Running", run.stdout
        ), run.stdout
        name = run.workload["metadata"]["name"]
        jobset = kube.workload(node_cluster.api, NAMESPACE, name, "jobset")
        assert jobset["status"].get("restarts", 0) >= 1, jobset["status"]  # the group started again
        assert [p["metadata"]["labels"][kube.JOBSET_NAME] for p in run.pods(node_cluster)] == [name, name]
        checkpoint, seconds = assert_one_group_resumed(node_cluster, run, f"{name}-node-0-0.{name}:", ddp_run)
        print(
            f"two pods as a TrainJob of Kubeflow Trainer: {time.monotonic() - run.started:.0f} s for 48 steps, "
            f"rank 1 evicted after checkpoint {run.eviction.checkpoint}, the group restarted "
            f"{jobset['status']['restarts']} time(s) and resumed from checkpoint {checkpoint} {seconds:.0f} s after "
            "the eviction"
        )


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
    with two_ranks_on(node_cluster, tmp_path, "pytorchjob") as run:
        assert re.search(
            r"train: pytorchjob \S+: \S+-master-0 Running on cpu-0, \S+-worker-0 Running", run.stdout
        ), run.stdout
        name = run.workload["metadata"]["name"]
        assert run.eviction.evicted == f"{name}-worker-0", run.eviction.evicted
        names = [p["metadata"]["name"] for p in run.pods(node_cluster)]
        assert names == [f"{name}-master-0", f"{name}-worker-0"], names
        checkpoint, seconds = assert_one_group_resumed(node_cluster, run, f"{name}-master-0:", ddp_run)
        print(
            f"two pods as a PyTorchJob: {time.monotonic() - run.started:.0f} s for 48 steps, the Worker evicted "
            f"after checkpoint {run.eviction.checkpoint}, replaced by the operator, resumed from checkpoint "
            f"{checkpoint} {seconds:.0f} s after the eviction"
        )
