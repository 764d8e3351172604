"""One real node beside the simulated GPU nodes: containerd (runtime.py), a kubelet, kube-proxy in iptables
mode, CoreDNS for cluster.local, and a CNI bridge for the pods. Every process runs on this machine,
started and stopped by its PID; what they change on the host is recorded first and put back at the stop
(host.py). Only one real node runs at a time: the kubelet and the CNI plugins use fixed paths of the host.

Network: pods get addresses on the `cni0` bridge (POD_CIDR) and routes to each other and to Services, and
no default route; the bridge does not masquerade, and a FORWARD rule drops anything from the pods to
addresses outside the pod network. CoreDNS answers on the bridge's address for cluster.local only.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ClusterError, ToolMissing
from ..project import built_tool
from . import controlplane, host, nodes, processes, runtime
from .state import State

NODE_NAME = "cpu-0"
# its label and taint: only pods that ask for the real node (node selector and toleration) run there; every
# other GPU-less pod (a simulated example's preflight, say) stays on the simulated nodes
REAL_NODE_LABEL = "llamafactory-k8s/real-node"
POD_CIDR = "10.88.0.0/16"
GATEWAY = "10.88.0.1"  # the bridge's address: the pods' gateway and their DNS server
CLUSTER_DOMAIN = "cluster.local"
# who owns the one real node this machine can run: the state directory of its cluster
OWNER = Path("/run/llamafactory-k8s/real-node")
PROCESSES = ("containerd", "kubelet", "kube-proxy", "coredns")
ISOLATION_CHAIN = "LFK-POD-ISOLATION"
Report = Callable[[str], None]


def binaries() -> dict[str, Path]:
    found = {
        "kubelet": built_tool("kube-node", "KUBE_VERSION", "kubelet"),
        "kube-proxy": built_tool("kube-node", "KUBE_VERSION", "kube-proxy"),
        "coredns": built_tool("coredns", "COREDNS_VERSION"),
    }
    missing = [str(p) for p in found.values() if not p.is_file()]
    if missing:
        raise ToolMissing(f"missing {', '.join(missing)}: run `make node-tools`")
    for program in ("iptables", "iptables-save", "iptables-restore", "ip"):
        if not any(Path(d, program).is_file() for d in ("/usr/sbin", "/sbin", "/usr/bin")):
            raise ToolMissing(f"{program} is missing: run `make node-tools` (installs Debian's iptables)")
    return found


def owner() -> str | None:
    """The state directory of the cluster whose real node runs now, if one does."""
    try:
        directory = OWNER.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    state = State.load(Path(directory))
    if state is None or not any(processes.alive(state.pids.get(p)) for p in PROCESSES):
        return None
    return directory


def claim_host(state: State) -> None:
    if os.geteuid() != 0:
        raise ClusterError("a real node needs root (it runs containerd and a kubelet); use --no-real-node")
    current = owner()
    if current is not None and Path(current).resolve() != state.directory.resolve():
        raise ClusterError(
            f"a real node already runs on this machine, for the cluster in {current}; only one can: stop it "
            f"first (lfk cluster down --state-dir {current}), or start this one with --no-real-node"
        )
    leftovers = host.running(("kubelet", "containerd"))
    if current is None and leftovers:
        raise ClusterError(f"{', '.join(leftovers)} already run on this machine outside lfk: stop them first")
    OWNER.parent.mkdir(parents=True, exist_ok=True)
    OWNER.write_text(str(state.directory.resolve()), encoding="utf-8")
    # what stop() puts back, recorded before anything changes
    state.extra["real_node"] = {"host": host.record()}
    state.save()


# ------------------------------------------------------------------------------------------- configuration
def cni_config(state: State) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "lfk-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": host.BRIDGE,
                "isGateway": True,
                "ipMasq": False,  # pods never reach beyond this machine's own networks
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                    "routes": [{"dst": controlplane.SERVICE_CIDR}],  # Services, and no default route
                    "dataDir": str(state.directory / "cni" / "ipam"),
                },
            }
        ],
    }


def kubelet_config(state: State) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # the node's address: the bridge's, as a node address cannot be loopback; pods may not reach it
        "address": GATEWAY,
        "port": state.ports["kubelet"],
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": state.ports["kubelet-healthz"],
        # only the apiserver (logs, exec, port-forward) reaches it, from this machine
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": f"unix://{runtime.socket(state)}",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,  # this machine's cgroups are v1
        "oomScoreAdj": 0,  # no CAP_SYS_RESOURCE for negative scores here
        "failSwapOn": False,
        "clusterDNS": [GATEWAY],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "",  # pods learn no resolver of the host
        # the images were built here and cannot be pulled again: never collect them
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # the images alone take tens of GB of a shared disk: evict only when it is really full
        "evictionHard": {"memory.available": "200Mi", "nodefs.available": "1Gi", "imagefs.available": "1Gi"},
        "evictionPressureTransitionPeriod": "30s",
        "maxPods": 40,
        "serializeImagePulls": False,
        "volumePluginDir": str(state.directory / "kubelet" / "volume-plugins"),
        "staticPodPath": "",
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
    }


def kubelet_argv(state: State, binary: Path) -> list[str]:
    return [
        str(binary), f"--config={state.directory / 'kubelet' / 'config.json'}",
        f"--kubeconfig={state.kubeconfig}", f"--hostname-override={NODE_NAME}", f"--node-ip={GATEWAY}",
        f"--node-labels={REAL_NODE_LABEL}=true", f"--register-with-taints={REAL_NODE_LABEL}=true:NoSchedule",
        f"--root-dir={host.NODE_DIR / 'kubelet'}",
        f"--cert-dir={state.directory / 'kubelet' / 'pki'}", "--v=1",
    ]  # fmt: skip


def kube_proxy_config(state: State) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(state.kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{state.ports['kube-proxy-healthz']}",
        "metricsBindAddress": f"127.0.0.1:{state.ports['kube-proxy-metrics']}",
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "nodePortAddresses": [f"{GATEWAY}/32"],  # NodePorts on the bridge only, never on a host address
        # leave the host's conntrack table sizes and timeouts alone
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }


def corefile(state: State) -> str:
    """cluster.local (Services, pods, the headless Service's pod names) and reverse lookups of the two
    networks; every other name is refused: the pods have nothing else to reach."""
    return f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 {{
    bind {GATEWAY}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{
        kubeconfig {state.kubeconfig} lfk-local
        pods insecure
        ttl 5
    }}
    health 127.0.0.1:{state.ports["coredns-health"]}
    ready 127.0.0.1:{state.ports["coredns-ready"]}
}}
"""


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


# ------------------------------------------------------------------------------------------------ network
def make_bridge() -> None:
    """The bridge with the gateway address, before CoreDNS binds to it (the CNI plugin adopts it)."""
    if not Path(f"/sys/class/net/{host.BRIDGE}").exists():
        host.run("ip", "link", "add", host.BRIDGE, "type", "bridge")
    host.run("ip", "addr", "replace", f"{GATEWAY}/16", "dev", host.BRIDGE)
    host.run("ip", "link", "set", host.BRIDGE, "up")


def isolate_pods(kubelet_port: int) -> None:
    """Forwarded traffic from the pods may go to pods only, never to another network; and the pods may not
    talk to the kubelet, which listens on their gateway's address."""
    host.run("iptables", "-N", ISOLATION_CHAIN, check=False)
    host.run("iptables", "-F", ISOLATION_CHAIN)
    host.run("iptables", "-A", ISOLATION_CHAIN, "-d", POD_CIDR, "-j", "RETURN")
    host.run("iptables", "-A", ISOLATION_CHAIN, "-j", "DROP")
    host.run("iptables", "-I", "FORWARD", "1", "-i", host.BRIDGE, "-j", ISOLATION_CHAIN)
    host.run(
        "iptables",
        "-I",
        "INPUT",
        "1",
        "-i",
        host.BRIDGE,
        "-p",
        "tcp",
        "--dport",
        str(kubelet_port),
        "-j",
        "DROP",
    )


# ---------------------------------------------------------------------------------------------- lifecycle
NODE_PORTS = (
    "kubelet",
    "kubelet-healthz",
    "kube-proxy-healthz",
    "kube-proxy-metrics",
    "coredns-health",
    "coredns-ready",
)


def node_logs(state: State) -> str:
    return "\n".join(
        f"--- {name} (last lines)\n{processes.tail(state, name, 25)}" for name in ("containerd", "kubelet")
    )


def start(state: State, report: Report) -> list[str]:
    """Start the real node and wait until it is Ready; the images that still need building."""
    found = binaries()
    runtime.binaries()
    if "real_node" not in state.extra:
        claim_host(state)
    state.ports.update({name: processes.free_port() for name in NODE_PORTS})
    state.save()
    host.write_sysctls({"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"})
    make_bridge()
    isolate_pods(state.ports["kubelet"])
    write_json(runtime.cni_conf_dir(state) / "10-lfk-pods.conflist", cni_config(state))
    report("real node: starting containerd")
    runtime.start(state)
    missing = runtime.import_images(state, report)
    write_json(state.directory / "kubelet" / "config.json", kubelet_config(state))
    report(f"real node: starting the kubelet of {NODE_NAME}")
    processes.start(state, "kubelet", kubelet_argv(state, found["kubelet"]))
    write_json(state.directory / "kube-proxy.json", kube_proxy_config(state))
    proxy = [str(found["kube-proxy"]), f"--config={state.directory / 'kube-proxy.json'}", "--v=1"]
    processes.start(state, "kube-proxy", proxy)
    (state.directory / "Corefile").write_text(corefile(state), encoding="utf-8")
    processes.start(state, "coredns", [str(found["coredns"]), "-conf", str(state.directory / "Corefile")])
    # a cold first start on a small machine (nothing in the page cache, the kubelet's first image-filesystem
    # statistics) has taken over two minutes
    nodes.wait_ready(state.api(), [NODE_NAME], timeout=300, log=lambda: node_logs(state))
    processes.wait_healthy(state, "coredns", f"http://127.0.0.1:{state.ports['coredns-ready']}/ready", 60)
    processes.wait_healthy(
        state, "kube-proxy", f"http://127.0.0.1:{state.ports['kube-proxy-healthz']}/healthz", 60
    )
    return missing


def delete_pods(state: State, timeout: float = 60) -> None:
    """Cordon the real node and delete its pods through the API, giving the kubelet time to stop them properly
    (their controllers' replacements then wait, unscheduled, instead of starting here again)."""
    from ..errors import KubeError
    from ..ops import kube

    try:
        api = state.api()
        kube.request(api, "PATCH", f"/api/v1/nodes/{NODE_NAME}", json={"spec": {"unschedulable": True}},
                     headers={"Content-Type": "application/merge-patch+json"})  # fmt: skip
        selector = {"fieldSelector": f"spec.nodeName={NODE_NAME}"}
        doomed = set()
        for pod in kube.request(api, "GET", "/api/v1/pods", params=selector)["items"]:
            meta = pod["metadata"]
            doomed.add(meta["uid"])
            kube.request(api, "DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                         params={"gracePeriodSeconds": "5"})  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = {
                p["metadata"]["uid"]
                for p in kube.request(api, "GET", "/api/v1/pods", params=selector)["items"]
            }
            if not left & doomed:
                return
            time.sleep(0.5)
    except (KubeError, OSError):
        pass  # the API is gone already: the runtime clean-up below stops what is left


def stop(state: State, report: Report = lambda line: None) -> list[str]:
    """Stop the real node and put the host back as it was; the processes stopped."""
    record = state.extra.get("real_node")
    if record is None:
        return []
    if processes.alive(state.pids.get("kubelet")) and processes.alive(state.pids.get("kube-apiserver")):
        report("real node: deleting its pods through the API")
        delete_pods(state)
    report("real node: stopping CoreDNS, kube-proxy, the kubelet and containerd")
    stopped = processes.stop(
        [(n, state.pids[n]) for n in ("coredns", "kube-proxy", "kubelet") if n in state.pids]
    )
    if processes.alive(state.pids.get("containerd")):
        runtime.remove_everything(state)
    stopped += processes.stop(
        [("containerd", state.pids["containerd"])] if "containerd" in state.pids else []
    )
    runtime.kill_shims()
    report("real node: putting the host back (mounts, bridge, cgroups, iptables, sysctls, paths)")
    host.restore(record["host"], [str(state.directory)])
    for name in PROCESSES:
        state.pids.pop(name, None)
    state.extra.pop("real_node", None)
    state.save()
    if owner() is None:
        OWNER.unlink(missing_ok=True)
        host.remove_path(str(OWNER.parent))
    return stopped
