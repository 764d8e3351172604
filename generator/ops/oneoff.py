"""`lfk exec`: one command in a one-off pod shaped like the experiment's training pod - its image, storage,
/config and /scripts, Secrets and MLflow environment, placement - with no GPU unless asked for. The pod is
rendered by the chart itself (the train release's Job and ConfigMap, through `helm template`), so it cannot
drift from what the training really gets; the train release need not be installed.
"""

from __future__ import annotations

import copy
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..errors import KubeError, LfkError
from ..project import CHART_DIR
from . import diagnose, kube
from .target import Target

COMPONENT = "exec"  # not "train": `lfk status` and `lfk run` never take a one-off pod for the training
# pip packages the spec lists are installed when the training starts; the one-off command gets them too, the
# same way: the chart's files/boot.py installs them, then runs this script from the pod's own ConfigMap (beside
# the chart's scripts in /scripts), which becomes the command, its arguments as given
EXEC_SCRIPT = "lfk-exec.sh"
EXEC_SCRIPT_TEXT = 'exec "$@"\n'
SCRIPTS_MOUNT = "/scripts"
# A one-off command should not wait for a node to have the training's CPUs and memory free (the web UI and
# vLLM may hold them): it asks for little and may burst up to the training's limits. GPUs cannot be
# overcommitted and are asked for as given (--gpus).
SMALL_REQUESTS = {"cpu": "100m", "memory": "512Mi"}
# the scheduler retries a pending pod; a one-off command that still has no node after this is told why
UNSCHEDULABLE_AFTER_S = 60


def rendered_train_pod(target: Target, values_dir: Path, gpus: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The chart's training Job and ConfigMap for this spec, as one plain single-node Job asking for `gpus`."""
    release = target.facts.releases.get("train")
    if release is None:
        raise LfkError(f"exec: training is not enabled in experiment {target.facts.name}")
    result = target.helm.run(
        "template", release, str(CHART_DIR), "--namespace", target.namespace,
        "--values", str(values_dir / "train.yaml"),
        # whatever the engine and node count, the one-off pod is one plain pod
        "--set", "train.distributed.engine=job", "--set", "train.distributed.nodes=1",
        "--set", "train.queue=", "--set", f"train.gpu.count={gpus}",
        "--show-only", "templates/train-job.yaml", "--show-only", "templates/train-configmap.yaml",
    )  # fmt: skip
    if result.returncode != 0:
        raise LfkError(f"exec: helm template failed:\n{result.stderr.strip()}")
    documents = {d["kind"]: d for d in yaml.safe_load_all(result.stdout) if d}
    return documents["Job"], documents["ConfigMap"]


def one_off(
    job: dict[str, Any], config_map: dict[str, Any], name: str, command: list[str], interactive: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Job's pod template made a named pod running `command`, and its ConfigMap under the pod's name."""
    template = copy.deepcopy(job["spec"]["template"])
    spec = template["spec"]
    labels = {**template["metadata"]["labels"], kube.COMPONENT: COMPONENT}
    old_config = config_map["metadata"]["name"]
    for volume in spec.get("volumes", []):
        if volume.get("configMap", {}).get("name") == old_config:
            volume["configMap"]["name"] = name
    [container] = [c for c in spec["containers"] if c["name"] == "train"]
    container["name"] = COMPONENT
    scripts = {m["name"] for m in container.get("volumeMounts", []) if m["mountPath"] == SCRIPTS_MOUNT}
    for volume in spec.get("volumes", []):
        if volume["name"] in scripts and "items" in volume.get("configMap", {}):
            volume["configMap"]["items"].append({"key": EXEC_SCRIPT, "path": EXEC_SCRIPT})
    container["command"] = ["python3", f"{SCRIPTS_MOUNT}/boot.py", EXEC_SCRIPT, *command]
    container.pop("args", None)
    requests = container.get("resources", {}).get("requests", {})
    requests.update({key: value for key, value in SMALL_REQUESTS.items() if key in requests})
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        container.pop(probe, None)
    if interactive:
        container.update(stdin=True, stdinOnce=True)
    spec["containers"] = [container]
    spec["restartPolicy"] = "Never"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": job["metadata"]["namespace"], "labels": labels},
        "spec": spec,
    }
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": job["metadata"]["namespace"], "labels": labels},
        "data": {**config_map["data"], EXEC_SCRIPT: EXEC_SCRIPT_TEXT},
    }
    return pod, config


def _service_account(target: Target, pod: dict[str, Any]) -> None:
    """The train release's ServiceAccount when it is installed, else the namespace's `default`."""
    account = pod["spec"].get("serviceAccountName")
    if not account:
        return
    try:
        kube.request(target.api, "GET", f"/api/v1/namespaces/{target.namespace}/serviceaccounts/{account}")
    except KubeError as exc:
        if exc.status != 404:
            raise
        pod["spec"]["serviceAccountName"] = "default"


def exec_in_pod(
    target: Target,
    values_dir: Path,
    command: list[str],
    gpus: int = 0,
    interactive: bool = False,
    echo: Callable[[str], None] = print,
    start_timeout: float = 600,
) -> int:
    """Run `command` in a one-off pod, its output streamed here; the command's exit code. The pod and its
    ConfigMap are deleted afterwards, whatever happened (SIGTERM included)."""
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return _run_one_off(target, values_dir, command, gpus, interactive, echo, start_timeout)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the clean-up below, where the default would not


def _run_one_off(
    target: Target, values_dir: Path, command: list[str], gpus: int, interactive: bool,
    echo: Callable[[str], None], start_timeout: float,
) -> int:  # fmt: skip
    job, config_map = rendered_train_pod(target, values_dir, gpus)
    name = f"{target.facts.releases['train']}-exec-{int(time.time() * 1000) % 100000}"[:63]
    pod, config = one_off(job, config_map, name, command, interactive)
    _service_account(target, pod)
    base = f"/api/v1/namespaces/{target.namespace}"
    kube.request(target.api, "POST", f"{base}/configmaps", json=config)
    try:
        created = kube.request(target.api, "POST", f"{base}/pods", json=pod)
        # the pod owns its ConfigMap: should this process die, the garbage collector still removes both
        owner = {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": created["metadata"]["uid"]}
        kube.request(
            target.api, "PATCH", f"{base}/configmaps/{name}",
            json={"metadata": {"ownerReferences": [owner]}},
            headers={"Content-Type": "application/merge-patch+json"},
        )  # fmt: skip
        echo(
            f"exec: pod {name} ({gpus} GPU{'s' if gpus != 1 else ''}), the training pod's storage, config and "
            f"secrets; it asks for {SMALL_REQUESTS['cpu']} CPU and {SMALL_REQUESTS['memory']} and may use up to "
            "the training's limits"
        )
        _wait_started(target, name, start_timeout)
        if interactive:
            subprocess.call(target.kubectl("attach", "-i", name, "-c", COMPONENT))
        else:
            subprocess.call(target.kubectl("logs", "-f", name, "-c", COMPONENT))
        return _exit_code(target, name)
    finally:
        for kind in ("pods", "configmaps"):
            try:
                kube.request(target.api, "DELETE", f"{base}/{kind}/{name}", params={"gracePeriodSeconds": 0})
            except KubeError as exc:
                if exc.status != 404:
                    raise


def _wait_started(target: Target, name: str, timeout: float) -> None:
    """Until the container runs or has ended; a pod that cannot start stops with why."""
    path = f"/api/v1/namespaces/{target.namespace}/pods/{name}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = kube.request(target.api, "GET", path)
        node = pod["spec"].get("nodeName")
        if node and node in kube.simulated_nodes(target.api):
            raise LfkError(
                f"exec: pod {name} went to {node}, a SIMULATED node (kwok): no container runs there"
            )
        if pod["status"].get("phase") in ("Running", "Succeeded", "Failed"):
            return
        if (found := diagnose.stuck([pod], pending_timeout=UNSCHEDULABLE_AFTER_S)) is not None:
            raise LfkError(f"exec: {found[1]}\n{diagnose.describe_pod(target.api, target.namespace, pod)}")
        time.sleep(1)
    pod = kube.request(target.api, "GET", path)
    raise LfkError(
        f"exec: pod {name} did not start in {timeout:.0f} s\n"
        + diagnose.describe_pod(target.api, target.namespace, pod)
    )


def _exit_code(target: Target, name: str, timeout: float = 60) -> int:
    """The command's exit code, once the kubelet has reported it."""
    path = f"/api/v1/namespaces/{target.namespace}/pods/{name}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = kube.request(target.api, "GET", path)
        for status in pod["status"].get("containerStatuses", []):
            if (terminated := status.get("state", {}).get("terminated")) is not None:
                return int(terminated.get("exitCode", 1))
        time.sleep(1)
    raise LfkError(f"exec: pod {name} did not report its exit code within {timeout:.0f} s")
