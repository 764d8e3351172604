"""The real node itself: registered beside the simulated GPU nodes, one per machine, and a clean stop that
leaves this machine as it found it. Runs before the tier's shared cluster starts (modules run in order)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from generator.cluster import host, kubeconfig, lifecycle, nodes, realnode
from generator.errors import ClusterError
from generator.ops import kube


def test_up_registers_the_real_node_and_down_leaves_the_host_as_before(tmp_path: Path) -> None:
    before = host.fingerprint()
    assert not before["processes"], f"a node program already runs here: {before['processes']}"
    directory = tmp_path / "cluster"
    try:
        state, started = lifecycle.up(directory, nodes.default_nodes(1), real_node=True)
        assert started
        listing = {n["name"]: n for n in nodes.listing(state.api())}
        assert listing[realnode.NODE_NAME]["ready"] and not listing[realnode.NODE_NAME]["simulated"]
        assert listing["kwok-gpu-0"]["simulated"]
        node = kube.request(state.api(), "GET", f"/api/v1/nodes/{realnode.NODE_NAME}")
        assert node["metadata"]["labels"][realnode.REAL_NODE_LABEL] == "true"
        assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://2.")
        assert {"type": "InternalIP", "address": realnode.GATEWAY} in node["status"]["addresses"]
        assert "nvidia.com/gpu" not in node["status"]["allocatable"], "the real node has no GPUs"

        # a second real node on the same machine is refused, saying which cluster has it, and leaves nothing
        with pytest.raises(
            ClusterError, match=r"a real node already runs on this machine, for the cluster in"
        ):
            lifecycle.up(tmp_path / "second", nodes.default_nodes(1), real_node=True)
        assert not (tmp_path / "second").exists()

        # kind's habit: the context in the user's kubeconfig, selected; removed again, the old one selected
        user = tmp_path / "user-kubeconfig"
        user.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "current-context": "theirs",
                                        "contexts": [{"name": "theirs", "context": {}}]}))  # fmt: skip
        kubeconfig.export(state, user)
        exported = yaml.safe_load(user.read_text())
        assert exported["current-context"] == kubeconfig.NAME
        assert {c["name"] for c in exported["contexts"]} == {"theirs", kubeconfig.NAME}
    finally:
        lifecycle.down(directory)
    withdrawn = yaml.safe_load(user.read_text())
    assert withdrawn["current-context"] == "theirs" and [c["name"] for c in withdrawn["contexts"]] == [
        "theirs"
    ]
    after = host.fingerprint()
    assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}
