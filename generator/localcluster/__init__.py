"""A real Kubernetes control plane on this machine, for the tests and the demo.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from the Go module proxy
(`make cluster-tools`) run as plain processes on 127.0.0.1, and kwok plays the kubelet of fake GPU nodes.
Everything lives in one state directory (default `.cluster/`): data, logs, the kubeconfig and
`state.json` with the PID and port of every process. Processes are started and stopped by their own PIDs;
`up` on a running cluster does nothing.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..tools import REPO_ROOT, built_tool

DEFAULT_STATE_DIR = REPO_ROOT / ".cluster"
STAGES = Path(__file__).resolve().parent / "stages.yaml"
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
# the default pool: the products the examples in values/ ask for, 8 GPUs each (two H100 nodes for the
# multi-node example)
DEFAULT_PRODUCTS = ("NVIDIA-A100-SXM4-80GB", "NVIDIA-L4", "NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-80GB-HBM3")


class ClusterError(Exception):
    """The local cluster could not be started or reached; the message says which part and where its log is."""


@dataclass(frozen=True)
class NodeSpec:
    name: str
    gpus: int = 8
    product: str = DEFAULT_PRODUCTS[0]
    cpu: str = "128"
    memory: str = "1Ti"
    gpu_resource: str = "nvidia.com/gpu"
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)

    def manifest(self) -> dict[str, Any]:
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110", self.gpu_resource: str(self.gpus)}
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
            GPU_PRODUCT_LABEL: self.product,
            "nvidia.com/gpu.count": str(self.gpus),
            **self.labels,
        }
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels, "annotations": {FAKE_NODE_ANNOTATION: "fake"}},
            "spec": {"taints": list(self.taints)},
            "status": {"capacity": capacity, "allocatable": capacity},
        }


def default_nodes(
    count: int = 4, gpus: int = 8, products: Iterable[str] = DEFAULT_PRODUCTS
) -> list[NodeSpec]:
    pool = list(products) or [DEFAULT_PRODUCTS[0]]
    return [NodeSpec(f"kwok-gpu-{i}", gpus=gpus, product=pool[i % len(pool)]) for i in range(count)]


def parse_taint(text: str) -> dict[str, str]:
    """`key=value:Effect` or `key:Effect` -> a taint."""
    key_value, _, effect = text.rpartition(":")
    if not key_value or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise ValueError(f"taint {text!r}: expected key[=value]:NoSchedule|PreferNoSchedule|NoExecute")
    key, _, value = key_value.partition("=")
    return {"key": key, "value": value, "effect": effect} if value else {"key": key, "effect": effect}


@dataclass
class State:
    directory: Path
    pids: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    token: str = ""

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.directory / "certs" / "apiserver.crt"

    def ssl_context(self) -> ssl.SSLContext:
        if self.ca_file.is_file():
            return ssl.create_default_context(cafile=str(self.ca_file))
        context = ssl.create_default_context()  # before the apiserver wrote its certificate
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    def save(self) -> None:
        data = {"pids": self.pids, "ports": self.ports, "token": self.token}
        tmp = self.directory / "state.json.tmp"
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        tmp.replace(self.directory / "state.json")

    @classmethod
    def load(cls, directory: Path) -> State | None:
        try:
            data = json.loads((directory / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return cls(directory, data["pids"], data["ports"], data["token"])


# ----------------------------------------------------------------------------------------------- processes
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie child of ours is not alive
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _start(state: State, name: str, argv: list[str]) -> None:
    log = (state.directory / "logs" / f"{name}.log").open("ab")
    # a session of its own: stopping the cluster never signals the caller, and the caller's Ctrl-C
    # does not kill the cluster behind its back
    process = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    state.pids[name] = process.pid
    state.save()


def _tail(state: State, name: str, lines: int = 15) -> str:
    try:
        text = (state.directory / "logs" / f"{name}.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _http_ok(url: str, token: str = "", timeout: float = 2.0, context: ssl.SSLContext | None = None) -> bool:
    """200 from a health endpoint. The components' own serving certificates are self-signed and
    unknown to us, so their health checks (loopback only) skip verification unless a context is given."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    if context is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait_for(state: State, name: str, url: str, timeout: float, token: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _http_ok(url, token):
            return
        if not _alive(state.pids[name]):
            raise ClusterError(f"{name} exited during start-up; last lines of its log:\n{_tail(state, name)}")
        time.sleep(0.3)
    raise ClusterError(
        f"{name} did not become healthy within {timeout:.0f} s; last lines of its log:\n{_tail(state, name)}"
    )


def _binaries() -> dict[str, Path]:
    found = {
        "etcd": built_tool("etcd", "ETCD_VERSION"),
        "kube-apiserver": built_tool("kube", "KUBE_VERSION", "kube-apiserver"),
        "kube-controller-manager": built_tool("kube", "KUBE_VERSION", "kube-controller-manager"),
        "kube-scheduler": built_tool("kube", "KUBE_VERSION", "kube-scheduler"),
        "kwok": built_tool("kwok", "KWOK_VERSION"),
    }
    missing = [str(p) for p in found.values() if not p.is_file()]
    if missing:
        raise ClusterError(f"missing {', '.join(missing)}: run `make cluster-tools`")
    return found


def _write_kubeconfig(state: State) -> None:
    # the apiserver wrote its certificate and the CA that signed it into --cert-dir: trust exactly that
    ca = base64.b64encode(state.ca_file.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "lfk-local", "cluster": {"server": state.server, "certificate-authority-data": ca}}
        ],
        "users": [{"name": "lfk-admin", "user": {"token": state.token}}],
        "contexts": [{"name": "lfk-local", "context": {"cluster": "lfk-local", "user": "lfk-admin"}}],
        "current-context": "lfk-local",
    }
    tmp = state.kubeconfig.with_suffix(".tmp")
    tmp.write_text(json.dumps(config, indent=1), encoding="utf-8")  # JSON is YAML
    os.chmod(tmp, 0o600)
    tmp.replace(state.kubeconfig)


# ------------------------------------------------------------------------------------------------- API
def api(
    state: State, method: str, path: str, body: Any = None, content_type: str = "application/json"
) -> Any:
    """One request to the local apiserver as cluster admin; the JSON answer, or ClusterError."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        state.server + path,
        data=data,
        method=method,
        headers={
            "Authorization": f"Bearer {state.token}",
            "Content-Type": content_type,
            "Accept": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30, context=state.ssl_context()) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise ClusterError(
            f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')[:500]}"
        ) from None


def add_nodes(state: State, nodes: Iterable[NodeSpec]) -> None:
    for node in nodes:
        manifest = node.manifest()
        try:
            api(state, "POST", "/api/v1/nodes", manifest)
        except ClusterError as exc:
            if "409" not in str(exc):
                raise
        # status is a subresource: set capacity there too, so the scheduler sees the GPUs at once
        api(
            state,
            "PATCH",
            f"/api/v1/nodes/{node.name}/status",
            {"status": manifest["status"]},
            "application/merge-patch+json",
        )


def remove_nodes(state: State, names: Iterable[str]) -> None:
    for name in names:
        try:
            api(state, "DELETE", f"/api/v1/nodes/{name}")
        except ClusterError as exc:
            if "404" not in str(exc):
                raise


def wait_nodes_ready(state: State, names: Iterable[str], timeout: float = 60) -> None:
    wanted = set(names)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = set()
        for node in api(state, "GET", "/api/v1/nodes")["items"]:
            conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            if conditions.get("Ready") == "True":
                ready.add(node["metadata"]["name"])
        if wanted <= ready:
            return
        time.sleep(0.5)
    raise ClusterError(
        f"nodes not Ready after {timeout:.0f} s: {sorted(wanted - ready)}\n{_tail(state, 'kwok')}"
    )


# ------------------------------------------------------------------------------------------- lifecycle
def running(directory: Path = DEFAULT_STATE_DIR) -> State | None:
    """The state of a healthy running cluster, or None."""
    state = State.load(directory)
    if state is None or not state.pids or not all(_alive(p) for p in state.pids.values()):
        return None
    return state if _http_ok(state.server + "/readyz", state.token) else None


def up(
    directory: Path = DEFAULT_STATE_DIR,
    nodes: list[NodeSpec] | None = None,
    timeout: float = 180,
    profiling: bool = False,
    apiserver_args: tuple[str, ...] = (),
) -> tuple[State, bool]:
    """Start the control plane and its fake GPU nodes; (state, started). A healthy cluster is left as it is.
    `profiling` opens etcd's and the apiserver's /debug/pprof, which the scale benchmark uses to force a
    garbage collection before it reads their live heap; `apiserver_args` are added to the apiserver's own."""
    if (state := running(directory)) is not None:
        return state, False
    down(directory)  # leftovers of a cluster that died half-way
    binaries = _binaries()
    directory.mkdir(parents=True, exist_ok=True)
    for sub in ("logs", "etcd", "certs"):
        (directory / sub).mkdir(exist_ok=True)
    state = State(directory, token=secrets.token_hex(16))
    state.ports = {
        name: _free_port()
        for name in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")
    }
    state.save()
    certs = directory / "certs"
    sa_key = certs / "service-account.key"
    subprocess.run(["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True)
    (certs / "tokens.csv").write_text(
        f'{state.token},lfk-admin,lfk-admin,"system:masters"\n', encoding="utf-8"
    )

    etcd_url = f"http://127.0.0.1:{state.ports['etcd']}"
    peer_url = f"http://127.0.0.1:{state.ports['etcd-peer']}"
    _start(state, "etcd", [
        str(binaries["etcd"]), "--name=lfk", f"--data-dir={directory / 'etcd'}",
        f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
        f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=lfk={peer_url}", "--unsafe-no-fsync", "--quota-backend-bytes=4294967296",
        "--listen-metrics-urls=", *(["--enable-pprof"] if profiling else []),
    ])  # fmt: skip
    _wait_for(state, "etcd", f"{etcd_url}/health", 60)

    _start(state, "kube-apiserver", [
        str(binaries["kube-apiserver"]), f"--etcd-servers={etcd_url}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={state.ports['apiserver']}",
        f"--cert-dir={certs}", f"--token-auth-file={certs / 'tokens.csv'}",
        "--authorization-mode=RBAC", "--service-cluster-ip-range=10.96.0.0/16",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={sa_key}", f"--service-account-signing-key-file={sa_key}",
        "--enable-priority-and-fairness=false", f"--profiling={str(profiling).lower()}",
        "--endpoint-reconciler-type=none", *apiserver_args,
    ])  # fmt: skip
    _wait_for(state, "kube-apiserver", f"{state.server}/readyz", timeout, state.token)
    _write_kubeconfig(state)

    _start(state, "kube-controller-manager", [
        str(binaries["kube-controller-manager"]), f"--kubeconfig={state.kubeconfig}", "--leader-elect=false",
        "--bind-address=127.0.0.1", f"--secure-port={state.ports['controller-manager']}",
        f"--service-account-private-key-file={sa_key}", f"--root-ca-file={certs / 'apiserver.crt'}",
        "--use-service-account-credentials=false",
        # kwok's heartbeats can lag on a busy 2-core machine: do not taint nodes unreachable for that
        "--node-monitor-grace-period=10m", "--node-startup-grace-period=10m",
        "--profiling=false",
    ])  # fmt: skip
    _start(state, "kube-scheduler", [
        str(binaries["kube-scheduler"]), f"--kubeconfig={state.kubeconfig}", "--leader-elect=false",
        "--bind-address=127.0.0.1", f"--secure-port={state.ports['scheduler']}", "--profiling=false",
    ])  # fmt: skip
    _start(state, "kwok", [
        str(binaries["kwok"]), f"--kubeconfig={state.kubeconfig}", f"--config={STAGES}",
        "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
        f"--server-address=127.0.0.1:{state.ports['kwok']}", "--cidr=10.0.0.1/16", "--node-ip=10.0.0.1",
    ])  # fmt: skip
    _wait_for(
        state, "kube-controller-manager", f"https://127.0.0.1:{state.ports['controller-manager']}/healthz", 60
    )
    _wait_for(state, "kube-scheduler", f"https://127.0.0.1:{state.ports['scheduler']}/healthz", 60)

    pool = nodes if nodes is not None else default_nodes()
    add_nodes(state, pool)
    wait_nodes_ready(state, [n.name for n in pool])
    _wait_default_service_account(state)
    return state, True


def _wait_default_service_account(state: State, timeout: float = 60) -> None:
    """Pods cannot be created in a namespace before the controller manager gives it its default account."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            api(state, "GET", "/api/v1/namespaces/default/serviceaccounts/default")
            return
        except ClusterError:
            time.sleep(0.5)
    raise ClusterError(
        f"no default ServiceAccount after {timeout:.0f} s\n{_tail(state, 'kube-controller-manager')}"
    )


def down(directory: Path = DEFAULT_STATE_DIR) -> list[str]:
    """Stop every process of the cluster by its PID (the API side first) and delete its state; names stopped."""
    state = State.load(directory)
    stopped = []
    if state is not None:
        for name in reversed(list(state.pids)):
            pid = state.pids[name]
            if _alive(pid):
                os.kill(pid, signal.SIGTERM)
                stopped.append(name)
        deadline = time.monotonic() + 20
        for pid in state.pids.values():
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    if directory.exists():
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
    return stopped


def status(directory: Path = DEFAULT_STATE_DIR) -> dict[str, Any]:
    """What is running: every process with its PID and liveness, the API's health, the nodes."""
    state = State.load(directory)
    if state is None:
        return {"running": False, "processes": {}}
    processes = {name: {"pid": pid, "alive": _alive(pid)} for name, pid in state.pids.items()}
    healthy = all(p["alive"] for p in processes.values()) and _http_ok(state.server + "/readyz", state.token)
    result: dict[str, Any] = {
        "running": healthy,
        "processes": processes,
        "server": state.server,
        "kubeconfig": str(state.kubeconfig),
    }
    if healthy:
        nodes = []
        for node in api(state, "GET", "/api/v1/nodes")["items"]:
            conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            nodes.append({
                "name": node["metadata"]["name"],
                "ready": conditions.get("Ready") == "True",
                "product": node["metadata"].get("labels", {}).get(GPU_PRODUCT_LABEL, ""),
                "gpus": node.get("status", {}).get("allocatable", {}).get("nvidia.com/gpu", "0"),
                "taints": [t["key"] + ":" + t["effect"] for t in node.get("spec", {}).get("taints", [])],
            })  # fmt: skip
        result["nodes"] = nodes
    return result
