"""A served model under a bounded load while one of its replicas is deleted: the node tier asserts that no
request is lost, hack/bench-node.py prints the figures.

The load runs in a pod on the real node (tests/support/load_client.py, mounted from a ConfigMap) and goes
through the vLLM release's Service, as any client in the cluster would; this module deletes one vLLM pod once
part of the load is answered and reads each request's outcome from the load pod's log.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator.errors import KubeError
from generator.ops import kube

CLIENT = Path(__file__).with_name("load_client.py")


@dataclass
class LoadFigures:
    """Each request's (start, end, ok, error), wall-clock seconds, and when the replica was deleted and gone."""

    requests: list[dict[str, Any]]
    killed_pod: str
    deleted_at: float
    gone_at: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if not r["ok"]]

    @property
    def failures_after_deletion(self) -> list[dict[str, Any]]:
        """Requests sent once the deletion had begun that were not answered: the ones that must not exist."""
        return [r for r in self.failures if r["start"] >= self.deleted_at]

    def latency(self, percent: float) -> float:
        ordered = sorted(float(r["end"] - r["start"]) for r in self.requests if r["ok"])
        if not ordered:
            return math.nan
        return ordered[min(len(ordered) - 1, math.ceil(percent / 100 * len(ordered)) - 1)]

    def summary(self) -> str:
        after = sum(r["start"] >= self.deleted_at for r in self.requests)
        during = (
            "the load outlived it" if self.gone_at and self.last_end >= self.gone_at else "load ended first"
        )
        gone = (
            f"{self.gone_at - self.deleted_at:.1f} s after"
            if self.gone_at
            else "not gone when the load ended"
        )
        return (
            f"{len(self.requests)} requests, {len(self.failures)} failed "
            f"({len(self.failures_after_deletion)} of the {after} sent after the deletion began); latency p50 "
            f"{self.latency(50):.2f} s, p90 {self.latency(90):.2f} s, p99 {self.latency(99):.2f} s, "
            f"max {self.latency(100):.2f} s; replica {self.killed_pod} deleted, gone {gone} ({during})"
        )

    @property
    def last_end(self) -> float:
        return max((r["end"] for r in self.requests), default=0.0)


def _delete(api: Any, path: str) -> None:
    try:
        kube.request(api, "DELETE", path)
    except KubeError as exc:
        if exc.status != 404:
            raise


def _results(log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def run_with_a_replica_killed(
    api: Any,
    namespace: str,
    release: str,
    model: str,
    image: str,
    placement: dict[str, Any],
    requests: int = 120,
    concurrency: int = 4,
    kill_after: int = 30,
    timeout: float = 600,
) -> LoadFigures:
    """Send `requests` chat completions through the release's Service (port 8000) from a pod and delete one
    of the release's vLLM pods (with its own grace period, as a drain or a rollout would) once `kill_after`
    are answered. `placement`: the load pod's nodeSelector and tolerations."""
    name = f"{release}-load"[:63]
    cm_path = f"/api/v1/namespaces/{namespace}/configmaps"
    pod_path = f"/api/v1/namespaces/{namespace}/pods"
    kube.request(api, "POST", cm_path, json={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
        "data": {"load_client.py": CLIENT.read_text(encoding="utf-8")},
    })  # fmt: skip
    restricted = {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True, "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }  # fmt: skip
    kube.request(api, "POST", pod_path, json={
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "load"}},
        "spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False, **placement,
            "containers": [{
                "name": "load", "image": image, "imagePullPolicy": "Never", "securityContext": restricted,
                "command": ["python3", "/load/load_client.py", f"http://{release}:8000", model,
                            str(requests), str(concurrency)],
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                "volumeMounts": [{"name": "load", "mountPath": "/load", "readOnly": True}],
            }],
            "volumes": [{"name": "load", "configMap": {"name": name}}],
        },
    })  # fmt: skip
    try:
        return _kill_during(api, namespace, release, name, kill_after, timeout)
    finally:
        _delete(api, f"{pod_path}/{name}")
        _delete(api, f"{cm_path}/{name}")


def _kill_during(
    api: Any, namespace: str, release: str, load_pod: str, kill_after: int, timeout: float
) -> LoadFigures:
    deadline = time.monotonic() + timeout
    log = ""
    while len(_results(log)) < kill_after:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the load pod answered {len(_results(log))} requests in {timeout:.0f} s:\n{log}"
            )
        time.sleep(0.3)
        log = _log(api, namespace, load_pod)
    running = [
        p for p in kube.pods(api, namespace, {kube.INSTANCE: release, kube.COMPONENT: "vllm"})
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]  # fmt: skip
    assert len(running) >= 2, f"{release} has {len(running)} running replicas; the test needs two"
    victim = running[0]["metadata"]["name"]
    deleted_at = time.time()
    kube.request(api, "DELETE", f"/api/v1/namespaces/{namespace}/pods/{victim}")
    figures = LoadFigures([], victim, deleted_at)
    watcher = threading.Thread(target=_watch_gone, args=(api, namespace, victim, figures), daemon=True)
    watcher.start()
    while "LOAD DONE" not in log:
        if time.monotonic() > deadline:
            raise AssertionError(f"the load did not finish within {timeout:.0f} s:\n{log[-4000:]}")
        time.sleep(0.5)
        log = _log(api, namespace, load_pod)
    figures.requests = _results(log)
    watcher.join(timeout=1)
    return figures


def _log(api: Any, namespace: str, pod: str) -> str:
    """The load pod's log so far (a note instead while it has not started, which holds no result line)."""
    return kube.pod_log_tail(api, namespace, pod, "load", lines=10_000)


def _watch_gone(api: Any, namespace: str, pod: str, figures: LoadFigures) -> None:
    end = time.monotonic() + 300
    while time.monotonic() < end:
        try:
            kube.request(api, "GET", f"/api/v1/namespaces/{namespace}/pods/{pod}", retries=0)
        except KubeError as exc:
            if exc.status == 404:
                figures.gone_at = time.time()
                return
        time.sleep(0.2)
