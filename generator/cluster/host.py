"""What a real node changes on this machine, recorded before it starts and put back when it stops: the
sysctls the kubelet and the CNI bridge set, the iptables rules of the kubelet and kube-proxy, the bridge,
network namespaces, mounts, cgroups and the fixed paths the kubelet and containerd use.

`fingerprint()` describes all of it, so a test can compare the machine before `lfk cluster up` and after
`lfk cluster down`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

# the kubelet sets the first three at start; the bridge plugin turns on forwarding; kube-proxy needs bridged
# traffic to pass iptables (a Service reached from a pod on the same bridge)
SYSCTLS = (
    "vm.overcommit_memory",
    "kernel.panic",
    "kernel.panic_on_oops",
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
)
TABLES = ("filter", "nat", "mangle", "raw", "security")
BRIDGE = "cni0"
# Where the node's Unix sockets live (the kubelet's root and containerd's run folder), not under the cluster's
# own directory: a socket's path may hold 107 bytes, and a deep state directory (pytest's tmp_path) pushed the
# kubelet's pod-resources socket past that, so it never became Ready. One real node per host, so one folder.
NODE_DIR = Path("/var/lib/llamafactory-k8s/node")
# fixed paths the kubelet, containerd and the CNI plugins use whatever their own directories are, and ours
FIXED_PATHS = (
    str(NODE_DIR.parent),
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
    "/run/netns",
    "/etc/cni",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBE_CGROUP = "kubepods"


def run(*argv: str, check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise OSError(f"{' '.join(argv)}: {(result.stderr or result.stdout).strip()}")
    return result.stdout


# ------------------------------------------------------------------------------------------------- sysctls
def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls() -> dict[str, str]:
    found = {}
    for name in SYSCTLS:
        path = _sysctl_path(name)
        if path.exists():
            found[name] = path.read_text().strip()
    return found


def write_sysctls(values: dict[str, str]) -> None:
    for name, value in values.items():
        _sysctl_path(name).write_text(value + "\n")


# ------------------------------------------------------------------------------------------------ iptables
def iptables_save() -> dict[str, str]:
    """Each table's rules as iptables-save prints them (counters dropped), for the tables that exist."""
    tables: dict[str, str] = {}
    text = run("iptables-save", check=False)
    for block in re.split(r"^(?=\*)", text, flags=re.M):
        if block.startswith("*"):
            name = block.splitlines()[0][1:].strip()
            body = [line for line in block.splitlines() if line and not line.startswith("#")]
            tables[name] = "\n".join(re.sub(r"\[\d+:\d+\]", "[0:0]", line) for line in body) + "\n"
    return tables


def iptables_restore(saved: dict[str, str]) -> None:
    """Put every table back as it was: the saved ones wholesale, the others flushed of rules and chains."""
    for table in TABLES:
        if table in saved:
            run("iptables-restore", "--table", table, stdin=saved[table])
        elif table in iptables_save():
            run("iptables", "-t", table, "-F", check=False)
            run("iptables", "-t", table, "-X", check=False)


def iptables_rules() -> list[str]:
    """What the rules say, whether a table exists or not: rules, user chains and non-default policies."""
    lines = []
    for table, text in sorted(iptables_save().items()):
        for line in text.splitlines():
            if line.startswith(("*", "COMMIT")):
                continue
            if re.fullmatch(r":(INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) ACCEPT \[0:0\]", line):
                continue  # a built-in chain with the default policy: the same as no table at all
            lines.append(f"{table} {line}")
    return lines


# ---------------------------------------------------------------------------------------- links and mounts
def mounts_under(*prefixes: str) -> list[str]:
    """Mount points at or below the prefixes, deepest first (the order to unmount them in)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == p or point.startswith(p.rstrip("/") + "/") for p in prefixes):
            found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def unmount_under(*prefixes: str) -> None:
    for point in mounts_under(*prefixes):
        run("umount", "--lazy", point, check=False)


def delete_bridge() -> None:
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        run("ip", "link", "delete", BRIDGE, check=False)


# --------------------------------------------------------------------------------------------------- cgroups
def kube_cgroups() -> list[Path]:
    """The kubelet's pod cgroups in every hierarchy (cgroup v1 controllers and the unified one)."""
    return sorted(p for p in CGROUP_ROOT.glob(f"*/{KUBE_CGROUP}") if p.is_dir())


def remove_cgroup(path: Path) -> None:
    """cgroup folders are removed leaf first, with rmdir: their files are not real files."""
    for folder in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        _rmdir(folder)
    _rmdir(path)


def _rmdir(path: Path) -> None:
    with contextlib.suppress(OSError):  # still in use, or already gone
        path.rmdir()


def remove_path(path: str) -> None:
    target = Path(path)
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target, ignore_errors=True)
    elif target.exists() or target.is_symlink():
        target.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------- the whole
def record() -> dict[str, Any]:
    """What `restore` needs: the sysctls, the iptables tables, and which fixed paths existed."""
    return {
        "sysctls": read_sysctls(),
        "iptables": iptables_save(),
        "paths": [p for p in FIXED_PATHS if os.path.lexists(p)],
    }


def restore(before: dict[str, Any], own_dirs: list[str]) -> None:
    """Undo what a real node changed: mounts under its directories and the fixed paths, the bridge, the pod
    cgroups, the iptables rules, the sysctls, and the fixed paths that were not there before."""
    unmount_under(*own_dirs, *FIXED_PATHS)
    delete_bridge()
    for cgroup in kube_cgroups():
        remove_cgroup(cgroup)
    iptables_restore(before.get("iptables", {}))
    write_sysctls(before.get("sysctls", {}))
    for path in FIXED_PATHS:
        if path not in before.get("paths", []):
            remove_path(path)


def fingerprint() -> dict[str, Any]:
    """Everything a real node could leave behind, to compare before and after."""
    return {
        "sysctls": read_sysctls(),
        "iptables": iptables_rules(),
        "links": sorted(os.listdir("/sys/class/net")),
        "paths": [p for p in FIXED_PATHS if os.path.lexists(p)],
        "mounts": mounts_under(*FIXED_PATHS),
        "cgroups": [str(p) for p in kube_cgroups()],
        "processes": running(NODE_PROGRAMS),
    }


NODE_PROGRAMS = ("containerd", "containerd-shim-runc-v2", "kubelet", "kube-proxy", "coredns", "pause")


def running(programs: tuple[str, ...]) -> list[str]:
    """Which of these programs run on this machine now, by the name of their executable."""
    found = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                name = os.path.basename(os.readlink(proc / "exe"))
            except OSError:
                continue
            if name in programs:
                found.add(name)
    return sorted(found)
