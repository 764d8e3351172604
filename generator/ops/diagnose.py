"""Why a pod does not get going, in words a person can act on: a start-up state that never resolves by
itself, a pod the scheduler cannot place, a container the kubelet killed for memory; and the pod's last
events and log lines to go with it."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

import pykube

from ..core.components import COMPONENTS
from ..core.contract import EXIT
from ..core.facts import Facts
from ..core.rules import vram_advice
from ..core.spec import Spec
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

# an image the node lists but whose content is gone (a fault during its import): containerd's words for it
BROKEN_IMAGE = re.compile(r"content digest sha256:[0-9a-f]+:? not found")
BROKEN_IMAGE_ADVICE = (
    "the image is incomplete in the node's containerd (its content is gone, e.g. the disk filled up during its "
    "import): on the local cluster `lfk cluster up` checks every image and imports a broken one again; on "
    "another node, remove the image there (crictl rmi) so that it is pulled again"
)


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
    known = COMPONENTS.get(component)
    setting = known.memory_setting if known else "the component's resources.memory"
    limit = memory_limit(pod, container)
    return (
        f"container {container} was OOMKilled: it used more than its memory limit ({limit}); "
        f"raise {setting} in the spec"
    )


# what the scripts and the kernel say with an exit code (the chart's podFailurePolicy fails the Job at once on them)
CONFIG_ERROR_EXIT, GPU_OOM_EXIT, KILLED_EXIT = (
    EXIT["configError"],
    EXIT["gpuOutOfMemory"],
    EXIT["memoryKilled"],
)
CUDA_OOM = re.compile(r"CUDA out of memory|OutOfMemoryError")
NCCL_TIMEOUT = re.compile(
    r"Watchdog caught collective operation timeout|NCCL (?:error|timeout|WARN .*timeout)|ncclSystemError"
    r"|ncclInternalError|ProcessGroupNCCL.*[Tt]imeout|DistNetworkError|Connection reset by peer.*rendezvous",
)
# torch's words when the pods of a multi-node run never all met (elastic and static rendezvous)
RENDEZVOUS_TIMEOUT = re.compile(
    r"RendezvousTimeoutError|Timed out after \d+ seconds waiting for clients|DistStoreError: wait timeout"
    r"|The client socket has timed out after",
)
RENDEZVOUS_ADVICE = (
    "the rendezvous never completed: the training pods did not all reach the first pod's rendezvous "
    "(MASTER_ADDR:MASTER_PORT) within distributed.rendezvousTimeout. Usual causes: a rank's pod still Pending "
    "(no node with room: lfk status lists every rank), a network policy or firewall between the nodes, or the "
    "headless Service missing (it is part of the train release)"
)
NCCL_ADVICE = (
    "NCCL timeout or watchdog error: the ranks could not reach each other in time. Usual causes: the wrong network "
    "interface (set distributed.nccl.socketIfname to the pods' interface, e.g. eth0), a network policy or firewall "
    "between the nodes, or one rank busy far longer than the others, such as tokenizing a large dataset while the "
    "others wait past ddp_timeout (raise llamafactoryArgs.ddp_timeout, or tokenize once beforehand)"
)


def gpu_advice(spec: Spec, facts: Facts) -> str:
    """The estimate against the GPU, and the spec changes that lower it (the guide's advice, made concrete)."""
    known = (
        f"the estimate is {facts.vram.total_gb:.1f} GB per GPU"
        if facts.vram
        else "the model's size is unknown"
    )
    known += f" on {facts.gpu_memory_gib:g} GiB GPUs" if facts.gpu_memory_gib else ""
    return f"{known}; {vram_advice(spec)}"


def exit_codes(pod: dict[str, Any]) -> list[int]:
    """Exit codes of the pod's containers that terminated (now or in their last run)."""
    codes = []
    for status in container_statuses(pod):
        for state in (status.get("state", {}), status.get("lastState", {})):
            if "terminated" in state:
                codes.append(int(state["terminated"].get("exitCode", 0)))
    return codes


GATE_FAILED_EXIT = EXIT["gateFailed"]  # files/eval_gate.py
GATE_ROW = re.compile(r"^(metric|bleu-4|rouge-[12l]) +")


def explain(pod: dict[str, Any], log: str, component: str, gpu_advice: str = "") -> str | None:
    """What failed, in words a person can act on: the container killed for memory, the GPU out of memory,
    NCCL timing out, or a configuration error the preflight found; None when none of these."""
    if advice := oom_advice(pod, component):
        return advice
    codes = exit_codes(pod)
    if GPU_OOM_EXIT in codes or (any(codes) and CUDA_OOM.search(log)):
        return "the GPU ran out of memory (CUDA out of memory)" + (f": {gpu_advice}" if gpu_advice else "")
    if any(codes) and RENDEZVOUS_TIMEOUT.search(log):
        return RENDEZVOUS_ADVICE
    if NCCL_TIMEOUT.search(log):
        return NCCL_ADVICE
    if component == "adapter" and CONFIG_ERROR_EXIT in codes:
        found = [
            line.removeprefix("cannot share ")
            for line in log.splitlines()
            if line.startswith("cannot share ")
        ]
        return (
            f"the shared vLLM cannot serve this adapter (exit {CONFIG_ERROR_EXIT}); merge instead: serve.source: merged"
            + "".join(f"\n    {line}" for line in found)
        )
    if CONFIG_ERROR_EXIT in codes:
        return f"a configuration error (exit {CONFIG_ERROR_EXIT}): the checklist in the log names the item and its fix"
    if component == "eval" and GATE_FAILED_EXIT in codes:
        return gate_advice(log)
    return None


def gate_advice(log: str) -> str:
    """The evaluation gate's verdict and the two models' scores side by side, from the eval pod's log."""
    lines = log.splitlines()
    table = [line for line in lines if GATE_ROW.match(line)]
    verdict = next(
        (line for line in reversed(lines) if line.startswith("eval: gate failed")), "eval: gate failed"
    )
    return (
        verdict.removeprefix("eval: ")
        + f" (exit {GATE_FAILED_EXIT}); vLLM was not installed\n"
        + "".join(f"    {row}\n" for row in table)
        + "    change the training (data, steps, learning rate), or the gate (evaluate.maxDrop, evaluate.floor)"
    )


def _timestamp(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


# the scheduler's word for a pod whose claim has no volume bound yet, and how long binding may take
UNBOUND_CLAIM = "unbound immediate PersistentVolumeClaims"
CLAIM_BINDING_S = 120


def stuck(pods: list[dict[str, Any]], pending_timeout: float) -> tuple[dict[str, Any], str] | None:
    """A pod that will not get going by itself: a fatal container state, or unschedulable for too long."""
    now = time.time()
    for pod in pods:
        for status in container_statuses(pod):
            waiting = status.get("state", {}).get("waiting", {})
            if waiting.get("reason") in FATAL_WAITING:
                detail = f": {waiting['message']}" if waiting.get("message") else ""
                if BROKEN_IMAGE.search(waiting.get("message", "")):
                    detail += f"\n  {BROKEN_IMAGE_ADVICE}"
                return pod, f"container {status['name']} is {waiting['reason']}{detail}"
        scheduled = kube.conditions(pod).get("PodScheduled", {})
        if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            since = _timestamp(scheduled.get("lastTransitionTime"))
            # a claim made moments ago (the train release's storage hook) is still being bound to its volume:
            # the scheduler tries again once it is, so that alone is no reason to give up yet
            binding = UNBOUND_CLAIM in scheduled.get("message", "")
            if since and now - since > (
                max(pending_timeout, CLAIM_BINDING_S) if binding else pending_timeout
            ):
                return pod, f"unschedulable for {now - since:.0f} s: {scheduled.get('message', '')}"
    return None


def log_of(api: pykube.HTTPClient, namespace: str, pod: dict[str, Any], container: str | None = None) -> str:
    """The pod's last log lines, or why there are none."""
    if not pod["spec"].get("nodeName"):
        return "(never started)"
    return kube.pod_log_tail(api, namespace, pod["metadata"]["name"], container, lines=40)


def describe_pod(
    api: pykube.HTTPClient,
    namespace: str,
    pod: dict[str, Any],
    container: str | None = None,
    log: str | None = None,
) -> str:
    """The pod's node and phase, its last events and its last log lines, indented for a report."""
    name = pod["metadata"]["name"]
    node = pod["spec"].get("nodeName") or "no node"
    events = kube.events_of(api, namespace, "Pod", name)
    logs = log if log is not None else log_of(api, namespace, pod, container)
    lines = [f"  pod {name} on {node}, phase {pod['status'].get('phase')}", "  last events:"]
    lines += [f"    {e}" for e in events] or ["    (none)"]
    lines += ["  last log lines:"] + [f"    {line}" for line in logs.splitlines()[-20:]]
    return "\n".join(lines)
