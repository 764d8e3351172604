"""lfk run, status, check and ui against the real API server: the seed example from nothing to a served
model, its status at each stage (table and JSON), a re-run that skips what is done, the first failure with
its pod, events and logs, the checklist's cluster items and its preflight Job, and ui without a ready pod."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pykube
import pytest
import yaml

from generator.ops import kube
from generator.project import helm_binary
from tests.support import kube as support_kube

from .conftest import (
    CHART,
    lfk,
    render_spec,
    seed_example,
)

ROOT = CHART.parents[1]


@pytest.fixture(scope="module")
def seed(
    tmp_path_factory: pytest.TempPathFactory, namespace_factory: Any, api: pykube.HTTPClient
) -> tuple[Any, Path, str]:
    return seed_example(tmp_path_factory, namespace_factory, api, "ops-seed")


def test_run_takes_the_seed_example_from_nothing_to_a_served_model(
    seed: tuple[Any, Path, str], cluster_kubeconfig: str
) -> None:
    facts, spec, namespace = seed
    before = lfk(cluster_kubeconfig, "status", str(spec), "--output", "json")
    assert before.exit_code == 0, before.output
    assert {r["helm"] for r in json.loads(before.output)["releases"]} == {"not installed"}

    train_only = lfk(cluster_kubeconfig, "run", str(spec), "--components", "train")
    assert train_only.exit_code == 0, train_only.output
    status = json.loads(lfk(cluster_kubeconfig, "status", str(spec), "--output", "json").output)
    by_component = {r["component"]: r for r in status["releases"]}
    assert by_component["train"]["helm"] == "deployed"
    assert by_component["train"]["objects"][0]["state"] == "Complete"
    assert by_component["train"]["objects"][0]["run_id"] == facts.run_id
    assert (
        by_component["train"]["pods"][0]["node"].startswith("kwok-gpu-")
        and by_component["train"]["pods"][0]["gpus"] == 1
    )
    assert by_component["merge"]["helm"] == "not installed"

    result = lfk(cluster_kubeconfig, "run", str(spec))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert (
        lines[0]
        == f"train: run {facts.run_id} already completed (job {by_component['train']['objects'][0]['name']}); skipped"
    )
    order = [
        line.split(":")[0]
        for line in lines
        if line.endswith(("complete", "available")) or "complete (" in line or "available (" in line
    ]
    assert order == ["merge", "vllm", "webui"], result.output
    # kwok ran every pod: the run says so instead of claiming a served model
    assert (
        "vllm: helm test passed: SIMULATED (kwok marked its pod Succeeded; no request was sent)"
        in result.output
    )
    assert "vllm: SIMULATED: its pods ran on kwok nodes, where no container runs" in result.output
    assert "SIMULATED on kwok nodes (train, merge, vllm, webui)" in result.output.splitlines()[-1]
    assert "is served as" not in result.output

    table = lfk(cluster_kubeconfig, "status", str(spec))
    assert table.exit_code == 0
    for release in facts.releases.values():
        assert f" {release} " in table.output
    assert f"deployment {facts.releases['vllm']} run {facts.run_id}: Available ready 1/1" in table.output

    again = lfk(cluster_kubeconfig, "run", str(spec))
    assert again.exit_code == 0
    assert sum("skipped" in line for line in again.output.splitlines()) == 4


def test_a_chained_experiment_trains_once_the_run_it_starts_from_finished(
    seed: tuple[Any, Path, str], cluster_kubeconfig: str
) -> None:
    """DPO on the seed example's merged model (model.from): lfk run finds the seed's train and merge Jobs
    complete for its run id and trains; a spec that starts from an experiment never run is refused at once,
    naming the command that makes its result."""
    facts, spec, namespace = seed
    dpo = {
        "name": "ops-dpo", "namespace": namespace, "storage": {"existingClaim": "llm-storage"},
        "model": {"from": {"experiment": "llama31-qa"}}, "data": {"datasets": ["qa_pairs"]},
        "stage": {"type": "dpo"}, "resources": {"gpu": {"product": "NVIDIA-A100-SXM4-80GB"}},
        "webui": {"enabled": False}, "serve": {"enabled": False},
    }  # fmt: skip
    dpo_facts, folder = render_spec(yaml.safe_dump(dpo), spec.parent.parent / "ops-dpo")
    assert dpo_facts.base_model == facts.merged_dir
    result = lfk(cluster_kubeconfig, "run", str(folder / "experiment.yaml"), "--components", "train")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        f"train: starts from llama31-qa run {facts.run_id}: {facts.merged_dir} is there"
    )
    never = yaml.safe_load(spec.read_text())
    never["name"] = "ops-never-run"
    render_spec(yaml.safe_dump(never), spec.parent.parent / "ops-never-run")
    dpo.update(name="ops-dpo-waiting", model={"from": {"experiment": "ops-never-run"}})
    _, folder = render_spec(yaml.safe_dump(dpo), spec.parent.parent / "ops-dpo-waiting")
    refused = lfk(cluster_kubeconfig, "run", str(folder / "experiment.yaml"))
    assert refused.exit_code == 1
    assert "train: starts from experiment ops-never-run, whose run " in refused.output
    assert "has not finished its train (no such Job is running): run `lfk run " in refused.output


def test_run_stops_at_the_first_failure_with_pod_events_and_logs(
    seed: tuple[Any, Path, str], cluster_kubeconfig: str, tmp_path: Path
) -> None:
    _, spec, namespace = seed
    text = spec.read_text().replace("name: llama31-qa", "name: ops-broken")
    facts, folder = render_spec(text, tmp_path / "broken")
    values = (
        (folder / "train.yaml")
        .read_text()
        .replace(
            "train:\n  enabled: true\n",
            'train:\n  enabled: true\n  podAnnotations: {"lfk.local/exit-code": "3"}\n',
        )
    )
    (folder / "train.yaml").write_text(values)
    result = lfk(cluster_kubeconfig, "run", str(folder / "experiment.yaml"))
    assert result.exit_code == 1
    assert (
        "run stopped: train: job ops-broken-train-" in result.output
        and "failed: PodFailurePolicy" in result.output
    )
    assert (
        "  pod ops-broken-train-" in result.output
        and "last events:" in result.output
        and "last log lines:" in result.output
    )
    assert "merge:" not in result.output, "nothing runs after the failed step"


def test_run_stops_when_no_node_can_take_the_pod(
    seed: tuple[Any, Path, str], cluster_kubeconfig: str, tmp_path: Path
) -> None:
    _, spec, _ = seed
    text = spec.read_text().replace("name: llama31-qa", "name: ops-too-big").replace("gpus: 1", "gpus: 16")
    _, folder = render_spec(text, tmp_path / "big")
    result = lfk(
        cluster_kubeconfig,
        "run",
        str(folder / "experiment.yaml"),
        "--pending-timeout",
        "3",
        "--components",
        "train",
    )
    assert result.exit_code == 1
    assert "cannot proceed: unschedulable" in result.output and "Insufficient nvidia.com/gpu" in result.output


def test_dry_run_prints_the_helm_commands(seed: tuple[Any, Path, str], cluster_kubeconfig: str) -> None:
    facts, spec, namespace = seed
    result = lfk(cluster_kubeconfig, "run", str(spec), "--dry-run")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert len(lines) == 5 and " test " in lines[3]
    assert all(f"--namespace {namespace}" in line for line in lines)


def test_check_finds_the_secrets_and_gpu_nodes(
    seed: tuple[Any, Path, str], cluster_kubeconfig: str, api: pykube.HTTPClient
) -> None:
    facts, spec, namespace = seed
    result = lfk(cluster_kubeconfig, "check", str(spec))
    assert "✓ referenced Secrets exist: hf-token, mlflow-credentials, vllm-api-key" in result.output
    assert (
        "✓ a node with enough allocatable GPUs: 1 node(s) matching {'nvidia.com/gpu.product': 'NVIDIA-A100-SXM4-80GB'}"
        in result.output
    )
    pykube.Secret.objects(api, namespace=namespace).get(name="vllm-api-key").delete()
    try:
        missing = lfk(cluster_kubeconfig, "check", str(spec))
        assert missing.exit_code == 1
        assert (
            "✗ referenced Secrets exist: in namespace ops-seed: missing vllm-api-key (keys token)"
            in missing.output
        )
        assert "fix: kubectl -n ops-seed create secret generic" in missing.output
    finally:
        pykube.Secret(
            api,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "vllm-api-key", "namespace": namespace},
                "stringData": {"token": "x"},
            },
        ).create()


def test_check_in_cluster_runs_the_preflight_job_without_a_gpu(
    seed: tuple[Any, Path, str], cluster_kubeconfig: str, api: pykube.HTTPClient
) -> None:
    facts, spec, namespace = seed
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def watch() -> None:
        # the check deletes its Job before it returns: caught while it exists
        while not done.is_set() and not seen:
            seen.extend(
                j
                for j in support_kube.jobs(api, namespace, facts.releases["train"])
                if "-check-" in j["metadata"]["name"]
            )
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = lfk(cluster_kubeconfig, "check", str(spec), "--in-cluster")
    finally:
        done.set()
        watcher.join()
    assert "check: preflight Job llama31-qa-train-check-" in result.output, result.output
    assert "✓ preflight Job in the cluster: every item passed" in result.output
    [job] = seen
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    # the preflight's flags are arguments of the script, started through boot.py, never a shell line
    assert container["command"][:3] == ["python3", "/scripts/boot.py", "preflight.py"]
    assert "--cpu" in container["command"][3:]
    assert not job["metadata"].get("annotations", {}).get("helm.sh/hook")
    # its ConfigMap (the hook ConfigMap's data under the check's name) goes with it
    name = job["metadata"]["name"]
    assert [v["configMap"]["name"] for v in job["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
    assert all(
        v["configMap"]["name"] == name for v in job["spec"]["template"]["spec"]["volumes"] if "configMap" in v
    )
    left = kube.request(api, "GET", f"/api/v1/namespaces/{namespace}/configmaps")
    assert name not in [c["metadata"]["name"] for c in left["items"]]
    # and the Job is gone, or going (foreground deletion waits for its pod)
    for j in support_kube.jobs(api, namespace, facts.releases["train"]):
        assert j["metadata"]["name"] != name or j["metadata"].get("deletionTimestamp")


def test_ui_fails_cleanly_without_a_ready_pod(
    seed: tuple[Any, Path, str], cluster_kubeconfig: str, tmp_path: Path
) -> None:
    _, spec, _ = seed
    text = spec.read_text().replace("name: llama31-qa", "name: ops-noui")
    _, folder = render_spec(text, tmp_path / "noui")
    missing = lfk(cluster_kubeconfig, "ui", str(folder / "experiment.yaml"), "webui")
    assert missing.exit_code == 1
    assert "ui: ops-noui-webui has no pod: the release is not installed" in missing.output

    text = (
        text.replace("name: ops-noui", "name: ops-pending").replace("webui: {}", "")
        + "\nwebui: {resources: {gpus: 64}}\n"
    )
    _, folder = render_spec(text, tmp_path / "pending")
    assert (
        lfk(cluster_kubeconfig, "install", str(folder / "experiment.yaml"), "--component", "webui").exit_code
        == 0
    )
    # the Deployment's pod appears a moment after the install (the controller-manager makes it)
    deadline = time.monotonic() + 60
    while True:
        pending = lfk(cluster_kubeconfig, "ui", str(folder / "experiment.yaml"), "webui")
        if "has no pod" not in pending.output or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert pending.exit_code == 1
    assert "no Ready pod of ops-pending-webui" in pending.output and "Pending" in pending.output


def test_status_reader_pod_is_gpu_less_read_only_admitted_and_deleted(
    seed: tuple[Any, Path, str], cluster_kubeconfig: str, api: pykube.HTTPClient
) -> None:
    """kwok runs no container, so whether the log is really read is the node tier's test; here: the pod's
    shape, and that the real API server admits it under Pod Security restricted and it is deleted afterwards."""
    from generator.core.spec import load_spec
    from generator.ops.reader import reader_pod
    from generator.ops.target import Target

    facts, spec, namespace = seed
    target = Target.of(load_spec(spec), helm_binary(), cluster_kubeconfig)
    command = ["tail", "-n", "2000", f"{facts.output_dir}/trainer_log.jsonl"]
    pod = reader_pod(target, command, "reader-check")
    container = pod["spec"]["containers"][0]
    assert container["command"] == command
    assert container["volumeMounts"] == [{"name": "storage", "mountPath": "/storage", "readOnly": True}]
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"] == {
        "claimName": f"{facts.releases['train']}-storage",
        "readOnly": True,
    }
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    # on the real API server under Pod Security restricted: admitted, run to the end, deleted afterwards
    result = lfk(cluster_kubeconfig, "status", str(spec), "--read-log-in-cluster", "--output", "json")
    assert result.exit_code == 0, result.output
    assert "training" in json.loads(result.output)
    assert "checkpoints" in json.loads(result.output)
    assert not [
        p
        for p in pykube.Pod.objects(api, namespace=namespace)
        if "-read-" in p.name and not p.obj["metadata"].get("deletionTimestamp")
    ]
