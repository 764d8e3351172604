"""Operating an experiment on a cluster: run its releases in order, and report where they stand.

`run` installs train -> merge -> vllm (then `helm test`) -> webui, waiting for each, skipping what the
current run id already completed, and stops at the first failure with the step, the pod, its events and its
last log lines. `status` gathers, per release, the helm status, the Job or Deployment, its pods, nodes and
GPUs, and the training progress from trainer_log.jsonl. Both print nothing: they report through a callback
and return data; the CLI decides how it looks.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pykube

from . import kube, releases, trainlog
from .facts import STORAGE_ROOT, Facts, derive
from .render import CHART_DIR
from .spec import Spec

Report = Callable[[str], None]
# waiting for container start-up problems that never resolve by themselves
FATAL_WAITING = {
    "ErrImagePull",
    "ImagePullBackOff",
    "CreateContainerConfigError",
    "InvalidImageName",
    "CrashLoopBackOff",
}


class RunFailed(Exception):
    """A step failed; the message has the step, the pod, its last events and log lines."""


@dataclass
class Target:
    """One experiment on one cluster, and how to reach it."""

    spec: Spec
    facts: Facts
    helm: str
    kubeconfig: str | None = None
    context: str | None = None
    storage_root: Path | None = None
    _api: Any = None

    @classmethod
    def of(
        cls,
        spec: Spec,
        helm: str,
        kubeconfig: str | None = None,
        context: str | None = None,
        storage_root: Path | None = None,
    ) -> Target:
        return cls(spec, derive(spec), helm, kubeconfig, context, storage_root)

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = kube.client(self.kubeconfig, self.context)
        return self._api

    @property
    def namespace(self) -> str:
        return self.facts.namespace

    def helm_args(self, *args: str) -> list[str]:
        command = [self.helm, *args]
        if self.kubeconfig:
            command += ["--kubeconfig", self.kubeconfig]
        if self.context:
            command += ["--kube-context", self.context]
        return command

    def helm_run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.helm_args(*args), capture_output=True, text=True, check=False)


# ------------------------------------------------------------------------------------------------ steps
@dataclass(frozen=True)
class Step:
    component: str
    release: str
    commands: list[list[str]]  # what runs: helm upgrade --install, and helm test for vllm


def plan(target: Target, components: list[str]) -> list[Step]:
    """The helm commands of each selected component, in the seed's order."""
    steps = []
    for component in releases.INSTALL_ORDER:
        if component not in components or component not in target.facts.releases:
            continue
        release = target.facts.releases[component]
        install = releases.install_command(target.facts, component, target.spec.folder, target.helm)
        commands = [target.helm_args(*install[1:])]
        if component == "vllm":
            commands.append(
                target.helm_args("test", release, "--namespace", target.namespace, "--timeout", "10m")
            )
        steps.append(Step(component, release, commands))
    return steps


def engine_of(target: Target, component: str) -> str:
    """The engine running a component's workload: the training engine for train, plain Jobs for merge."""
    return str(target.spec.data["distributed"]["engine"]) if component == "train" else "job"


def completed_run(target: Target, component: str) -> str | None:
    """Name of a workload of this component that completed for the current run id, if any."""
    release = target.facts.releases[component]
    for job in kube.workloads(target.api, target.namespace, release, component, engine_of(target, component)):
        done = kube.workload_state(job)[0] == "Complete"
        if done and job["metadata"].get("labels", {}).get(kube.RUN_ID) == target.facts.run_id:
            return str(job["metadata"]["name"])
    return None


def values_unchanged(target: Target, component: str) -> bool:
    """The release is deployed with exactly the values on disk."""
    release = target.facts.releases[component]
    result = target.helm_run("get", "values", release, "--namespace", target.namespace, "--output", "json")
    if result.returncode != 0:
        return False
    import yaml

    wanted = yaml.safe_load((target.spec.folder / f"{component}.yaml").read_text(encoding="utf-8"))
    return bool(json.loads(result.stdout or "null") == wanted)


def deployed_unchanged(target: Target, component: str) -> bool:
    """The release is deployed with exactly the values on disk, and its Deployment is available."""
    release = target.facts.releases[component]
    if not values_unchanged(target, component):
        return False
    try:
        deployment = pykube.Deployment.objects(target.api, namespace=target.namespace).get(name=release).obj
    except pykube.exceptions.ObjectDoesNotExist:
        return False
    return kube.is_true(deployment, "Available")


def run(
    target: Target,
    components: list[str],
    report: Report,
    timeout: float = 6 * 3600,
    pending_timeout: float = 300,
) -> None:
    """Run the selected steps in order; raise RunFailed at the first failure."""
    for step in plan(target, components):
        if step.component in ("train", "merge") and (done := completed_run(target, step.component)):
            report(f"{step.component}: run {target.facts.run_id} already completed (job {done}); skipped")
            continue
        if step.component in ("vllm", "webui") and deployed_unchanged(target, step.component):
            report(f"{step.component}: {step.release} is deployed with these values and available; skipped")
            continue
        if step.component in ("train", "merge") and values_unchanged(target, step.component):
            # still running (or waiting in a queue) with these values: waiting is all there is to do. An upgrade
            # would also put `suspend: true` back on a Job Kueue has admitted, stopping its pods.
            report(f"{step.component}: {step.release} is installed with these values; waiting for it")
        else:
            report(f"{step.component}: $ {' '.join(step.commands[0])}")
            result = subprocess.run(step.commands[0], capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise RunFailed(f"{step.component}: helm failed:\n{(result.stderr or result.stdout).strip()}")
        if step.component in ("train", "merge"):
            _wait_job(target, step, report, timeout, pending_timeout)
        else:
            _wait_deployment(target, step, report, timeout, pending_timeout)
        if step.component == "vllm":
            _helm_test(target, step, report)


def _describe_pod(target: Target, pod: dict[str, Any], container: str | None = None) -> str:
    name = pod["metadata"]["name"]
    node = pod["spec"].get("nodeName") or "no node"
    events = kube.events_of(target.api, target.namespace, "Pod", name)
    logs = (
        kube.pod_log_tail(target.api, target.namespace, name, container)
        if pod["spec"].get("nodeName")
        else "(never started)"
    )
    lines = [f"  pod {name} on {node}, phase {pod['status'].get('phase')}", "  last events:"]
    lines += [f"    {e}" for e in events] or ["    (none)"]
    lines += ["  last log lines:"] + [f"    {line}" for line in logs.splitlines()[-20:]]
    return "\n".join(lines)


def _stuck(
    target: Target, pods: list[dict[str, Any]], pending_timeout: float
) -> tuple[dict[str, Any], str] | None:
    """A pod that will not get going by itself: unschedulable for too long, or a fatal container state."""
    now = time.time()
    for pod in pods:
        for status in pod["status"].get("containerStatuses", []) + pod["status"].get(
            "initContainerStatuses", []
        ):
            reason = status.get("state", {}).get("waiting", {}).get("reason")
            if reason in FATAL_WAITING:
                return pod, f"container {status['name']} is {reason}"
        scheduled = kube.conditions(pod).get("PodScheduled", {})
        if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            since = _timestamp(scheduled.get("lastTransitionTime"))
            if since and now - since > pending_timeout:
                return pod, f"unschedulable for {now - since:.0f} s: {scheduled.get('message', '')}"
    return None


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _progress_line(target: Target) -> str:
    progress = read_progress(target)
    if progress is None:
        return ""
    line = f" {progress.bar()} loss {progress.loss} lr {progress.lr} elapsed {progress.elapsed} remaining {progress.remaining}"
    return line + "".join(f"\n    ! {p}" for p in progress.problems)


def _wait_job(target: Target, step: Step, report: Report, timeout: float, pending_timeout: float) -> None:
    engine = engine_of(target, step.component)
    current = [
        w
        for w in kube.workloads(target.api, target.namespace, step.release, step.component, engine)
        if not w["metadata"].get("deletionTimestamp")
    ]
    if not current:
        raise RunFailed(f"{step.component}: helm installed {step.release}, but no {engine} of it exists")
    job = max(current, key=lambda w: str(w["metadata"].get("creationTimestamp", "")))
    name, kind = job["metadata"]["name"], job.get("kind", "Job").lower()
    # a plain Job's pods carry its name; an operator's carry our pod template's labels
    selector = (
        {"job-name": name}
        if engine == "job"
        else {kube.INSTANCE: step.release, kube.RUN_ID: target.facts.run_id}
    )
    started = time.monotonic()
    last: list[str] = [""]
    stuck: list[tuple[dict[str, Any], str]] = []

    def on_poll(current: dict[str, Any]) -> None:
        pods = kube.pods(target.api, target.namespace, selector)
        if (problem := _stuck(target, pods, pending_timeout)) is not None:
            stuck.append(problem)
            raise _StopWaiting
        state, _ = kube.workload_state(current)
        phases = ", ".join(
            f"{p['metadata']['name']} {p['status'].get('phase')} on {p['spec'].get('nodeName') or '-'}"
            for p in pods
        )
        if state == "Suspended":
            queue = current["metadata"].get("labels", {}).get("kueue.x-k8s.io/queue-name", "")
            phases = f"suspended, waiting for Kueue to admit it (queue {queue})" if queue else "suspended"
        line = f"{step.component}: {kind} {name}: {phases or 'no pod yet'}"
        progress = _progress_line(target) if step.component == "train" else ""
        if line + progress != last[0]:
            report(f"{line} ({time.monotonic() - started:.0f} s){progress}")
            last[0] = line + progress

    try:
        outcome = kube.wait_for_job(target.api, target.namespace, name, timeout, on_poll, engine=engine)
    except _StopWaiting:
        pod, why = stuck[0]
        raise RunFailed(
            f"{step.component}: {kind} {name} cannot proceed: {why}\n{_describe_pod(target, pod)}"
        ) from None
    if not outcome.complete:
        pods = kube.pods(target.api, target.namespace, selector)
        detail = _describe_pod(target, pods[-1], step.component) if pods else "  (no pod was created)"
        retry = f"to retry with the same values, delete it first: kubectl -n {target.namespace} delete {kind} {name}"
        raise RunFailed(f"{step.component}: {kind} {name} failed: {outcome.reason}\n{detail}\n  {retry}")
    report(f"{step.component}: {kind} {name} complete ({time.monotonic() - started:.0f} s)")


class _StopWaiting(Exception):
    pass


def _wait_deployment(
    target: Target, step: Step, report: Report, timeout: float, pending_timeout: float
) -> None:
    started = time.monotonic()
    stuck: list[tuple[dict[str, Any], str]] = []
    last: list[str] = [""]
    selector = {kube.INSTANCE: step.release, kube.COMPONENT: step.component}

    def on_poll(deployment: dict[str, Any]) -> None:
        pods = kube.pods(target.api, target.namespace, selector)
        if (problem := _stuck(target, pods, pending_timeout)) is not None:
            stuck.append(problem)
            raise _StopWaiting
        status = deployment.get("status", {})
        line = f"{step.component}: deployment {step.release}: {status.get('readyReplicas', 0)}/{deployment['spec'].get('replicas', 1)} ready"
        if line != last[0]:
            report(f"{line} ({time.monotonic() - started:.0f} s)")
            last[0] = line

    try:
        available, reason = kube.wait_for_deployment(
            target.api, target.namespace, step.release, timeout, on_poll
        )
    except _StopWaiting:
        pod, why = stuck[0]
        raise RunFailed(
            f"{step.component}: {step.release} cannot start: {why}\n{_describe_pod(target, pod)}"
        ) from None
    if not available:
        pods = kube.pods(target.api, target.namespace, selector)
        detail = _describe_pod(target, pods[-1], step.component) if pods else "  (no pod was created)"
        raise RunFailed(f"{step.component}: {step.release} is not available: {reason}\n{detail}")
    report(f"{step.component}: deployment {step.release} available ({time.monotonic() - started:.0f} s)")


def _helm_test(target: Target, step: Step, report: Report) -> None:
    report(f"{step.component}: $ {' '.join(step.commands[1])}")
    result = subprocess.run(step.commands[1], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pods = [
            p
            for p in kube.pods(
                target.api, target.namespace, {kube.INSTANCE: step.release, kube.COMPONENT: "vllm-test"}
            )
        ]
        detail = _describe_pod(target, pods[-1]) if pods else ""
        raise RunFailed(
            f"{step.component}: helm test failed:\n{(result.stderr or result.stdout).strip()}\n{detail}"
        )
    report(f"{step.component}: helm test passed (its chat-completion pod Succeeded)")


# ----------------------------------------------------------------------------------------------- status
def local_path(target: Target, storage_path: str) -> Path | None:
    """A path under /storage as seen through the locally mounted storage root."""
    if target.storage_root is None or not storage_path.startswith(STORAGE_ROOT + "/"):
        return None
    return target.storage_root / storage_path[len(STORAGE_ROOT) + 1 :]


def read_progress(target: Target, from_cluster: bool = False) -> trainlog.Progress | None:
    """Training progress from trainer_log.jsonl: through the local mount of the storage, or (from_cluster) a
    short-lived reader pod mounting the train release's claim."""
    log = f"{target.facts.output_dir}/trainer_log.jsonl"
    path = local_path(target, log)
    if path is not None:
        return trainlog.parse(path.read_text(encoding="utf-8", errors="replace")) if path.is_file() else None
    if from_cluster:
        text = read_through_pod(target, log)
        return trainlog.parse(text) if text else None
    return None


def reader_pod(target: Target, path: str, name: str) -> dict[str, Any]:
    """A pod that prints the end of one file of the storage and exits: no GPU, read-only, the train image."""
    d = target.spec.data
    claim = d["storage"].get("existingClaim") or f"{target.facts.releases['train']}-storage"
    image = d["images"]["llamafactory"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": target.namespace,
            "labels": {kube.INSTANCE: target.facts.releases["train"], kube.COMPONENT: "reader"},
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "read",
                    "image": image,
                    "command": ["tail", "-n", "2000", path],
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "64Mi"},
                        "limits": {"cpu": "200m", "memory": "128Mi"},
                    },
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "storage", "mountPath": STORAGE_ROOT, "readOnly": True}],
                }
            ],  # fmt: skip
            "volumes": [{"name": "storage", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
        },
    }


def read_through_pod(target: Target, path: str, timeout: float = 120) -> str | None:
    """The end of a file on the storage, read by a reader pod that is deleted afterwards; None if unreadable."""
    name = f"{target.facts.releases['train']}-read-{int(time.time()) % 100000}"[:63]
    kube.request(
        target.api, "POST", f"/api/v1/namespaces/{target.namespace}/pods", json=reader_pod(target, path, name)
    )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pod = kube.request(target.api, "GET", f"/api/v1/namespaces/{target.namespace}/pods/{name}")
            phase = pod.get("status", {}).get("phase")
            if phase == "Succeeded":
                return kube.pod_log_tail(target.api, target.namespace, name, lines=2000)
            if phase == "Failed":
                return None
            time.sleep(1)
        return None
    finally:
        kube.request(target.api, "DELETE", f"/api/v1/namespaces/{target.namespace}/pods/{name}")


@dataclass
class ReleaseStatus:
    component: str
    release: str
    helm: str  # deployed, failed, pending-upgrade, ... or "not installed"
    revision: int | None
    objects: list[dict[str, Any]] = field(default_factory=list)  # Jobs or the Deployment, summarised
    pods: list[dict[str, Any]] = field(default_factory=list)


def _summarise_job(job: dict[str, Any]) -> dict[str, Any]:
    """A Job or an engine's workload: its state, and the counts a batch Job keeps."""
    status = job.get("status", {}) or {}
    state, reason = kube.workload_state(job)
    return {
        "kind": job.get("kind", "Job"),
        "name": job["metadata"]["name"],
        "run_id": job["metadata"].get("labels", {}).get(kube.RUN_ID, ""),
        "state": state,
        "reason": reason.split(":")[0],
        "active": status.get("active", 0),
        "succeeded": status.get("succeeded", 0),
        "failed": status.get("failed", 0),
    }


def _summarise_deployment(deployment: dict[str, Any]) -> dict[str, Any]:
    status = deployment.get("status", {})
    return {
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
        "run_id": deployment["metadata"].get("labels", {}).get(kube.RUN_ID, ""),
        "state": "Available" if kube.is_true(deployment, "Available") else "Unavailable",
        "ready": f"{status.get('readyReplicas', 0)}/{deployment['spec'].get('replicas', 1)}",
    }


def _summarise_pod(pod: dict[str, Any]) -> dict[str, Any]:
    waiting = [
        s.get("state", {}).get("waiting", {}).get("reason")
        for s in pod["status"].get("containerStatuses", [])
        if s.get("state", {}).get("waiting")
    ]
    return {
        "name": pod["metadata"]["name"],
        "phase": pod["status"].get("phase", ""),
        "node": pod["spec"].get("nodeName") or "",
        "gpus": kube.gpu_request(pod),
        "waiting": ", ".join(w for w in waiting if w),
    }


def status(target: Target, from_cluster: bool = False) -> dict[str, Any]:
    """Everything about the experiment's releases, as plain data (the CLI renders it as a table or JSON)."""
    out: dict[str, Any] = {
        "experiment": target.facts.name,
        "namespace": target.namespace,
        "run_id": target.facts.run_id,
        "releases": [],
    }
    for component, release in target.facts.releases.items():
        result = target.helm_run("status", release, "--namespace", target.namespace, "--output", "json")
        if result.returncode != 0:
            out["releases"].append(ReleaseStatus(component, release, "not installed", None).__dict__)
            continue
        info = json.loads(result.stdout)
        entry = ReleaseStatus(
            component, release, info.get("info", {}).get("status", "unknown"), info.get("version")
        )
        if component in ("train", "merge"):
            entry.objects = [
                _summarise_job(j)
                for j in kube.workloads(
                    target.api, target.namespace, release, component, engine_of(target, component)
                )
            ]
        else:
            entry.objects = [
                _summarise_deployment(d.obj)
                for d in pykube.Deployment.objects(target.api, namespace=target.namespace).filter(
                    selector={kube.INSTANCE: release}
                )
            ]
        selector = {kube.INSTANCE: release, kube.COMPONENT: component}
        entry.pods = [_summarise_pod(p) for p in kube.pods(target.api, target.namespace, selector)]
        out["releases"].append(entry.__dict__)
    installed = any(r["helm"] != "not installed" for r in out["releases"] if r["component"] == "train")
    progress = read_progress(target, from_cluster and installed)
    out["training"] = progress.as_dict() if progress else None
    return out


# ------------------------------------------------------------------------------------ preflight in the cluster
def preflight_in_cluster(target: Target, report: Report, timeout: float = 900) -> tuple[bool, str]:
    """Run the chart's GPU-less preflight Job (the one the train release runs as a hook) on its own, with the
    train release's values; (passed, its checklist output or why there is none)."""
    import yaml

    release = target.facts.releases["train"]
    values = target.spec.folder / "train.yaml"
    rendered = target.helm_run(
        "template", release, str(CHART_DIR), "--namespace", target.namespace, "--values", str(values),
        "--show-only", "templates/train-preflight-job.yaml",
    )  # fmt: skip
    if rendered.returncode != 0:
        raise RunFailed(f"check: helm template failed:\n{rendered.stderr.strip()}")
    job = next(d for d in yaml.safe_load_all(rendered.stdout) if d)
    name = f"{release}-check-{int(time.time()) % 100000}"[:52]
    job["metadata"]["name"] = name
    job["metadata"]["namespace"] = target.namespace
    job["metadata"].pop("annotations", None)  # a plain Job here, not a hook
    job["spec"]["ttlSecondsAfterFinished"] = 600
    kube.request(target.api, "POST", f"/apis/batch/v1/namespaces/{target.namespace}/jobs", json=job)
    report(f"check: preflight Job {name} (no GPU) started in namespace {target.namespace}")
    outcome = kube.wait_for_job(target.api, target.namespace, name, timeout)
    pods = kube.pods(target.api, target.namespace, {"job-name": name})
    output = (
        kube.pod_log_tail(target.api, target.namespace, pods[-1]["metadata"]["name"], lines=60)
        if pods
        else "(no pod)"
    )
    return outcome.complete, output if outcome.complete else f"{outcome.reason}\n{output}"


# -------------------------------------------------------------------------------------------- port-forward
UI_PORTS = {"webui": 7860, "vllm": 8000, "mlflow": 5000}


def ready_pod(target: Target, component: str) -> tuple[dict[str, Any] | None, str]:
    """A Ready pod of the component's release, or None and why there is none."""
    release = target.facts.releases.get(component)
    if release is None:
        return None, f"{component} is not enabled in experiment {target.facts.name}"
    pods = kube.pods(target.api, target.namespace, {kube.INSTANCE: release, kube.COMPONENT: component})
    if not pods:
        installed = target.helm_run("status", release, "--namespace", target.namespace).returncode == 0
        return None, f"{release} has no pod" + (
            "" if installed else f": the release is not installed (lfk run {target.spec.source})"
        )
    for pod in pods:
        if kube.is_true(pod, "Ready"):
            return pod, ""
    pod = pods[-1]
    waiting = [
        s.get("state", {}).get("waiting", {}).get("reason")
        for s in pod["status"].get("containerStatuses", [])
    ]
    events = kube.events_of(target.api, target.namespace, "Pod", pod["metadata"]["name"], last=3)
    state = pod["status"].get("phase", "?") + (
        f" ({', '.join(w for w in waiting if w)})" if any(waiting) else ""
    )
    return None, f"no Ready pod of {release}: {pod['metadata']['name']} is {state}" + "".join(
        f"\n  {e}" for e in events
    )


def kubectl_binary() -> str | None:
    import os
    import shutil

    from .tools import built_tool

    if env := os.environ.get("LFK_KUBECTL"):
        return env
    built = built_tool("kube", "KUBE_VERSION", "kubectl")
    return str(built) if built.is_file() else shutil.which("kubectl")
