#!/usr/bin/env python3
"""Scale benchmark of the chart on the local control plane; prints figures, asserts nothing.

100 fake nodes x 8 GPUs (800 GPUs), 200 experiments' train releases asking for 1, 2, 4 or 8 GPUs each,
queued in Kueue (a ClusterQueue whose GPU quota is the nodes' 800). For each way of scheduling (`lfk cluster
up --scheduling`: spread, Kubernetes' default, and binpack, the recommended one) a cluster of its own prints
the wall time to install them all, the time from a Workload's creation to Kueue's admission, the time until
every schedulable pod is bound, GPUs allocated against capacity per node (over-commit must be zero), how
many pods wait and why, and how many are stranded (waiting while as many GPUs are free, spread over nodes);
then a table of both side by side. With --memory it also deletes everything after each round and reports
the control plane's memory at the start, at peak and after deletion (with --rounds 2: whether what stays
grows).

    .venv/bin/python hack/bench-cluster.py [--nodes 100] [--experiments 200] [--parallel 4]
        [--scheduling spread,binpack] [--rounds 1] [--memory] [--no-kueue]
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator.cluster import lifecycle, nodes  # noqa: E402
from generator.cluster.state import State  # noqa: E402
from generator.core.render import render  # noqa: E402
from generator.core.spec import spec_from_text  # noqa: E402
from generator.core.write import write  # noqa: E402
from generator.errors import KubeError  # noqa: E402
from generator.ops import kube  # noqa: E402
from generator.project import built_tool  # noqa: E402

SPEC = """
name: bench-{i:03d}
namespace: {namespace}
storage: {{existingClaim: llm-storage}}
model: {{path: /storage/models/llama-3.1-8b-instruct}}
data: {{datasets: [qa_dataset]}}
resources: {{gpus: {gpus}, gpu: {{memoryGiB: 80}}, cpu: 8, memory: 64Gi}}
training: {{learningRate: {lr}}}
{queue}
webui: {{enabled: false}}
serve: {{enabled: false}}
merge: {{enabled: false}}
"""


def rss_mib(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[name] = int(line.split()[1]) / 1024
        except OSError:
            out[name] = 0.0
    return out


def get(state: State, component: str, path: str) -> bytes:
    """GET from the apiserver (as cluster admin, through the project's API client) or from etcd; the body."""
    import urllib.request

    if component == "kube-apiserver":
        api = state.api()
        return bytes(api.session.get(api.url + path, timeout=60).content)
    with urllib.request.urlopen(f"http://127.0.0.1:{state.ports['etcd']}{path}", timeout=60) as r:
        return bytes(r.read())


def live_heap_mib(state: State) -> dict[str, float]:
    """Live Go heap of the apiserver and etcd right after a forced collection (pprof's heap?gc=1), read as
    go_memstats_heap_alloc_bytes: what the objects they still hold cost, without garbage not yet collected or
    memory Go keeps mapped for reuse, which RSS and heap_inuse also count."""
    out = {}
    for component in ("kube-apiserver", "etcd"):
        get(state, component, "/debug/pprof/heap?gc=1")  # a gzipped profile: only its GC matters
        for line in get(state, component, "/metrics").decode().splitlines():
            if line.startswith("go_memstats_heap_alloc_bytes "):
                out[component] = float(line.split()[1]) / 2**20
    return out


def watch_cache(state: State, top: int = 4) -> str:
    """The apiserver's largest watch caches (events it keeps per resource): where deleted objects linger."""
    sizes = []
    for line in get(state, "kube-apiserver", "/metrics").decode().splitlines():
        if line.startswith("watch_cache_capacity{"):
            resource = line.split('resource="')[1].split('"')[0]
            sizes.append((float(line.rsplit(" ", 1)[1]), resource))
    return ", ".join(f"{r} {int(n)}" for n, r in sorted(sizes, reverse=True)[:top])


def fmt_mib(heap: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f} MiB" for k, v in heap.items())


def fmt_rss(rss: dict[str, float]) -> str:
    parts = [
        f"{k} {v:.0f}"
        for k, v in rss.items()
        if k in ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler")
    ]
    return f"{sum(rss.values()):.0f} MiB ({', '.join(parts)}, ...)"


KUEUE = "/apis/kueue.x-k8s.io/v1beta2"
QUEUE = "bench"


def kueue_objects(api: object, nodes_count: int) -> None:
    """A ResourceFlavor and a ClusterQueue whose quota is the simulated nodes' capacity."""
    cluster_queue = {
        "namespaceSelector": {},
        "resourceGroups": [{
            "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
            "flavors": [{"name": "gpu", "resources": [
                {"name": "cpu", "nominalQuota": str(nodes_count * 128)},
                {"name": "memory", "nominalQuota": f"{nodes_count}Ti"},
                {"name": "nvidia.com/gpu", "nominalQuota": str(nodes_count * 8)},
            ]}],
        }],
    }  # fmt: skip
    for path, kind, body in (
        ("/resourceflavors", "ResourceFlavor", {"metadata": {"name": "gpu"}}),
        ("/clusterqueues", "ClusterQueue", {"metadata": {"name": QUEUE}, "spec": cluster_queue}),
    ):
        kube.request(
            api, "POST", f"{KUEUE}{path}", json={"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": kind, **body}
        )


def admission_seconds(api: object, namespace: str) -> list[float]:
    """Per Kueue Workload in namespace: seconds from its creation to its Admitted condition (1 s resolution)."""
    from datetime import datetime

    def at(text: str) -> float:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").timestamp()

    out = []
    for item in kube.request(api, "GET", f"{KUEUE}/namespaces/{namespace}/workloads").get("items", []):
        admitted = kube.conditions(item).get("Admitted", {})
        if admitted.get("status") == "True":
            out.append(at(admitted["lastTransitionTime"]) - at(item["metadata"]["creationTimestamp"]))
    return out


def install_round(
    state: State, helm: str, args: argparse.Namespace, namespace: str, delete: bool
) -> dict[str, object]:
    """One round: storage, 200 train releases installed, the scheduler settled, figures printed (and returned),
    then (delete) everything deleted again (namespace and volume)."""
    api = state.api()
    env = {**os.environ, "KUBECONFIG": str(state.kubeconfig)}
    rng = random.Random(42)
    volume = f"{namespace}-storage"
    kube.request(api, "POST", "/api/v1/namespaces", json={"metadata": {"name": namespace}})
    kube.request(api, "POST", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", json={
        "metadata": {"name": "llm-storage"},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": volume,
                 "resources": {"requests": {"storage": "1Ti"}}},
    })  # fmt: skip
    kube.request(api, "POST", "/api/v1/persistentvolumes", json={
        "metadata": {"name": volume},
        "spec": {"capacity": {"storage": "1Ti"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                 "nfs": {"server": "nfs.example.internal", "path": "/llm"},
                 "claimRef": {"namespace": namespace, "name": "llm-storage"}},
    })  # fmt: skip
    if args.kueue:
        kube.request(api, "POST", f"{KUEUE}/namespaces/{namespace}/localqueues", json={
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
            "metadata": {"name": QUEUE}, "spec": {"clusterQueue": QUEUE},
        })  # fmt: skip

    work = Path(tempfile.mkdtemp(prefix="lfk-bench-values-"))
    values = []
    wanted_gpus = 0
    for i in range(args.experiments):
        gpus = rng.choice([1, 2, 4, 8])
        wanted_gpus += gpus
        text = SPEC.format(
            i=i,
            gpus=gpus,
            lr=rng.choice(["1.0e-4", "2.0e-4"]),
            namespace=namespace,
            queue=f"queue: {QUEUE}" if args.kueue else "",
        )
        folder = work / f"bench-{i:03d}"
        folder.mkdir()
        spec = spec_from_text(text, str(folder / "experiment.yaml"))
        write(render(spec, folder), folder)
        values.append((f"bench-{i:03d}-train", folder / "train.yaml"))
    print(f"{args.experiments} experiments rendered, asking for {wanted_gpus} GPUs of {args.nodes * 8}")

    def install(item: tuple[str, Path]) -> float:
        t = time.monotonic()
        subprocess.run(
            [helm, "install", item[0], str(ROOT / "charts/llama-factory"), "-n", namespace, "-f", str(item[1]),
             "--set-string", "train.podAnnotations.lfk\\.local/run-duration=2h"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        return time.monotonic() - t

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
        durations = list(pool.map(install, values))
    install_wall = time.monotonic() - start
    print(
        f"installed {len(values)} releases in {install_wall:.1f} s wall ({args.parallel} at a time; "
        f"helm install median {sorted(durations)[len(durations) // 2]:.2f} s)"
    )

    # every pod that can be bound is bound when the bound count stops changing and the rest are unschedulable
    capacity = args.nodes * 8
    settle_start = time.monotonic()
    last, stable_since = (-1, -1), time.monotonic()
    while True:
        pods = kube.pods(api, namespace, {})
        bound = sum(1 for p in pods if p["spec"].get("nodeName"))
        unschedulable = sum(
            1 for p in pods if kube.conditions(p).get("PodScheduled", {}).get("reason") == "Unschedulable"
        )
        # with Kueue a Job makes its pod once admitted, and one beyond the quota waits as a Workload
        expected = len(admission_seconds(api, namespace)) if args.kueue else len(values)
        if (bound, len(pods)) != last:
            last, stable_since = (bound, len(pods)), time.monotonic()
        if (
            len(pods) == expected
            and bound + unschedulable == len(pods)
            and time.monotonic() - stable_since > 5
        ):
            break
        if time.monotonic() - settle_start > 600:
            print("gave up waiting for the scheduler to settle after 600 s")
            break
        time.sleep(1)
    queued = (
        f", {len(values) - len(pods)} Jobs not admitted by Kueue (beyond the quota)" if args.kueue else ""
    )
    print(
        f"every schedulable pod bound {stable_since - start:.1f} s after the first install: {bound} bound, "
        f"{unschedulable} waiting{queued}"
    )
    print(f"at peak: live Go heap {fmt_mib(live_heap_mib(state))}; RSS {fmt_rss(rss_mib(state.pids))}")

    per_node: dict[str, int] = collections.Counter()
    for p in pods:
        if p["spec"].get("nodeName"):
            per_node[p["spec"]["nodeName"]] += kube.gpu_request(p)
    over = {n: g for n, g in per_node.items() if g > 8}
    full = sum(1 for g in per_node.values() if g == 8)
    allocated = sum(per_node.values())
    histogram = collections.Counter(per_node.get(f"kwok-gpu-{i}", 0) for i in range(args.nodes))
    print(
        f"GPUs allocated {allocated} of {capacity}; nodes full {full}, by GPUs in use: {dict(sorted(histogram.items()))}"
    )
    print(f"over-committed nodes: {len(over)} {over if over else ''}")
    waiting_gpus: collections.Counter[int] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    for p in pods:
        cond = kube.conditions(p).get("PodScheduled", {})
        if cond.get("reason") == "Unschedulable":
            waiting_gpus[kube.gpu_request(p)] += 1
            message = cond.get("message", "")
            reasons[
                "Insufficient nvidia.com/gpu" if "Insufficient nvidia.com/gpu" in message else message[:80]
            ] += 1
    print(
        f"pods waiting for GPUs: {sum(waiting_gpus.values())} (by GPUs asked: {dict(sorted(waiting_gpus.items()))}); why: {dict(reasons)}"
    )
    free_by_node = [8 - per_node.get(f"kwok-gpu-{i}", 0) for i in range(args.nodes)]
    # stranded: waiting although at least as many GPUs are free in the cluster, only not on one node
    stranded = sum(n for gpus, n in waiting_gpus.items() if gpus <= sum(free_by_node))
    admission = sorted(admission_seconds(api, namespace)) if args.kueue else []
    if admission:
        print(
            f"Kueue admitted {len(admission)} Workloads: from creation to admission median "
            f"{admission[len(admission) // 2]:.0f} s, longest {admission[-1]:.0f} s"
        )
    print(
        f"stranded pods (waiting while {sum(free_by_node)} GPUs are free, on no one node enough): {stranded}"
    )
    result: dict[str, object] = {
        "stranded": stranded,
        "waiting": sum(waiting_gpus.values()),
        "not admitted": len(values) - len(pods) if args.kueue else "-",
        "allocated": f"{allocated} of {capacity}",
        "full nodes": full,
        "bound after": f"{stable_since - start:.0f} s",
        "admission": f"median {admission[len(admission) // 2]:.0f} s, max {admission[-1]:.0f} s"
        if admission
        else "-",
    }
    if not delete:
        return result

    start = time.monotonic()
    kube.request(api, "DELETE", f"/api/v1/namespaces/{namespace}")
    while True:
        try:
            kube.request(api, "GET", f"/api/v1/namespaces/{namespace}")
        except KubeError as exc:
            if exc.status == 404:
                break
            raise
        time.sleep(1)
    kube.request(api, "DELETE", f"/api/v1/persistentvolumes/{volume}")
    print(f"deleted everything (namespace {namespace}, volume {volume}) in {time.monotonic() - start:.1f} s")
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument(
        "--scheduling",
        default="spread,binpack",
        help="the ways of scheduling to compare, each on a cluster of its own (lfk cluster up --scheduling)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="install rounds per cluster, each in a namespace of its own",
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="delete everything after each round and measure the memory the control plane keeps",
    )
    parser.add_argument(
        "--no-kueue",
        dest="kueue",
        action="store_false",
        help="no Kueue: the releases go straight to the scheduler",
    )
    parser.add_argument(
        "--apiserver-arg",
        action="append",
        default=[],
        help="an extra kube-apiserver flag, e.g. --watch-cache=false to see what its caches keep",
    )
    args = parser.parse_args()
    helm = str(built_tool("helm", "HELM3_VERSION"))
    results = {}
    for scheduling in args.scheduling.split(","):
        print(f"=== scheduling: {scheduling}{' with Kueue' if args.kueue else ''}")
        results[scheduling] = bench_cluster(args, helm, scheduling)
    if len(results) > 1:
        print(
            f"=== side by side ({args.experiments} experiments of 1, 2, 4 or 8 GPUs on {args.nodes} x 8 GPUs)"
        )
        names = list(results)
        print(f"{'':24}" + "".join(f"{n:>28}" for n in names))
        for key in results[names[0]]:
            print(f"{key:24}" + "".join(f"{results[n][key]!s:>28}" for n in names))
    return 0


def bench_cluster(args: argparse.Namespace, helm: str, scheduling: str) -> dict[str, object]:
    """One cluster scheduling this way: its rounds, and the first round's figures."""
    directory = Path(tempfile.mkdtemp(prefix="lfk-bench-"))
    measure_memory = args.memory
    try:
        start = time.monotonic()
        state, _ = lifecycle.up(
            directory,
            nodes.default_nodes(args.nodes, 8),
            profiling=True,
            apiserver_args=tuple(args.apiserver_arg),
            engines=("kueue",) if args.kueue else (),
            scheduling=scheduling,
        )
        if args.kueue:
            kueue_objects(state.api(), args.nodes)
        print(f"control plane with {args.nodes} nodes x 8 GPUs up in {time.monotonic() - start:.1f} s")
        rss_start, heap_start = rss_mib(state.pids), live_heap_mib(state)
        print(f"start: live Go heap {fmt_mib(heap_start)}; RSS {fmt_rss(rss_start)}")
        leftover: list[dict[str, float]] = []
        first: dict[str, object] = {}
        for round_no in range(1, args.rounds + 1):
            print(f"--- round {round_no} of {args.rounds}")
            result = install_round(state, helm, args, f"bench-{round_no}", delete=measure_memory)
            first = first or result
            if not measure_memory:
                continue
            # The apiserver compacts etcd every 5 minutes; sample until the live heap is back near its start,
            # or 5 minutes have passed.
            waited = 0
            while True:
                time.sleep(30)
                waited += 30
                heap = live_heap_mib(state)
                if all(heap[k] <= heap_start[k] * 1.25 + 16 for k in heap_start) or waited >= 300:
                    break
            leftover.append(heap)
            print(
                f"{waited} s after deletion: live Go heap {fmt_mib(heap)}; RSS {fmt_rss(rss_mib(state.pids))}"
            )
        if measure_memory:
            memory_verdict(state, heap_start, leftover)
        return first
    finally:
        lifecycle.down(directory)


def memory_verdict(state: State, heap_start: dict[str, float], leftover: list[dict[str, float]]) -> None:
    print(f"apiserver watch cache capacities (events kept per resource): {watch_cache(state)}")
    for name in heap_start:
        back = leftover[-1][name] <= heap_start[name] * 1.25 + 16
        trail = " -> ".join(f"{h[name]:.0f}" for h in leftover)
        verdict = "yes" if back else "NO"
        if not back and len(leftover) > 1:
            bounded = leftover[-1][name] <= leftover[0][name] * 1.1 + 16
            verdict += (
                ", but bounded: the later rounds left no more than the first"
                if bounded
                else ", and it GREW round after round"
            )
        print(
            f"memory came back, {name}: {verdict} (live heap {heap_start[name]:.0f} MiB at start, "
            f"after each round {trail} MiB)"
        )


if __name__ == "__main__":
    sys.exit(main())
