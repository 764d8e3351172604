"""The control plane as processes on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, and kwok for the simulated GPU nodes. Binaries come from `make cluster-tools`; each
component's command line is built here, in one place."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

from ..errors import ToolMissing
from ..project import built_tool
from . import processes
from .nodes import FAKE_NODE_ANNOTATION
from .state import State

STAGES = Path(__file__).resolve().parent / "stages.yaml"
SERVICE_CIDR = "10.96.0.0/16"
PORTS = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")


def binaries() -> dict[str, Path]:
    found = {
        "etcd": built_tool("etcd", "ETCD_VERSION"),
        "kube-apiserver": built_tool("kube", "KUBE_VERSION", "kube-apiserver"),
        "kube-controller-manager": built_tool("kube", "KUBE_VERSION", "kube-controller-manager"),
        "kube-scheduler": built_tool("kube", "KUBE_VERSION", "kube-scheduler"),
        "kwok": built_tool("kwok", "KWOK_VERSION"),
    }
    missing = [str(p) for p in found.values() if not p.is_file()]
    if missing:
        raise ToolMissing(f"missing {', '.join(missing)}: run `make cluster-tools`")
    return found


def prepare(state: State) -> None:
    """Ports, the admin token, the service-account key: everything the command lines refer to."""
    for sub in ("logs", "etcd", "certs"):
        (state.directory / sub).mkdir(parents=True, exist_ok=True)
    state.token = secrets.token_hex(16)
    state.ports = {name: processes.free_port() for name in PORTS}
    state.save()
    subprocess.run(["openssl", "genrsa", "-out", str(state.certs / "service-account.key"), "2048"],
                   check=True, capture_output=True)  # fmt: skip
    (state.certs / "tokens.csv").write_text(
        f'{state.token},lfk-admin,lfk-admin,"system:masters"\n', encoding="utf-8"
    )


def etcd_argv(state: State, binary: Path, profiling: bool) -> list[str]:
    client, peer = etcd_url(state), f"http://127.0.0.1:{state.ports['etcd-peer']}"
    return [
        str(binary), "--name=lfk", f"--data-dir={state.directory / 'etcd'}",
        f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=lfk={peer}", "--unsafe-no-fsync", "--quota-backend-bytes=4294967296",
        "--listen-metrics-urls=", *(["--enable-pprof"] if profiling else []),
    ]  # fmt: skip


def etcd_url(state: State) -> str:
    return f"http://127.0.0.1:{state.ports['etcd']}"


def apiserver_argv(state: State, binary: Path, profiling: bool, extra: tuple[str, ...]) -> list[str]:
    key = state.certs / "service-account.key"
    return [
        str(binary), f"--etcd-servers={etcd_url(state)}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={state.ports['apiserver']}",
        f"--cert-dir={state.certs}", f"--token-auth-file={state.certs / 'tokens.csv'}",
        "--authorization-mode=RBAC", f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={key}", f"--service-account-signing-key-file={key}",
        "--enable-priority-and-fairness=false", f"--profiling={str(profiling).lower()}",
        "--endpoint-reconciler-type=none", "--kubelet-preferred-address-types=InternalIP,Hostname", *extra,
    ]  # fmt: skip


def controller_manager_argv(state: State, binary: Path) -> list[str]:
    return [
        str(binary), f"--kubeconfig={state.kubeconfig}", "--leader-elect=false",
        "--bind-address=127.0.0.1", f"--secure-port={state.ports['controller-manager']}",
        f"--service-account-private-key-file={state.certs / 'service-account.key'}",
        f"--root-ca-file={state.ca_file}", "--use-service-account-credentials=false",
        # kwok's heartbeats can lag on a busy 2-core machine: do not taint nodes unreachable for that
        "--node-monitor-grace-period=10m", "--node-startup-grace-period=10m",
        "--profiling=false",
    ]  # fmt: skip


# How the scheduler scores nodes: "spread" is Kubernetes' default (LeastAllocated on CPU and memory, GPUs not
# scored), which scatters small GPU pods over every node until none is left empty for an 8-GPU pod; "binpack"
# fills the node whose GPUs are most used first (MostAllocated, GPUs weighted over CPU and memory).
SCHEDULING = ("spread", "binpack")
GPU = "nvidia.com/gpu"


def binpack_profile() -> dict[str, Any]:
    """The scheduler profile `binpack` runs: the one docs/local-cluster.md recommends for a shared GPU cluster."""
    return {
        "schedulerName": "default-scheduler",
        "pluginConfig": [
            {
                "name": "NodeResourcesFit",
                "args": {
                    "scoringStrategy": {
                        "type": "MostAllocated",
                        "resources": [
                            {"name": GPU, "weight": 5},
                            {"name": "cpu", "weight": 1},
                            {"name": "memory", "weight": 1},
                        ],
                    }
                },
            }
        ],
    }


def scheduler_argv(state: State, binary: Path, scheduling: str) -> list[str]:
    common = [
        str(binary), "--bind-address=127.0.0.1", f"--secure-port={state.ports['scheduler']}",
        "--profiling=false",
    ]  # fmt: skip
    if scheduling == "spread":
        return [*common, f"--kubeconfig={state.kubeconfig}", "--leader-elect=false"]
    # with --config the scheduler reads its client and leader election from the file, not from flags
    config = {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(state.kubeconfig)},
        "leaderElection": {"leaderElect": False},
        "profiles": [binpack_profile()],
    }
    path = state.directory / "scheduler.json"
    path.write_text(json.dumps(config, indent=1), encoding="utf-8")  # JSON is YAML
    return [*common, f"--config={path}"]


def kwok_argv(state: State, binary: Path) -> list[str]:
    # kwok manages only the nodes annotated as simulated: never a real node
    return [
        str(binary), f"--kubeconfig={state.kubeconfig}", f"--config={STAGES}",
        "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
        f"--server-address=127.0.0.1:{state.ports['kwok']}", "--cidr=10.0.0.1/16", "--node-ip=10.0.0.1",
    ]  # fmt: skip


def write_kubeconfig(state: State) -> None:
    # the apiserver wrote its certificate and the CA that signed it into --cert-dir: trust exactly that
    ca = base64.b64encode(state.ca_file.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "lfk-local", "cluster": {"server": state.server, "certificate-authority-data": ca}}
        ],
        "users": [{"name": "lfk-local", "user": {"token": state.token}}],
        "contexts": [{"name": "lfk-local", "context": {"cluster": "lfk-local", "user": "lfk-local"}}],
        "current-context": "lfk-local",
    }
    tmp = state.kubeconfig.with_suffix(".tmp")
    tmp.write_text(json.dumps(config, indent=1), encoding="utf-8")  # JSON is YAML
    os.chmod(tmp, 0o600)
    tmp.replace(state.kubeconfig)


def start(
    state: State,
    timeout: float,
    profiling: bool,
    apiserver_args: tuple[str, ...],
    scheduling: str = "spread",
) -> None:
    """Start every control-plane process and wait until each is healthy; `scheduling` is one of SCHEDULING."""
    if scheduling not in SCHEDULING:
        raise ValueError(f"scheduling {scheduling!r}: one of {', '.join(SCHEDULING)}")
    found = binaries()
    prepare(state)
    processes.start(state, "etcd", etcd_argv(state, found["etcd"], profiling))
    processes.wait_healthy(state, "etcd", f"{etcd_url(state)}/health", 60)
    processes.start(
        state, "kube-apiserver", apiserver_argv(state, found["kube-apiserver"], profiling, apiserver_args)
    )
    processes.wait_healthy(state, "kube-apiserver", f"{state.server}/readyz", timeout, state.token)
    write_kubeconfig(state)
    processes.start(
        state, "kube-controller-manager", controller_manager_argv(state, found["kube-controller-manager"])
    )
    processes.start(state, "kube-scheduler", scheduler_argv(state, found["kube-scheduler"], scheduling))
    state.extra["scheduling"] = scheduling
    state.save()
    processes.start(state, "kwok", kwok_argv(state, found["kwok"]))
    port = state.ports
    processes.wait_healthy(
        state, "kube-controller-manager", f"https://127.0.0.1:{port['controller-manager']}/healthz", 60
    )
    processes.wait_healthy(state, "kube-scheduler", f"https://127.0.0.1:{port['scheduler']}/healthz", 60)
