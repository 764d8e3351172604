"""The node tier: real pods on the local cluster's real node. The tier starts its own cluster (control plane,
one simulated GPU node, the real node with containerd, kubelet, kube-proxy and CoreDNS) in a temporary
folder, prepares the tiny-cpu example's storage (tests/support/tiny.py) and stops it all at the end. Needs
root, `make node-tools` and `make images` (make test does both)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from generator.cluster import lifecycle, nodes, realnode, runtime, storage
from generator.cluster.state import State
from generator.core.render import render
from generator.core.spec import load_spec
from generator.core.write import write
from generator.errors import LfkError
from generator.ops import kube
from generator.project import REPO_ROOT, helm_binary, kubectl_binary
from tests.support import tiny

TINY = REPO_ROOT / "values" / "tiny-cpu" / "experiment.yaml"
NAMESPACE = "llm-local"
ARTIFACTS = Path(os.environ.get("LFK_ARTIFACTS", REPO_ROOT / ".artifacts"))
LFK = str(Path(sys.executable).parent / "lfk")


@dataclass
class NodeCluster:
    state: State
    storage: Path  # what the pods of NAMESPACE see as /storage

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.state.kubeconfig), "LFK_HELM": helm_binary()}

    @property
    def api(self) -> Any:
        return self.state.api()

    def run(
        self, *argv: str, timeout: float = 900, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, env={**self.env, **(env or {})}, input=stdin, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip

    def lfk(
        self, *args: str, timeout: float = 900, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.run(LFK, *args, timeout=timeout, env=env)

    def check_after(self, spec: Path, vllm_url: str) -> subprocess.CompletedProcess[str]:
        """`lfk check --after` of an experiment served at vllm_url, its storage read here."""
        return self.lfk(
            "check", str(spec), "--after", "--vllm-url", vllm_url, "--storage-root", str(self.storage)
        )

    def kubectl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run(kubectl_binary(), *args, timeout=timeout)

    def helm(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return self.run(helm_binary(), *args, timeout=timeout)

    def uninstall(self, *releases: str, timeout: float = 300) -> None:
        """Releases uninstalled together, their pods gone. A clean-up between tests needs only the node's CPU
        back: helm's --wait takes one release after another and sits out each pod's grace period (vLLM's
        preStop sleep and shutdown), so the pods are deleted at once instead, again until no owner of theirs
        (a ReplicaSet, a Job) is left to start another."""
        result = self.helm("uninstall", *releases, "-n", NAMESPACE, "--ignore-not-found", timeout=timeout)
        assert result.returncode == 0, result.stdout + result.stderr
        selector = f"{kube.INSTANCE} in ({','.join(releases)})"

        def gone() -> bool:
            self.kubectl("-n", NAMESPACE, "delete", "pods", "-l", selector, "--grace-period=0", "--force",
                         "--ignore-not-found", "--wait=false")  # fmt: skip
            left = self.kubectl("-n", NAMESPACE, "get", "pods,replicasets,jobs", "-l", selector, "-o", "name")
            return left.returncode == 0 and not left.stdout.strip()

        wait_for(f"the pods of {', '.join(releases)} gone", gone, timeout, 1)

    def pods(self, selector: dict[str, str]) -> list[dict[str, Any]]:
        return kube.pods(self.api, NAMESPACE, selector)

    def log(self, pod: str, container: str | None = None) -> str:
        return kube.pod_log_tail(self.api, NAMESPACE, pod, container, lines=4000)


@pytest.fixture(scope="session", autouse=True)
def real_node_free() -> None:
    """The machine's one real node, free for this tier. `make demo` leaves its cluster running (with the real
    node); `make test` right after it would fail every test here, so that cluster is stopped first, and the run
    says so (`make demo` or `make cluster-up` starts it again)."""
    holder = realnode.owner()
    if holder is None:
        return
    message = (
        f"the node tier stopped the cluster in {holder} (`make demo`'s or `make cluster-up`'s): it held this "
        "machine's one real node; `make cluster-up` starts it again"
    )
    print(message, file=sys.stderr)
    lifecycle.down(Path(holder))
    if realnode.owner() is not None:
        pytest.fail(f"the cluster in {holder} still holds the real node after `lfk cluster down`")
    warnings.warn(message, stacklevel=1)


@pytest.fixture(scope="session")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeCluster]:
    if os.geteuid() != 0:
        pytest.fail("the node tier runs containerd and a kubelet on this machine: it needs root")
    directory = tmp_path_factory.mktemp("node-cluster")
    try:
        state, _ = lifecycle.up(directory, nodes.default_nodes(1), real_node=True, report=print)
    except LfkError as exc:
        pytest.fail(f"the local cluster with its real node did not start: {exc}")
    try:
        have = runtime.present(state)
        missing = [i for i in ("lfk.local/llamafactory:0.9.5", "lfk.local/vllm-cpu:0.32.0") if i not in have]
        if missing:
            pytest.fail(f"images missing in the real node's containerd: {missing}; run `make images`")
        root = storage.folder(state, NAMESPACE)
        tiny.prepare(root)
        yield NodeCluster(state, root)
    finally:
        lifecycle.down(directory)


def variant(folder: Path, name: str, change: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """values/tiny-cpu/experiment.yaml under another name (same namespace and claim), changed, rendered in
    folder/name; the spec's path."""
    data = yaml.safe_load(TINY.read_text(encoding="utf-8"))
    data["name"] = name
    if change:
        change(data)
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    spec_path = target / "experiment.yaml"
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    write(render(load_spec(spec_path)), target)
    return spec_path


def as_shared_host(d: dict[str, Any]) -> None:
    """tiny-cpu serving the base model with its adapter behind an API key, loading other experiments' adapters
    at run time; its vLLM at 900m, so a guest's GPU-less hooks (1 CPU) fit beside it on the 2-core node."""
    d["serve"].update(
        source="adapter",
        apiKeySecret={"name": "tiny-api-key", "key": "token"},
        sharedAdapters={"maxLoras": 2, "syncIntervalSeconds": 2},
    )
    d["serve"]["resources"]["cpu"] = "900m"


def as_guest_of_tiny_cpu(d: dict[str, Any]) -> None:
    """A short second training of the tiny model whose adapter tiny-cpu's vLLM loads (serve.source: shared)."""
    del d["evaluate"]
    d["training"].update(maxSteps=6, saveSteps=6)
    d["data"]["tokenizeOnce"] = False
    d["merge"] = {"enabled": False}
    d["webui"] = {"enabled": False}
    d["serve"] = {"source": "shared", "host": "tiny-cpu"}


def edit_values(spec_path: Path, component: str, change: Callable[[dict[str, Any]], None]) -> Path:
    """A component's rendered values, changed the way only a hand edit can (what the generator refuses)."""
    path = spec_path.parent / f"{component}.yaml"
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(values)
    edited = spec_path.parent / f"{component}-edited.yaml"
    edited.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    return edited


def evict(cluster: NodeCluster, name: str) -> None:
    """A pod evicted through the API (as a drain or a preemption does), with a grace period of 1 s."""
    kube.request(cluster.api, "POST", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}/eviction", json={
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": name, "namespace": NAMESPACE}, "deleteOptions": {"gracePeriodSeconds": 1},
    })  # fmt: skip


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PortForward:
    """`lfk ui SPEC WHAT --port P` in the background, as a person would leave it running."""

    def __init__(self, cluster: NodeCluster, spec: Path, what: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [LFK, "ui", str(spec), what, "--port", str(self.port)]
        self.process = subprocess.Popen(
            argv, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def __enter__(self) -> PortForward:
        wait_for(f"port-forward to {self.url}", self._listening, 60, 0.3)
        return self

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(
                f"lfk ui exited {self.process.returncode}: {self.process.stdout.read() if self.process.stdout else ''}"
            )
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 60, api_key: str = "") -> Any:
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    headers = {
        "Content-Type": "application/json",
        **({"Authorization": f"Bearer {api_key}"} if api_key else {}),
    }
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def copy_artifact(path: Path, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS / name
    shutil.copyfile(path, target)
    return target


RESUMED_FROM = re.compile(r"Resuming training from \S+/checkpoint-(\d+)")


def losses(output: Path) -> list[tuple[int, float]]:
    """(step, loss) of every training step trainer_log.jsonl records, restarts included."""
    rows = [json.loads(line) for line in (output / "trainer_log.jsonl").read_text().splitlines() if line]
    return [(r["current_steps"], r["loss"]) for r in rows if "loss" in r]


def assert_resumed_once(steps: list[int], checkpoint: int, max_steps: int) -> None:
    """No optimizer step lost or repeated after a restart: the run reached the checkpoint, and the resumed
    run logs checkpoint+1 .. max_steps once each."""
    second = steps[len(steps) - (max_steps - checkpoint) :]
    assert second == list(range(checkpoint + 1, max_steps + 1)), steps
    assert checkpoint in steps[: len(steps) - len(second)], (
        f"the first run never reached the checkpoint: {steps}"
    )
