"""Waiting for a workload: poll it until it finishes, fails, runs out of time, or a watcher sees a reason to
stop (a pod that will never start). Every ending is an Outcome the caller reads; nothing is raised for it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykube

from . import kube


@dataclass(frozen=True)
class Outcome:
    ok: bool  # the Job completed, the Deployment is available
    reason: str = ""  # why not
    pod: dict[str, Any] | None = None  # the pod that explains it, when one does


# sees every state of the object on the way; returning an Outcome ends the wait with it
Watch = Callable[[dict[str, Any]], Outcome | None]


def until(
    fetch: Callable[[], dict[str, Any]],
    verdict: Callable[[dict[str, Any]], Outcome | None],
    timeout: float,
    watch: Watch | None = None,
    interval: float = 1.0,
) -> Outcome:
    """Poll fetch() until verdict() or watch() has an Outcome, or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        obj = fetch()
        if watch is not None and (stop := watch(obj)) is not None:
            return stop
        if (ending := verdict(obj)) is not None:
            return ending
        if time.monotonic() > deadline:
            return Outcome(False, f"not finished after {timeout:.0f} s")
        time.sleep(interval)


def job_verdict(job: dict[str, Any]) -> Outcome | None:
    """Complete on any Complete=True condition (Job controllers put SuccessCriteriaMet first), or Failed."""
    state, reason = kube.workload_state(job)
    if state == "Complete":
        return Outcome(True)
    if state == "Failed":
        return Outcome(False, reason)
    return None


def deployment_verdict(deployment: dict[str, Any]) -> Outcome | None:
    """Available with every replica updated and ready, and the newest generation observed."""
    status = deployment.get("status", {})
    wanted = deployment["spec"].get("replicas", 1)
    if (
        kube.is_true(deployment, "Available")
        and status.get("updatedReplicas", 0) == wanted
        and status.get("readyReplicas", 0) == wanted
        and status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
    ):
        return Outcome(True)
    return None


def job(
    api: pykube.HTTPClient,
    namespace: str,
    name: str,
    timeout: float,
    watch: Watch | None = None,
    engine: str = "job",
    interval: float = 1.0,
) -> Outcome:
    """Wait for a Job (or an engine's workload) to complete or fail."""
    return until(lambda: kube.workload(api, namespace, name, engine), job_verdict, timeout, watch, interval)


def deployment(
    api: pykube.HTTPClient,
    namespace: str,
    name: str,
    timeout: float,
    watch: Watch | None = None,
    interval: float = 1.0,
) -> Outcome:
    """Wait for a Deployment to become available; on timeout the reason is its Progressing message."""
    last: dict[str, Any] = {}

    def fetch() -> dict[str, Any]:
        last.clear()
        last.update(kube.deployment(api, namespace, name))
        return last

    outcome = until(fetch, deployment_verdict, timeout, watch, interval)
    if not outcome.ok and outcome.pod is None and outcome.reason.startswith("not finished"):
        progressing = kube.conditions(last).get("Progressing", {})
        return Outcome(False, progressing.get("message") or f"not available after {timeout:.0f} s")
    return outcome
