"""`lfk run`: the experiment's releases in the guide's order (train, merge, eval, vllm with its helm test, webui),
each waited for, skipping what the current run id already completed, stopping at the first failure with the
step, the pod, its events and its last log lines. It prints nothing: it reports through a callback."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..core.components import COMPONENTS
from ..core.facts import derive
from ..core.spec import Upstream, load_spec, load_yaml_file
from ..errors import KubeError, RunFailed
from . import diagnose, helm, kube, wait
from .status import read_progress
from .target import Target

Report = Callable[[str], None]


def completed_run(target: Target, component: str) -> str | None:
    """Name of a workload of this component that completed for the current run id, if any."""
    release = target.facts.releases[component]
    for job in kube.workloads(target.api, target.namespace, release, component, target.engine(component)):
        done = kube.workload_state(job)[0] == "Complete"
        if done and job["metadata"].get("labels", {}).get(kube.RUN_ID) == target.facts.run_id:
            return str(job["metadata"]["name"])
    return None


def values_unchanged(target: Target, component: str) -> bool:
    """The release is deployed with exactly the values on disk."""
    release = target.facts.releases[component]
    result = target.helm.run("get", "values", release, "--namespace", target.namespace, "--output", "json")
    if result.returncode != 0:
        return False
    # a committed file: read within the same bounds as a spec (size, aliases, UTF-8)
    wanted = load_yaml_file(target.spec.folder / f"{component}.yaml", what="the values file")
    return bool(json.loads(result.stdout or "null") == wanted)


def available_unchanged(target: Target, component: str) -> bool:
    """The release is deployed with exactly the values on disk, and its Deployment is available."""
    if not values_unchanged(target, component):
        return False
    try:
        deployment = kube.deployment(target.api, target.namespace, target.facts.releases[component])
    except KubeError as exc:
        if exc.status == 404:
            return False
        raise
    return kube.is_true(deployment, "Available")


def skip_reason(target: Target, step: helm.Step) -> str | None:
    """Why a step has nothing to do: its Job completed for this run id, or its Deployment serves these values."""
    component = COMPONENTS[step.component]
    if component.workload == "job":
        done = completed_run(target, step.component)
        if done and (component.settled_by_run_id or values_unchanged(target, step.component)):
            return f"run {target.facts.run_id} already completed (job {done}); skipped"
        return None
    if available_unchanged(target, step.component):
        return f"{step.release} is deployed with these values and available; skipped"
    return None


UPSTREAM_POLL_SECONDS = 10.0


def upstream_target(target: Target, upstream: Upstream) -> Target:
    """The other experiment on the same cluster (its spec read once, the same API client)."""
    spec = load_spec(upstream.source)
    return Target(spec, derive(spec), target.helm, target.storage_root, target._api)


def upstream_state(other: Target, upstream: Upstream) -> tuple[str, str]:
    """('done' | 'running' | 'missing', the component it is at) of the run another experiment must finish
    before this one trains on its result: each of its Jobs that make the result, for its current run id."""
    for component in upstream.jobs:
        if completed_run(other, component):
            continue
        release = other.facts.releases[component]
        active = [
            job
            for job in kube.workloads(other.api, other.namespace, release, component, other.engine(component))
            if job["metadata"].get("labels", {}).get(kube.RUN_ID) == upstream.run_id
            and kube.workload_state(job)[0] not in ("Complete", "Failed")
        ]
        return ("running" if active else "missing"), component
    return "done", ""


def await_upstreams(target: Target, report: Report, timeout: float) -> None:
    """Wait until every experiment this one starts from has finished the run whose result it reads; refuse
    at once when one has not been started (its result would never come)."""
    deadline = time.monotonic() + timeout
    for upstream in target.spec.upstreams:
        other = upstream_target(target, upstream)
        waited = False
        while True:
            state, component = upstream_state(other, upstream)
            if state == "done":
                report(
                    f"train: starts from {upstream.name} run {upstream.run_id}: {upstream.result} is there"
                )
                break
            if state == "missing":
                raise RunFailed(
                    f"train: starts from experiment {upstream.name}, whose run {upstream.run_id} has not finished "
                    f"its {component} (no such Job is running): run `lfk run {upstream.source}` first"
                )
            if time.monotonic() > deadline:
                raise RunFailed(
                    f"train: {upstream.name} run {upstream.run_id} did not finish its {component} in time"
                )
            if not waited:
                report(f"train: waiting for {upstream.name} run {upstream.run_id} to finish its {component}")
                waited = True
            time.sleep(UPSTREAM_POLL_SECONDS)


def run(
    target: Target,
    components: list[str],
    report: Report,
    timeout: float = 6 * 3600,
    pending_timeout: float = 300,
) -> dict[str, bool]:
    """Run the selected steps in order; raise RunFailed at the first failure. Returns, per component waited
    for, whether its pods ran only on simulated nodes (scheduled and admitted, but no container ran)."""
    simulated: dict[str, bool] = {}
    if "train" in components and target.spec.upstreams and completed_run(target, "train") is None:
        await_upstreams(target, report, timeout)
    for step in helm.plan(target.facts, target.spec.folder, target.helm, components):
        if (why := skip_reason(target, step)) is not None:
            report(f"{step.component}: {why}")
            simulated[step.component] = ran_simulated(target, step)
            continue
        is_job = COMPONENTS[step.component].workload == "job"
        if is_job and values_unchanged(target, step.component) and current_workloads(target, step):
            # still running (or waiting in a queue) with these values: waiting is all there is to do. An upgrade
            # would also put `suspend: true` back on a Job Kueue has admitted, stopping its pods.
            report(f"{step.component}: {step.release} is installed with these values; waiting for it")
        else:
            report(f"{step.component}: $ {' '.join(step.install)}")
            install(target, step, pending_timeout)
        if is_job:
            wait_job(target, step, report, timeout, pending_timeout)
        else:
            wait_deployment(target, step, report, timeout, pending_timeout)
        simulated[step.component] = ran_simulated(target, step)
        if simulated[step.component]:
            report(f"{step.component}: SIMULATED: its pods ran on kwok nodes, where no container runs")
        if step.test:
            helm_test(target, step, report, simulated[step.component])
    return simulated


def ran_simulated(target: Target, step: helm.Step) -> bool:
    """The step's pods all ran on simulated nodes (so nothing of it really happened)."""
    selector = {kube.INSTANCE: step.release, kube.COMPONENT: step.component}
    nodes = {p["spec"].get("nodeName") for p in kube.pods(target.api, target.namespace, selector)} - {None}
    return bool(nodes) and nodes <= kube.simulated_nodes(target.api)


def install(target: Target, step: helm.Step, pending_timeout: float) -> None:
    """helm upgrade --install, watching the release's new pods meanwhile: a hook pod that can never start (an
    image that cannot be pulled, a container that cannot be created) stops the install at once, as a stuck
    workload pod does, instead of after helm's timeout."""
    started = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    process = subprocess.Popen(step.install, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    selector = {kube.INSTANCE: step.release}
    while process.poll() is None:
        new = [
            p
            for p in kube.pods(target.api, target.namespace, selector)
            if p["metadata"]["creationTimestamp"] >= started
        ]
        if (found := diagnose.stuck(new, pending_timeout)) is not None:
            process.terminate()
            process.communicate(timeout=60)
            pod, why = found
            detail = diagnose.describe_pod(target.api, target.namespace, pod)
            raise RunFailed(
                f"{step.component}: {why} while helm installs {step.release}; helm stopped\n{detail}"
            )
        time.sleep(1)
    out, err = process.communicate()
    if process.returncode != 0:
        raise RunFailed(f"{step.component}: helm failed:\n{(err or out).strip()}" + hook_report(target, step))


# the train release's hooks (GPU-less Jobs before the training), in the order they run
HOOKS = {
    "train-download": "the model download",
    "train-preflight": "the preflight",
    "train-tokenize": "tokenizing",
}


def hook_report(target: Target, step: helm.Step) -> str:
    """What the train release's hooks said when one of them failed and stopped the install: its log's tail
    (the preflight's checklist, LLaMA-Factory's error while tokenizing)."""
    if step.component != "train":
        return ""
    report = ""
    for component, what in HOOKS.items():
        pods = kube.pods(
            target.api, target.namespace, {kube.INSTANCE: step.release, kube.COMPONENT: component}
        )
        if not pods:
            continue
        pod = max(pods, key=lambda p: str(p["metadata"].get("creationTimestamp", "")))
        codes = [
            s["state"]["terminated"].get("exitCode")
            for s in pod["status"].get("containerStatuses", [])
            if "terminated" in s.get("state", {})
        ]
        if not any(codes):
            continue  # succeeded, or still running when helm gave up
        log = kube.pod_log_tail(target.api, target.namespace, pod["metadata"]["name"], lines=40)
        report += f"\n  {what} (pod {pod['metadata']['name']}, exit code {codes[0]}) reported:\n" + "".join(
            f"    {line}\n" for line in log.splitlines()
        )
    return report


class _Progress:
    """Reports a line only when it changed, with the seconds since the wait began."""

    def __init__(self, report: Report):
        self.report, self.last, self.started = report, "", time.monotonic()
        self.warned: set[str] = set()

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.started:.0f} s"

    def show(self, line: str, extra: str = "", problems: tuple[str, ...] = ()) -> None:
        """The line when it changed; each problem once, under the line that first saw it."""
        new = [p for p in problems if p not in self.warned]
        if line + extra != self.last or new:
            self.report(f"{line} ({self.elapsed()}){extra}" + "".join(f"\n    ! {p}" for p in new))
            self.last = line + extra
            self.warned.update(new)


def _training_line(target: Target) -> tuple[str, tuple[str, ...]]:
    """The progress bar with loss and learning rate, and the problems trainer_log.jsonl shows."""
    progress = read_progress(target)
    if progress is None:
        return "", ()
    loss = f"{progress.loss:.4f}" if isinstance(progress.loss, float) else str(progress.loss)
    lr = f"{progress.lr:.2e}" if isinstance(progress.lr, float) else str(progress.lr)
    line = f" {progress.bar()} loss {loss} lr {lr} elapsed {progress.elapsed} remaining {progress.remaining}"
    return line, tuple(progress.problems)


def _stopped(target: Target, pods: list[dict[str, Any]], pending_timeout: float) -> wait.Outcome | None:
    found = diagnose.stuck(pods, pending_timeout)
    return wait.Outcome(False, found[1], found[0]) if found else None


def _failure(target: Target, component: str, pods: list[dict[str, Any]], outcome: wait.Outcome) -> str:
    """The pod that explains a failure (the one the watcher named, else the newest), described."""
    pod = outcome.pod or (pods[-1] if pods else None)
    if pod is None:
        return "  (no pod was created)"
    log = diagnose.log_of(target.api, target.namespace, pod, None if outcome.pod else component)
    advice = diagnose.explain(pod, log, component, diagnose.gpu_advice(target.spec, target.facts))
    detail = diagnose.describe_pod(target.api, target.namespace, pod, log=log)
    return (f"  {advice}\n" if advice else "") + detail


def current_workloads(target: Target, step: helm.Step) -> list[dict[str, Any]]:
    """The release's Jobs (or engine workloads) of this component that are not being deleted."""
    found = kube.workloads(
        target.api, target.namespace, step.release, step.component, target.engine(step.component)
    )
    return [w for w in found if not w["metadata"].get("deletionTimestamp")]


def wait_job(target: Target, step: helm.Step, report: Report, timeout: float, pending_timeout: float) -> None:
    engine = target.engine(step.component)
    current = current_workloads(target, step)
    if not current:
        raise RunFailed(f"{step.component}: helm installed {step.release}, but no {engine} of it exists")
    job = max(current, key=lambda w: str(w["metadata"].get("creationTimestamp", "")))
    name, kind = job["metadata"]["name"], job.get("kind", "Job").lower()
    # a plain Job's pods carry its name; an operator's carry our pod template's labels (a TrainJob's through
    # the chart's runtime patch), the run's id among them
    selector = (
        {"job-name": name}
        if engine == "job"
        else {kube.INSTANCE: step.release, kube.RUN_ID: target.facts.run_id}
    )
    progress = _Progress(report)

    def watch(current: dict[str, Any]) -> wait.Outcome | None:
        pods = kube.pods(target.api, target.namespace, selector)
        if (stop := _stopped(target, pods, pending_timeout)) is not None:
            return stop
        phases = ", ".join(
            f"{p['metadata']['name']} {p['status'].get('phase')} on {p['spec'].get('nodeName') or '-'}"
            for p in pods
        )
        if kube.workload_state(current)[0] == "Suspended":
            phases = (
                f"suspended, {queued}" if (queued := kube.queue_wait(target.api, current)) else "suspended"
            )
        training, problems = _training_line(target) if step.component == "train" else ("", ())
        progress.show(f"{step.component}: {kind} {name}: {phases or 'no pod yet'}", training, problems)
        return None

    outcome = wait.job(target.api, target.namespace, name, timeout, watch, engine=engine)
    if outcome.ok:
        report(f"{step.component}: {kind} {name} complete ({progress.elapsed()})")
        return
    detail = _failure(target, step.component, kube.pods(target.api, target.namespace, selector), outcome)
    if outcome.pod is not None:
        raise RunFailed(f"{step.component}: {kind} {name} cannot proceed: {outcome.reason}\n{detail}")
    retry = (
        f"to retry with the same values, delete it first: kubectl -n {target.namespace} delete {kind} {name}"
    )
    raise RunFailed(f"{step.component}: {kind} {name} failed: {outcome.reason}\n{detail}\n  {retry}")


def wait_deployment(
    target: Target, step: helm.Step, report: Report, timeout: float, pending_timeout: float
) -> None:
    selector = {kube.INSTANCE: step.release, kube.COMPONENT: step.component}
    progress = _Progress(report)

    def watch(deployment: dict[str, Any]) -> wait.Outcome | None:
        pods = kube.pods(target.api, target.namespace, selector)
        if (stop := _stopped(target, pods, pending_timeout)) is not None:
            return stop
        status = deployment.get("status", {})
        wanted = deployment["spec"].get("replicas", 1)
        progress.show(
            f"{step.component}: deployment {step.release}: {status.get('readyReplicas', 0)}/{wanted} ready"
        )
        return None

    outcome = wait.deployment(target.api, target.namespace, step.release, timeout, watch)
    if outcome.ok:
        report(f"{step.component}: deployment {step.release} available ({progress.elapsed()})")
        return
    detail = _failure(target, step.component, kube.pods(target.api, target.namespace, selector), outcome)
    if outcome.pod is not None:
        raise RunFailed(f"{step.component}: {step.release} cannot start: {outcome.reason}\n{detail}")
    raise RunFailed(f"{step.component}: {step.release} is not available: {outcome.reason}\n{detail}")


def helm_test(target: Target, step: helm.Step, report: Report, simulated: bool = False) -> None:
    assert step.test is not None
    report(f"{step.component}: $ {' '.join(step.test)}")
    result = helm.run(step.test)
    if result.returncode != 0:
        selector = {kube.INSTANCE: step.release, kube.COMPONENT: f"{step.component}-test"}
        pods = kube.pods(target.api, target.namespace, selector)
        detail = diagnose.describe_pod(target.api, target.namespace, pods[-1]) if pods else ""
        raise RunFailed(
            f"{step.component}: helm test failed:\n{(result.stderr or result.stdout).strip()}\n{detail}"
        )
    if simulated:
        report(
            f"{step.component}: helm test passed: SIMULATED (kwok marked its pod Succeeded; no request was sent)"
        )
    else:
        report(
            f"{step.component}: helm test passed: its pod sent a chat completion, checked the answer and vLLM's prompts against the training's"
        )
