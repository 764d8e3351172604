"""An image broken in the real node's containerd mends itself: `lfk cluster up` checks every image whole (its
manifest, config and unpacked layers), not only its name and digest, and imports a broken one again. Runs
last in the tier (modules run in order): it breaks the small pause image on purpose, which every pod's sandbox
uses, and a pod started afterwards shows it mended."""

from __future__ import annotations

import json
import time

from generator.cluster import lifecycle, nodes, realnode, runtime

from .conftest import NAMESPACE, NodeCluster


def test_cluster_up_imports_again_an_image_whose_content_is_gone(node_cluster: NodeCluster) -> None:
    state = node_cluster.state
    assert runtime.whole(runtime.ctr(state, "images", "check"))[runtime.PAUSE_IMAGE]
    # what a disk that filled up during the import left: the image listed at its digest, its config gone
    digest = runtime.present(state)[runtime.PAUSE_IMAGE]
    manifest = json.loads(runtime.ctr(state, "content", "get", digest))
    if "manifests" in manifest:  # an index: its first manifest
        manifest = json.loads(runtime.ctr(state, "content", "get", manifest["manifests"][0]["digest"]))
    runtime.ctr(state, "content", "rm", manifest["config"]["digest"])
    assert runtime.present(state)[runtime.PAUSE_IMAGE] == digest, "still listed, as it was when it broke"
    assert not runtime.whole(runtime.ctr(state, "images", "check", check=False)).get(runtime.PAUSE_IMAGE)

    said: list[str] = []
    _, started = lifecycle.up(state.directory, nodes.default_nodes(1), real_node=True, report=said.append)
    assert not started, "the running cluster is kept"
    assert (
        f"image {runtime.PAUSE_IMAGE} in containerd is incomplete (its unpacked layers are gone): importing it again"
        in said
    )
    assert runtime.whole(runtime.ctr(state, "images", "check"))[runtime.PAUSE_IMAGE]

    # a new pod's sandbox starts from the mended image
    name = f"mended-{int(time.time())}"
    overrides = {
        "spec": {
            "nodeSelector": {realnode.REAL_NODE_LABEL: "true"},
            "tolerations": [{"key": realnode.REAL_NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": name,
                    "image": "lfk.local/llamafactory:0.9.5",
                    "imagePullPolicy": "Never",
                    "command": ["true"],
                    "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        }
    }
    created = node_cluster.kubectl(
        "run", name, "-n", NAMESPACE, "--image=lfk.local/llamafactory:0.9.5", "--restart=Never",
        f"--overrides={json.dumps(overrides)}",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    try:
        deadline = time.monotonic() + 180
        phase = ""
        while time.monotonic() < deadline and phase not in ("Succeeded", "Failed"):
            got = node_cluster.kubectl("get", "pod", name, "-n", NAMESPACE, "-o", "jsonpath={.status.phase}")
            phase = got.stdout.strip()
            time.sleep(2)
        assert phase == "Succeeded", node_cluster.kubectl("describe", "pod", name, "-n", NAMESPACE).stdout
    finally:
        node_cluster.kubectl("delete", "pod", name, "-n", NAMESPACE, "--wait=false")
