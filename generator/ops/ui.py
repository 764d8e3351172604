"""`lfk ui`: a port-forward to the LlamaBoard web UI, the vLLM API or MLflow, through the built kubectl, and
a clear reason when there is nothing Ready to forward to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from ..core.components import COMPONENTS
from ..core.storage import in_cluster_host
from ..errors import LfkError
from . import diagnose, kube
from .target import Target

MLFLOW_PORT = 5000
PORTS = {**{c.name: c.port for c in COMPONENTS.values() if c.port}, "mlflow": MLFLOW_PORT}
LOOPBACK = ("--address", "127.0.0.1")  # kubectl would listen on ::1 too


def ready_pod(target: Target, component: str) -> tuple[dict[str, Any] | None, str]:
    """A Ready pod of the component's release, or None and why there is none."""
    release = target.facts.releases.get(component)
    if release is None:
        return None, f"{component} is not enabled in experiment {target.facts.name}"
    pods = kube.pods(target.api, target.namespace, {kube.INSTANCE: release, kube.COMPONENT: component})
    if not pods:
        installed = target.helm.run("status", release, "--namespace", target.namespace).returncode == 0
        return None, f"{release} has no pod" + (
            "" if installed else f": the release is not installed (lfk run {target.spec.source})"
        )
    for pod in pods:
        if kube.is_true(pod, "Ready"):
            return pod, ""
    pod = pods[-1]
    waiting = diagnose.waiting_reasons(pod)
    events = kube.events_of(target.api, target.namespace, "Pod", pod["metadata"]["name"], last=3)
    state = pod["status"].get("phase", "?") + (f" ({', '.join(waiting)})" if waiting else "")
    return None, f"no Ready pod of {release}: {pod['metadata']['name']} is {state}" + "".join(
        f"\n  {e}" for e in events
    )


@dataclass(frozen=True)
class Forward:
    """`kubectl port-forward` arguments (without the binary), or an outside URL when there is nothing to forward."""

    args: list[str]
    url: str


def forward(target: Target, what: str, local_port: int | None = None) -> Forward:
    port = local_port or PORTS[what]
    if what == "mlflow":
        tracking = target.spec.data["tracking"].get("mlflow")
        if not tracking:
            raise LfkError(f"{target.spec.source}: tracking.mlflow is not set")
        uri = urlparse(tracking["trackingUri"])
        host = uri.hostname or ""
        if not in_cluster_host(host):
            return Forward([], tracking["trackingUri"])
        labels = host.split(".")
        namespace = labels[1] if len(labels) > 1 else target.namespace
        remote = uri.port or (443 if uri.scheme == "https" else 80)
        return Forward(
            ["port-forward", "-n", namespace, f"svc/{labels[0]}", f"{port}:{remote}"],
            f"http://localhost:{port}",
        )
    pod, why = ready_pod(target, what)
    if pod is None:
        raise LfkError(f"ui: {why}")
    service = f"svc/{target.facts.releases[what]}"
    return Forward(
        ["port-forward", "-n", target.namespace, service, f"{port}:{PORTS[what]}"], f"http://localhost:{port}"
    )
