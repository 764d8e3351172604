"""The harness's reading of a rendered Job (tests/support/podcommand.py), which the llamafactory tier and
`make smoke` use to run the merge and the gate as their Jobs do: the container's command line and literal
environment are taken whole, and every pod path lands on this machine or stops the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.podcommand import PodCommand, localised, localised_argument, rendered_command
from tests.support.podfiles import FILES


def job(name: str, container: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }


MANIFESTS = [
    {"kind": "ConfigMap", "metadata": {"name": "demo-eval"}, "data": {"eval_gate.py": "..."}},
    job("demo-eval", {
        "name": "eval",
        "command": ["python3", "/scripts/boot.py", "eval_gate.py"],
        "args": ["/config/base.yaml", "/config/tuned.yaml", "--metric=rouge-l", "--scores=/storage/output/demo/1/scores.json"],
        "env": [
            {"name": "HOME", "value": "/tmp/home"},
            {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"},
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
        ],
    }),
]  # fmt: skip


def test_a_jobs_container_is_taken_whole_with_its_literal_environment() -> None:
    pod = rendered_command(MANIFESTS, "eval")
    assert pod.argv == [
        "python3", "/scripts/boot.py", "eval_gate.py", "/config/base.yaml", "/config/tuned.yaml",
        "--metric=rouge-l", "--scores=/storage/output/demo/1/scores.json",
    ]  # fmt: skip
    assert pod.env == {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}, "no pod home, no Secret reference"


def test_a_container_that_is_not_rendered_once_stops_the_harness() -> None:
    with pytest.raises(ValueError, match="0 Job containers named merge"):
        rendered_command(MANIFESTS, "merge")
    with pytest.raises(ValueError, match="2 Job containers named eval"):
        rendered_command([*MANIFESTS, MANIFESTS[1]], "eval")


def test_the_pods_paths_are_moved_to_this_machine(tmp_path: Path) -> None:
    files = {"/config/base.yaml": tmp_path / "base.yaml", "/config/tuned.yaml": tmp_path / "tuned.yaml"}
    pod = localised(rendered_command(MANIFESTS, "eval"), tmp_path, files)
    assert pod.argv == [
        "python3", str(FILES / "boot.py"), "eval_gate.py", str(tmp_path / "base.yaml"), str(tmp_path / "tuned.yaml"),
        "--metric=rouge-l", f"--scores={tmp_path}/output/demo/1/scores.json",
    ]  # fmt: skip
    merge = PodCommand(
        ["/bin/bash", "/scripts/merge.sh"],
        {"EXPORT_DIR": "/storage/models/merged/demo", "MERGE_DTYPE": "bfloat16"},
    )
    assert localised(merge, tmp_path) == PodCommand(
        ["/bin/bash", str(FILES / "merge.sh")],
        {"EXPORT_DIR": f"{tmp_path}/models/merged/demo", "MERGE_DTYPE": "bfloat16"},
    )


def test_a_pod_config_file_without_a_local_copy_stops_the_harness(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="/config/other.yaml: no local copy"):
        localised_argument("/config/other.yaml", tmp_path, {})
    assert localised_argument("--metric=rouge-l", tmp_path, {}) == "--metric=rouge-l"
    assert localised_argument("/storage-like/x", tmp_path, {}) == "/storage-like/x", "only the storage itself"
