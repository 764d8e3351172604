"""What `make demo` does that the rest of the tier does not: its `.venv` has no LLaMA-Factory and no torch, so
the tiny model is made by `lfk exec` in a pod of the training's image (tests/support/tiny.py --in-pod). That
model must be the one this tier makes here, which every other node test trains."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from generator.core.spec import load_spec
from generator.core.storage import local
from tests.support import tiny

from .conftest import TINY, NodeCluster, variant


def test_the_demos_tiny_model_made_in_a_pod_is_the_one_made_here(
    node_cluster: NodeCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = variant(tmp_path, "tiny-in-pod", lambda d: d["model"].update(path="/storage/models/tiny-in-pod"))
    # tiny-cpu's datasets, which the model learns from
    shutil.copytree(TINY.parent / "data", spec.parent / "data")
    for name in ("KUBECONFIG", "LFK_HELM"):  # the lfk exec that prepare runs talks to this tier's cluster
        monkeypatch.setenv(name, node_cluster.env[name])
    # the model the tier made here (the node_cluster fixture), at tiny-cpu's own model path
    made_here = local(node_cluster.storage, load_spec(TINY).data["model"]["path"])
    in_pod = tiny.prepare(node_cluster.storage, spec, in_pod=True)
    try:
        assert in_pod == node_cluster.storage / "models" / "tiny-in-pod"
        assert not (node_cluster.storage / tiny.SCRIPT_ON_STORAGE).exists(), "the script left the storage"
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            assert json.loads((in_pod / name).read_text()) == json.loads((made_here / name).read_text()), name
        ours, theirs = load_file(made_here / "model.safetensors"), load_file(in_pod / "model.safetensors")
        assert ours.keys() == theirs.keys()
        assert all(ours[k].dtype == theirs[k].dtype and ours[k].equal(theirs[k]) for k in ours)
    finally:
        shutil.rmtree(in_pod, ignore_errors=True)
