"""Failures rehearsed for real on the real node: a configuration error stops at the preflight (the hook in
`lfk run`, and the training pod's own exit 3 under the Job's failure policy), a pod killed for memory is
named by `lfk status`, a loss gone NaN is caught with the guide's advice, and a training crippled on purpose is
stopped by the evaluation gate before vLLM is installed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from generator.core.spec import load_spec
from generator.ops import kube
from generator.project import CHART_DIR

from .conftest import NAMESPACE, NodeCluster, edit_values, variant, wait_for


def job_of(cluster: NodeCluster, release: str, component: str = "train") -> dict[str, Any]:
    jobs = kube.request(
        cluster.api, "GET", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs",
        params={"labelSelector": f"{kube.INSTANCE}={release},{kube.COMPONENT}={component}"},
    )["items"]  # fmt: skip
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    return dict(jobs[0])


def exit_codes(pod: dict[str, Any]) -> list[int]:
    return [
        s["state"]["terminated"]["exitCode"]
        for s in pod["status"].get("containerStatuses", [])
        if "terminated" in s.get("state", {})
    ]


def test_a_dataset_missing_from_dataset_info_stops_at_the_preflight(
    node_cluster: NodeCluster, tmp_path: Path
) -> None:
    spec = variant(tmp_path, "tiny-nodata", lambda d: d["data"].update(datasets=["missing_set"]))
    result = node_cluster.lfk("run", str(spec), "--components", "train")
    assert result.returncode == 1
    # the hook's own checklist, with the guide's fix, in lfk run's output; the hook Job fails at once
    assert "pre-install" in result.stderr and "exit code 3" in result.stderr, result.stderr
    assert "✗ dataset missing_set: not registered in /storage/data/dataset_info.json" in result.stderr
    assert "(fix: lfk data register /storage/data missing_set FILE)" in result.stderr
    [hook] = node_cluster.pods({kube.INSTANCE: "tiny-nodata-train", kube.COMPONENT: "train-preflight"})
    assert exit_codes(hook) == [3]
    node_cluster.helm("uninstall", "tiny-nodata-train", "-n", NAMESPACE)

    # without the hook, the training pod's own preflight exits 3 and the failure policy ends the Job at once
    installed = node_cluster.helm(
        "install", "tiny-nodata-train", str(CHART_DIR), "-n", NAMESPACE,
        "-f", str(spec.parent / "train.yaml"), "--set", "train.preflight.enabled=false",
        "--set", "train.tokenize.enabled=false",
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr

    def failed() -> dict[str, Any] | None:
        job = job_of(node_cluster, "tiny-nodata-train")
        return job if kube.workload_state(job)[0] == "Failed" else None

    job = wait_for("the training Job failed", failed, timeout=300)
    assert kube.workload_state(job)[1].startswith("PodFailurePolicy"), kube.workload_state(job)
    [pod] = node_cluster.pods({"job-name": job["metadata"]["name"]})
    assert exit_codes(pod) == [3], "no retry: one pod, exit code 3"
    assert "✗ dataset missing_set" in node_cluster.log(pod["metadata"]["name"])
    node_cluster.helm("uninstall", "tiny-nodata-train", "-n", NAMESPACE)


def test_a_pod_killed_for_memory_is_reported_as_oomkilled_with_the_fix(
    node_cluster: NodeCluster, tmp_path: Path
) -> None:
    spec = variant(tmp_path, "tiny-oom", lambda d: d["resources"].update(memory="256Mi"))
    assert node_cluster.lfk("install", str(spec), "--component", "train").returncode == 0

    def oom_killed() -> dict[str, Any] | None:
        result = node_cluster.lfk("status", str(spec), "--output", "json")
        data = json.loads(result.stdout)
        [train] = [r for r in data["releases"] if r["component"] == "train"]
        return next((p for p in train["pods"] if "OOMKilled" in p["problem"]), None)

    pod = wait_for("a training pod killed for memory", oom_killed, timeout=300, interval=3)
    assert "limit (256Mi)" in pod["problem"] and "raise resources.memory in the spec" in pod["problem"]
    table = node_cluster.lfk("status", str(spec)).stdout
    assert "! container train was OOMKilled" in table, table
    node_cluster.helm("uninstall", "tiny-oom-train", "-n", NAMESPACE)


def test_a_loss_gone_nan_is_caught_by_status_with_the_guides_advice(
    node_cluster: NodeCluster, tmp_path: Path
) -> None:
    spec = variant(tmp_path, "tiny-nan")
    # lfk validate refuses such a learning rate: only a hand-edited values file gets it into a Job
    edited = edit_values(
        spec, "train", lambda v: v["train"]["config"].update(learning_rate=1.0e30, max_grad_norm=0.0)
    )
    installed = node_cluster.helm(
        "install", "tiny-nan-train", str(CHART_DIR), "-n", NAMESPACE, "-f", str(edited)
    )
    assert installed.returncode == 0, installed.stderr
    wait_for(
        "the NaN run finished",
        lambda: kube.workload_state(job_of(node_cluster, "tiny-nan-train"))[0] in ("Complete", "Failed"),
        timeout=420,
    )
    status = node_cluster.lfk(
        "status", str(spec), "--storage-root", str(node_cluster.storage), "--output", "json"
    )
    problems = json.loads(status.stdout)["training"]["problems"]
    assert any("Loss = NaN: the learning rate is too high" in p for p in problems), problems
    node_cluster.helm("uninstall", "tiny-nan-train", "-n", NAMESPACE)


def test_the_gate_stops_a_crippled_training_before_anything_is_served(
    node_cluster: NodeCluster, tmp_path: Path
) -> None:
    # made worse on purpose: two steps at a learning rate far too small to learn the answers
    spec = variant(
        tmp_path, "tiny-worse", lambda d: d["training"].update(maxSteps=2, learningRate=1.0e-7, saveSteps=2)
    )
    result = node_cluster.lfk("run", str(spec), "--components", "train,merge,eval,vllm", timeout=900)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "eval: job tiny-worse-eval-" in result.stderr and "failed" in result.stderr, result.stderr
    # the verdict and both models' scores side by side, in lfk run's own output
    assert "gate failed, the tuned model is not served: rouge-l" in result.stderr, result.stderr
    floor = load_spec(spec).data["evaluate"]["floor"]
    assert f"is below the floor {floor:g} (exit 5); vLLM was not installed" in result.stderr
    assert re.search(r"^ +rouge-l +[\d.]+ +[\d.]+ +[-+][\d.]+ +<- the gate's$", result.stderr, re.M), (
        result.stderr
    )
    assert node_cluster.helm("status", "tiny-worse-vllm", "-n", NAMESPACE).returncode != 0, "never installed"
    [job] = kube.workloads(node_cluster.api, NAMESPACE, "tiny-worse-eval", "eval")
    [pod] = node_cluster.pods({"job-name": job["metadata"]["name"]})
    assert exit_codes(pod) == [5], "no retry: the same models score the same"
    status = node_cluster.lfk("status", str(spec), "--read-log-in-cluster")
    assert "evaluation rouge-l: tuned" in status.stdout and "FAILED: not served" in status.stdout, (
        status.stdout
    )
    for component in ("train", "merge", "eval"):
        node_cluster.helm("uninstall", f"tiny-worse-{component}", "-n", NAMESPACE)
