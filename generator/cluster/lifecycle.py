"""`lfk cluster up | down | status`: the local cluster as a whole. `up` on a healthy cluster does nothing;
`down` stops every process by its PID (the API side first) and deletes the state directory."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ClusterError, KubeError
from ..ops import kube
from . import controlplane, kubeconfig, nodes, processes, realnode, runtime, storage
from .engines import start as engines_start
from .state import DEFAULT_STATE_DIR, State

Report = Callable[[str], None]


def running(directory: Path = DEFAULT_STATE_DIR) -> State | None:
    """The state of a healthy running cluster, or None."""
    state = State.load(directory)
    if state is None or not state.pids or not all(processes.alive(p) for p in state.pids.values()):
        return None
    return state if processes.http_ok(state.server + "/readyz", state.token) else None


def up(
    directory: Path = DEFAULT_STATE_DIR,
    pool: list[nodes.NodeSpec] | None = None,
    timeout: float = 180,
    profiling: bool = False,
    apiserver_args: tuple[str, ...] = (),
    real_node: bool = False,
    engines: tuple[str, ...] = (),
    scheduling: str = "spread",
    report: Report = lambda line: None,
) -> tuple[State, bool]:
    """Start the control plane, its simulated GPU nodes and (real_node) the real node with its default
    storage claim; (state, started). A healthy cluster is left as it is. `profiling` opens etcd's and the
    apiserver's /debug/pprof (the scale benchmark forces a garbage collection there before it reads their
    live heap); `apiserver_args` are added to the apiserver's own; `engines` (jobset, kueue) start after the nodes,
    and on a running cluster that lacks them; `scheduling` is how the scheduler scores nodes
    (controlplane.SCHEDULING: spread, Kubernetes' default, or binpack)."""
    if (state := running(directory)) is not None:
        if real_node and "real_node" not in state.extra:
            raise ClusterError(
                f"the cluster in {directory} runs without a real node: stop it first (lfk cluster down)"
            )
        if (running_scheduling := state.extra.get("scheduling", "spread")) != scheduling:
            raise ClusterError(
                f"the cluster in {directory} schedules with {running_scheduling}, not {scheduling}: "
                "stop it first (lfk cluster down)"
            )
        # a running real node: mend an image a fault since its start may have broken
        if "real_node" in state.extra and (missing := runtime.import_images(state, report)):
            report(f"real node: images not built yet: {', '.join(missing)} (make images builds them)")
        engines_start(state, engines, report)
        return state, False
    down(directory)  # leftovers of a cluster that died half-way
    directory.mkdir(parents=True, exist_ok=True)
    state = State(directory)
    try:
        if real_node:  # before anything starts: the machine may have its one real node already
            realnode.claim_host(state)
        report("control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok")
        controlplane.start(state, timeout, profiling, apiserver_args, scheduling)
        api = state.api()
        pool = nodes.default_nodes() if pool is None else pool
        nodes.add_nodes(api, pool)
        nodes.wait_ready(api, [n.name for n in pool], log=lambda: processes.tail(state, "kwok"))
        wait_default_service_account(state, api)
        engines_start(state, engines, report)
        if real_node:
            if missing := realnode.start(state, report):
                report(f"real node: images not built yet: {', '.join(missing)} (make images builds them)")
            storage.provision(state)
    except BaseException:
        down(directory)  # nothing half-started stays behind, on the host least of all
        raise
    return state, True


def wait_default_service_account(state: State, api: Any, timeout: float = 60) -> None:
    """Pods cannot be created in a namespace before the controller manager gives it its default account."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kube.request(api, "GET", "/api/v1/namespaces/default/serviceaccounts/default")
            return
        except KubeError:
            time.sleep(0.5)
    raise ClusterError(
        f"no default ServiceAccount after {timeout:.0f} s\n{processes.tail(state, 'kube-controller-manager')}"
    )


def down(directory: Path = DEFAULT_STATE_DIR, report: Report = lambda line: None) -> list[str]:
    """Stop every process of the cluster by its PID (the API side first) and delete its state; names stopped."""
    state = State.load(directory)
    stopped = []
    if state is not None:
        kubeconfig.withdraw(state)
        stopped = realnode.stop(state, report)  # while the API still answers: its pods are deleted through it
        report("control plane: stopping")
        stopped += processes.stop(reversed(list(state.pids.items())))
    if directory.exists():
        shutil.rmtree(directory, ignore_errors=True)
    return stopped


def status(directory: Path = DEFAULT_STATE_DIR) -> dict[str, Any]:
    """What is running: every process with its PID and liveness, the API's health, the nodes."""
    state = State.load(directory)
    if state is None:
        return {"running": False, "processes": {}}
    procs = {name: {"pid": pid, "alive": processes.alive(pid)} for name, pid in state.pids.items()}
    healthy = all(p["alive"] for p in procs.values()) and processes.http_ok(
        state.server + "/readyz", state.token
    )
    result: dict[str, Any] = {
        "running": healthy,
        "real_node": "real_node" in state.extra,
        "scheduling": state.extra.get("scheduling", "spread"),
        "processes": procs,
        "server": state.server,
        "kubeconfig": str(state.kubeconfig),
    }
    if healthy:
        result["nodes"] = nodes.listing(state.api())
    return result
