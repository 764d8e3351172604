"""`lfk status`: per release, the helm status, its Jobs or Deployment, its pods with their nodes and GPUs;
and the training progress from trainer_log.jsonl. Plain data out; the CLI decides how it looks."""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

from ..core import trainlog, watch
from ..core.components import COMPONENTS
from . import diagnose, kube, reader
from .reader import TRAINER_LOG, read_file
from .target import Target


@dataclass
class ReleaseStatus:
    component: str
    release: str
    helm: str  # deployed, failed, pending-upgrade, ... or "not installed"
    revision: int | None
    objects: list[dict[str, Any]] = field(default_factory=list)  # Jobs or the Deployment, summarised
    pods: list[dict[str, Any]] = field(default_factory=list)


def read_progress(target: Target) -> trainlog.Progress | None:
    """Training progress from trainer_log.jsonl, through the local mount of the storage."""
    text = read_file(target, f"{target.facts.output_dir}/{TRAINER_LOG}")
    return trainlog.parse(text) if text else None


def read_training(
    target: Target, from_cluster: bool
) -> tuple[
    trainlog.Progress | None, list[dict[str, Any]] | None, dict[str, Any] | None, dict[str, Any] | None
]:
    """Training progress, the checkpoints saved so far (step, time, size), the evaluation gate's scores and the
    datasets' files as tokenized (sha256 each): through the local mount, or (from_cluster) one short-lived
    reader pod mounting the train release's claim. None where unreadable."""
    files = reader.read_training(target, target.facts.output_dir, from_cluster, target.facts.eval_scores)
    progress = trainlog.parse(files.log) if files.log else None
    checkpoints = (
        None if files.listing is None else [c.as_dict() for c in watch.parse_checkpoints(files.listing)]
    )
    return progress, checkpoints, parse_scores(files.scores), parse_data(files.data)


def parse_data(text: str | None) -> dict[str, Any] | None:
    """dataset -> {file: sha256} from the tokenized set's inputs (files/tokenize_once.py); None if absent."""
    try:
        inputs = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
    if not isinstance(inputs, dict) or not isinstance(inputs.get("datasets"), dict):
        return None
    return {name: dict(d.get("files") or {}) for name, d in inputs["datasets"].items()}


def parse_scores(text: str | None) -> dict[str, Any] | None:
    """The gate's scores.json (files/eval_gate.py writes it whole, atomically); None if absent or not JSON."""
    if not text:
        return None
    try:
        scores = json.loads(text)
    except json.JSONDecodeError:
        return None
    return scores if isinstance(scores, dict) and {"base", "tuned", "metric"} <= scores.keys() else None


def gpu_utilisation(
    target: Target, pods: list[dict[str, Any]], prometheus: str = ""
) -> dict[str, Any] | None:
    """Utilisation of the running training pods' GPUs: from dcgm-exporter's metrics in Prometheus when a URL is
    given, else nvidia-smi in each pod. None when no training pod holds a GPU now."""
    running = [p for p in pods if p["phase"] == "Running" and p["gpus"]]
    if not running:
        return None
    if all(p["simulated"] for p in running):
        return watch.GpuUtilisation("SIMULATED: kwok nodes have no GPUs to measure", {}).as_dict()
    names = {p["name"] for p in running}
    if prometheus:
        try:
            response = requests.get(
                prometheus.rstrip("/") + "/api/v1/query",
                params={"query": watch.prometheus_query(target.namespace)},
                timeout=10,
            )
            response.raise_for_status()
            sampled = watch.from_prometheus(response.json(), target.namespace, names)
        except (requests.RequestException, ValueError) as exc:
            return watch.GpuUtilisation(f"prometheus unreachable: {exc}", {}).as_dict()
        source = "prometheus" if sampled else f"prometheus has no {watch.DCGM_UTIL} for these pods"
        return watch.GpuUtilisation(source, sampled).as_dict()
    found: dict[str, float] = {}
    failures: list[str] = []
    for name in sorted(names):
        result = subprocess.run(
            target.kubectl("exec", name, "--", *watch.NVIDIA_SMI),
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if result.returncode == 0:
            found.update(watch.from_nvidia_smi(name, result.stdout))
        else:
            failures.append(
                f"{name}: {(result.stderr.strip().splitlines() or ['exit ' + str(result.returncode)])[-1]}"
            )
    source = "nvidia-smi" if found else "nvidia-smi failed: " + "; ".join(failures)
    return watch.GpuUtilisation(source, found).as_dict()


def summarise_job(job: dict[str, Any]) -> dict[str, Any]:
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
        "started": status.get("startTime", ""),
        "finished": status.get("completionTime", ""),
    }


def summarise_deployment(deployment: dict[str, Any]) -> dict[str, Any]:
    status = deployment.get("status", {})
    return {
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
        "run_id": deployment["metadata"].get("labels", {}).get(kube.RUN_ID, ""),
        "state": "Available" if kube.is_true(deployment, "Available") else "Unavailable",
        "ready": f"{status.get('readyReplicas', 0)}/{deployment['spec'].get('replicas', 1)}",
        "started": deployment["metadata"].get("creationTimestamp", ""),
        "finished": kube.conditions(deployment).get("Available", {}).get("lastTransitionTime", "")
        if kube.is_true(deployment, "Available")
        else "",
    }


def problem_of(target: Target, pod: dict[str, Any], component: str) -> str:
    """Why a pod failed (its log read only when a container ended badly), or ""."""
    if oom := diagnose.oom_advice(pod, component):
        return oom
    if not any(diagnose.exit_codes(pod)):
        return ""
    log = diagnose.log_of(target.api, target.namespace, pod, component)
    return diagnose.explain(pod, log, component, diagnose.gpu_advice(target.spec, target.facts)) or ""


def summarise_pod(
    pod: dict[str, Any], component: str, simulated: set[str], problem: str = ""
) -> dict[str, Any]:
    node = pod["spec"].get("nodeName") or ""
    return {
        "name": pod["metadata"]["name"],
        "run_id": pod["metadata"].get("labels", {}).get(kube.RUN_ID, ""),
        "phase": pod["status"].get("phase", ""),
        "node": node,
        "rank": kube.node_rank(pod),  # its place in a multi-node run
        "simulated": node in simulated,  # kwok played this node's kubelet: no container ran
        "gpus": kube.gpu_request(pod),
        "waiting": ", ".join(diagnose.waiting_reasons(pod)),
        "problem": problem,
        # what really ran: the image each container was started from, by digest (lineage for lfk report)
        "images": {
            s["name"]: {"image": s.get("image", ""), "id": s.get("imageID", "")}
            for s in diagnose.container_statuses(pod)
        },
    }


def workload_objects(target: Target, component: str, release: str) -> list[dict[str, Any]]:
    if COMPONENTS[component].workload == "job":
        engine = target.engine(component)
        return [
            {**summarise_job(j), "queue": kube.queue_wait(target.api, j)}
            for j in kube.workloads(target.api, target.namespace, release, component, engine)
        ]
    answer = kube.request(
        target.api,
        "GET",
        f"/apis/apps/v1/namespaces/{target.namespace}/deployments",
        params={"labelSelector": f"{kube.INSTANCE}={release}"},
    )
    return [summarise_deployment(d) for d in answer.get("items", [])]


def status(target: Target, from_cluster: bool = False, prometheus: str = "") -> dict[str, Any]:
    """Everything about the experiment's releases, as plain data (the CLI renders it as a table or JSON)."""
    out: dict[str, Any] = {
        "experiment": target.facts.name,
        "namespace": target.namespace,
        "run_id": target.facts.run_id,
        "releases": [],
    }
    simulated = kube.simulated_nodes(target.api)
    for component, release in target.facts.releases.items():
        result = target.helm.run("status", release, "--namespace", target.namespace, "--output", "json")
        if result.returncode != 0:
            out["releases"].append(asdict(ReleaseStatus(component, release, "not installed", None)))
            continue
        info = json.loads(result.stdout)
        entry = ReleaseStatus(
            component, release, info.get("info", {}).get("status", "unknown"), info.get("version")
        )
        entry.objects = workload_objects(target, component, release)
        selector = {kube.INSTANCE: release, kube.COMPONENT: component}
        entry.pods = [
            summarise_pod(p, component, simulated, problem_of(target, p, component))
            for p in kube.pods(target.api, target.namespace, selector)
        ]
        out["releases"].append(asdict(entry))
    installed = any(r["helm"] != "not installed" for r in out["releases"] if r["component"] == "train")
    progress, out["checkpoints"], out["evaluation"], out["datasets"] = read_training(
        target, from_cluster and installed
    )
    out["training"] = progress.as_dict() if progress else None
    train_pods: list[dict[str, Any]] = next(
        (r["pods"] for r in out["releases"] if r["component"] == "train"), []
    )
    out["gpu_utilisation"] = gpu_utilisation(target, train_pods, prometheus)
    return out
