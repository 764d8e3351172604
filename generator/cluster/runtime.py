"""containerd for the real node: its configuration (CRI with runc from Debian, the CNI plugins, the pause image
built here), start and stop by PID, the images built here imported into it, and a clean-up of every task and
container it still runs.

Its root (content store and unpacked image layers) lives in the user's cache, so images imported once stay
for the next cluster; its state and sockets live in the node's short folder (host.NODE_DIR, emptied when the
node stops), its CNI configuration in the cluster's state directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from ..core.cache import cache_dir
from ..errors import ClusterError, ToolMissing
from ..project import built_tool
from . import host, processes
from .state import State

NAMESPACE = "k8s.io"  # the containerd namespace the CRI plugin (and so the kubelet) uses
PAUSE_IMAGE = "lfk.local/pause:3.10"
IMAGES = ("pause", "llamafactory", "vllm-cpu")  # built by hack/build-images.sh
RUNC = "/usr/sbin/runc"
CNI_BIN = "/usr/lib/cni"
Report = Callable[[str], None]


def root_dir() -> Path:
    return cache_dir() / "containerd"


def run_dir(state: State) -> Path:
    return host.NODE_DIR / "containerd"


def socket(state: State) -> Path:
    return run_dir(state) / "containerd.sock"


def cni_conf_dir(state: State) -> Path:
    return state.directory / "cni" / "net.d"


def binaries() -> dict[str, Path]:
    folder = built_tool("containerd", "CONTAINERD_VERSION").parent
    found = {name: folder / name for name in ("containerd", "containerd-shim-runc-v2", "ctr")}
    missing = [str(p) for p in found.values() if not p.is_file()]
    if missing:
        raise ToolMissing(f"missing {', '.join(missing)}: run `make node-tools`")
    for program, package in ((RUNC, "runc"), (f"{CNI_BIN}/bridge", "containernetworking-plugins")):
        if not Path(program).is_file():
            raise ToolMissing(f"missing {program}: run `make node-tools` (installs Debian's {package})")
    return found


def config(state: State) -> str:
    """containerd's configuration (version 3, containerd 2.x)."""
    run = run_dir(state)
    # no CAP_SYS_RESOURCE here: the pause container's oom_score_adj -998 fails in runc unless restricted
    return f"""version = 3
root = "{root_dir()}"
state = "{run / "state"}"
temp = "{run / "tmp"}"
imports = []

[grpc]
  address = "{socket(state)}"

[ttrpc]
  address = "{socket(state)}.ttrpc"

# kept off the host's own paths (/opt/containerd, /var/run/nri)
[plugins."io.containerd.internal.v1.opt"]
  path = "{run / "opt"}"

[plugins."io.containerd.nri.v1.nri"]
  disable = true
  socket_path = "{run / "nri.sock"}"

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  cdi_spec_dirs = []
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        Root = "{run / "runc"}"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{CNI_BIN}"]
    conf_dir = "{cni_conf_dir(state)}"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"
"""


def start(state: State) -> None:
    found = binaries()
    run = run_dir(state)
    for sub in ("state", "tmp", "opt", "runc"):
        (run / sub).mkdir(parents=True, exist_ok=True)
    root_dir().mkdir(parents=True, exist_ok=True)
    (run / "config.toml").write_text(config(state), encoding="utf-8")
    # the shim is found on PATH
    env = {**os.environ, "PATH": f"{found['containerd'].parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    processes.start(
        state, "containerd", [str(found["containerd"]), "--config", str(run / "config.toml")], env
    )
    deadline = time.monotonic() + 30
    while not ctr_ok(state):
        if not processes.alive(state.pids["containerd"]) or time.monotonic() > deadline:
            raise ClusterError(
                f"containerd did not start; last lines of its log:\n{processes.tail(state, 'containerd')}"
            )
        time.sleep(0.2)


def ctr(state: State, *args: str, check: bool = True) -> str:
    binary = str(binaries()["ctr"])
    return host.run(binary, "--address", str(socket(state)), "--namespace", NAMESPACE, *args, check=check)


def ctr_ok(state: State) -> bool:
    try:
        ctr(state, "version")
    except OSError:
        return False
    return True


# ------------------------------------------------------------------------------------------------- images
def archive_of(name: str) -> Path | None:
    """The newest OCI archive hack/build-images.sh wrote for an image, if any."""
    pointer = cache_dir() / "images" / f"{name}.current"
    try:
        path = Path(pointer.read_text(encoding="utf-8").strip())
    except OSError:
        return None
    return path if path.is_file() else None


def archive_image(archive: Path) -> tuple[str, str]:
    """(image name, manifest digest) recorded in an OCI archive's index.json."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise ClusterError(f"{archive}: no index.json")
        index = json.load(member)
    manifest = index["manifests"][0]
    name = manifest.get("annotations", {}).get("io.containerd.image.name") or manifest.get(
        "annotations", {}
    ).get("org.opencontainers.image.ref.name", "")
    return name, manifest["digest"]


def present(state: State) -> dict[str, str]:
    """Image name -> target digest of the images containerd has."""
    found = {}
    for line in ctr(state, "images", "ls").splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3:
            found[parts[0]] = parts[2]
    return found


def whole(check_output: str) -> dict[str, bool]:
    """Image name -> whether containerd can start containers from it, from `ctr images check`: its manifest and
    config are there and its layers are unpacked into the snapshotter. (The layers' own blobs are discarded
    once unpacked, so "incomplete" content alone is expected; an image that is not unpacked needs them.)
    Columns: REF TYPE DIGEST STATUS SIZE UNPACKED, where STATUS and SIZE hold spaces."""
    found = {}
    for line in check_output.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 4:
            found[parts[0]] = parts[-1] == "true"
    return found


def import_images(state: State, report: Report) -> list[str]:
    """Make every built image whole in containerd: import the ones it lacks, has at another digest, or has
    broken (a fault during an earlier import, a disk that filled up, can leave an image listed at the right
    digest whose content is gone: every pod of it would fail to start). An import that does not leave the
    image whole is removed again, so an image is there whole or not at all. The images still missing."""
    have = present(state)
    healthy = whole(ctr(state, "images", "check", check=False))
    missing = []
    for name in IMAGES:
        archive = archive_of(name)
        if archive is None:
            missing.append(name)
            continue
        ref, digest = archive_image(archive)
        if ref and have.get(ref) == digest and healthy.get(ref):
            continue
        if ref and have.get(ref) == digest:
            report(
                f"image {ref} in containerd is incomplete (its unpacked layers are gone): importing it again"
            )
        if ref and ref in have:
            ctr(state, "images", "rm", "--sync", ref, check=False)
        size = archive.stat().st_size / 2**30
        report(f"importing image {ref or name} ({size:.1f} GiB) into containerd")
        started = time.monotonic()
        # once unpacked, the layers' blobs are only a second copy of the archive: let them be collected
        try:
            ctr(state, "images", "import", "--local", "--discard-unpacked-layers", str(archive))
            complete = not ref or whole(ctr(state, "images", "check", check=False)).get(ref, False)
            failure = "" if complete else "it is not whole"
        except OSError as exc:
            failure = str(exc)
        if failure:
            if ref:
                ctr(state, "images", "rm", "--sync", ref, check=False)
            free = shutil.disk_usage(root_dir()).free / 2**30
            raise ClusterError(
                f"importing {ref or name} into containerd failed ({failure}); {free:.1f} GiB free under "
                f"{root_dir()}: free disk if it is short, then run `lfk cluster up` again"
            )
        report(f"imported {ref or name} in {time.monotonic() - started:.0f} s")
    return missing


# ---------------------------------------------------------------------------------------------- clean-up
def remove_everything(state: State) -> None:
    """Kill every task and delete every container of the CRI namespace: what pods the kubelet did not stop."""
    if not ctr_ok(state):
        return
    for task in ctr(state, "tasks", "ls", "-q", check=False).split():
        ctr(state, "tasks", "kill", "--signal", "SIGKILL", task, check=False)
    deadline = time.monotonic() + 10
    while (tasks := ctr(state, "tasks", "ls", "-q", check=False).split()) and time.monotonic() < deadline:
        for task in tasks:
            ctr(state, "tasks", "delete", "--force", task, check=False)
        time.sleep(0.2)
    for container in ctr(state, "containers", "ls", "-q", check=False).split():
        ctr(state, "containers", "delete", container, check=False)


def kill_shims() -> None:
    """Shims outlive containerd by design; ours are told apart by their executable."""
    shim = built_tool("containerd", "CONTAINERD_VERSION", "containerd-shim-runc-v2")
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.readlink(proc / "exe") == str(shim):
                    os.kill(int(proc.name), 9)
            except OSError:
                continue
