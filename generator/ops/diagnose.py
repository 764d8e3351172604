"""Why a pod does not get going, in words a person can act on: a start-up state that never resolves by
itself, a pod the scheduler cannot place, a container the kubelet killed for memory; and the pod's last
events and log lines to go with it."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pykube

from . import kube

# waiting reasons of containers that never resolve by themselves
FATAL_WAITING = {
    "ErrImagePull",
    "ImagePullBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "InvalidImageName",
    "CrashLoopBackOff",
}
# where each component's memory is set in the spec
MEMORY_SETTING = {
    "train": "resources.memory",
    "merge": "merge.resources.memory",
    "vllm": "serve.resources.memory",
    "webui": "webui.resources.memory",
}


def container_statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    status = pod.get("status", {})
    return list(status.get("initContainerStatuses", []) or []) + list(
        status.get("containerStatuses", []) or []
    )


def waiting_reasons(pod: dict[str, Any]) -> list[str]:
    return [
        reason
        for s in pod.get("status", {}).get("containerStatuses", []) or []
        if (reason := s.get("state", {}).get("waiting", {}).get("reason"))
    ]


def oom_killed(pod: dict[str, Any]) -> str | None:
    """The container the kubelet killed for exceeding its memory limit (now or in its last run), if any."""
    for status in container_statuses(pod):
        for state in (status.get("state", {}), status.get("lastState", {})):
            if state.get("terminated", {}).get("reason") == "OOMKilled":
                return str(status["name"])
    return None


def memory_limit(pod: dict[str, Any], container: str) -> str:
    for c in pod["spec"].get("initContainers", []) + pod["spec"].get("containers", []):
        if c["name"] == container:
            return str(c.get("resources", {}).get("limits", {}).get("memory", "no limit"))
    return "no limit"


def oom_advice(pod: dict[str, Any], component: str) -> str | None:
    """`OOMKilled` with the limit and the spec setting that raises it, when the pod was killed for memory."""
    container = oom_killed(pod)
    if container is None:
        return None
    setting = MEMORY_SETTING.get(component, "the component's resources.memory")
    limit = memory_limit(pod, container)
    return (
        f"container {container} was OOMKilled: it used more than its memory limit ({limit}); "
        f"raise {setting} in the spec"
    )


def _timestamp(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def stuck(pods: list[dict[str, Any]], pending_timeout: float) -> tuple[dict[str, Any], str] | None:
    """A pod that will not get going by itself: a fatal container state, or unschedulable for too long."""
    now = time.time()
    for pod in pods:
        for status in container_statuses(pod):
            waiting = status.get("state", {}).get("waiting", {})
            if waiting.get("reason") in FATAL_WAITING:
                detail = f": {waiting['message']}" if waiting.get("message") else ""
                return pod, f"container {status['name']} is {waiting['reason']}{detail}"
        scheduled = kube.conditions(pod).get("PodScheduled", {})
        if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            since = _timestamp(scheduled.get("lastTransitionTime"))
            if since and now - since > pending_timeout:
                return pod, f"unschedulable for {now - since:.0f} s: {scheduled.get('message', '')}"
    return None


def describe_pod(
    api: pykube.HTTPClient, namespace: str, pod: dict[str, Any], container: str | None = None
) -> str:
    """The pod's node and phase, its last events and its last log lines, indented for a report."""
    name = pod["metadata"]["name"]
    node = pod["spec"].get("nodeName") or "no node"
    events = kube.events_of(api, namespace, "Pod", name)
    started = bool(pod["spec"].get("nodeName"))
    logs = kube.pod_log_tail(api, namespace, name, container) if started else "(never started)"
    lines = [f"  pod {name} on {node}, phase {pod['status'].get('phase')}", "  last events:"]
    lines += [f"    {e}" for e in events] or ["    (none)"]
    lines += ["  last log lines:"] + [f"    {line}" for line in logs.splitlines()[-20:]]
    return "\n".join(lines)
