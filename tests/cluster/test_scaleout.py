"""Scale-out on the real API server: the multi-node example as an Indexed Job with a headless Service (ranks,
DNS names, one pod per node, completion), Kueue's suspended admission, and every operator engine's object
accepted by the API server against the operator's own CRD schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pykube
import pytest

from generator.ops import kube, wait
from tests.support import kube as support_kube

from .conftest import CHART, Helm, create_prerequisites, restricted_namespace
from .test_examples import admit

ROOT = CHART.parents[1]
MULTI = ROOT / "values" / "llama70b-zero3"


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "train")
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_the_multi_node_example_runs_as_an_indexed_job_with_correct_ranks(
    helm3: Helm, api: pykube.HTTPClient, namespace_factory: Any
) -> None:
    namespace = restricted_namespace(namespace_factory, "scaleout-multinode")
    create_prerequisites(api, namespace)
    release = "llama70b-zero3-train"
    helm3("upgrade", "--install", release, str(CHART), "-n", namespace, "-f", str(MULTI / "train.yaml"))
    [job] = [
        j
        for j in support_kube.jobs(api, namespace, release)
        if not j["metadata"]["name"].endswith("-preflight")
    ]
    name = job["metadata"]["name"]

    # Kueue: created suspended with the queue label, no pod until admitted
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "llm-team"
    assert (
        job["spec"]["completionMode"] == "Indexed"
        and job["spec"]["completions"] == job["spec"]["parallelism"] == 2
    )
    assert not kube.pods(api, namespace, {"job-name": name})
    admit(api, namespace, job)
    outcome = wait.job(api, namespace, name, timeout=90)
    assert outcome.ok, outcome.reason

    pods = sorted(
        kube.pods(api, namespace, {"job-name": name}),
        key=lambda p: p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"],
    )
    assert len(pods) == 2
    nodes = {p["spec"]["nodeName"] for p in pods}
    assert len(nodes) == 2, "one pod per node"
    node_objects = {n.name: n.obj for n in pykube.Node.objects(api)}
    for pod in pods:
        labels = node_objects[pod["spec"]["nodeName"]]["metadata"]["labels"]
        assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
        assert kube.gpu_request(pod) == 8

    service = pykube.Service.objects(api, namespace=namespace).get(name=f"{release}-nodes").obj
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    for index, pod in enumerate(pods):
        assert pod["spec"]["hostname"] == f"{name}-{index}"
        assert pod["spec"]["subdomain"] == service["metadata"]["name"]
        assert pod["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == str(index)
        env = env_of(pod)
        assert env["NNODES"] == "2" and env["NPROC_PER_NODE"] == "8" and env["MASTER_PORT"] == "29500"
        assert env["NODE_RANK"] == {
            "fieldRef": {
                "apiVersion": "v1",
                "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']",
            }
        }
        # the first pod's stable DNS name: <hostname>.<headless service>
        assert env["MASTER_ADDR"] == f"{pods[0]['spec']['hostname']}.{pods[0]['spec']['subdomain']}"
        assert env["RDZV_ID"] and env["MAX_RESTARTS"] == "3" and env["FORCE_TORCHRUN"] == "1"
        assert env["NCCL_DEBUG"] == "WARN"
    config = pykube.ConfigMap.objects(api, namespace=namespace).get(name=f"{release}-config").obj["data"]
    assert (
        '"stage": 3' in config["deepspeed.json"]
        and "deepspeed: /config/deepspeed.json" in config["train.yaml"]
    )


def missing_from(sent: Any, kept: Any, path: str = "spec") -> list[str]:
    """Paths of what we sent that the API server did not keep (it may add defaults, never drop ours)."""
    if isinstance(sent, dict):
        if not isinstance(kept, dict):
            return [path]
        return [
            m
            for k, v in sent.items()
            for m in (missing_from(v, kept[k], f"{path}.{k}") if k in kept else [f"{path}.{k}"])
        ]
    if isinstance(sent, list):
        if not isinstance(kept, list) or len(kept) != len(sent):
            return [path]
        return [
            m
            for i, (a, b) in enumerate(zip(sent, kept, strict=True))
            for m in missing_from(a, b, f"{path}[{i}]")
        ]
    return [] if sent == kept or str(sent) == str(kept) else [path]


ENGINES = {
    "trainjob": ("TrainJob", "/apis/trainer.kubeflow.org/v1alpha1", "trainjobs"),
    "pytorchjob": ("PyTorchJob", "/apis/kubeflow.org/v1", "pytorchjobs"),
    "jobset": ("JobSet", "/apis/jobset.x-k8s.io/v1alpha2", "jobsets"),
    "rayjob": ("RayJob", "/apis/ray.io/v1", "rayjobs"),
}


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_each_operator_engine_is_accepted_by_the_api_server(
    engine: str, helm3: Helm, api: pykube.HTTPClient, namespace_factory: Any, operator_crds: list[str]
) -> None:
    kind, prefix, plural = ENGINES[engine]
    assert any(name.startswith(plural + ".") for name in operator_crds)
    namespace = restricted_namespace(namespace_factory, f"engine-{engine}")
    create_prerequisites(api, namespace)
    values = ROOT / "tests" / "cases" / "valid" / f"engine-{engine}" / "train.yaml"
    release = f"eng-{engine}-train"
    helm3("install", release, str(CHART), "-n", namespace, "-f", str(values))
    objects = kube.request(api, "GET", f"{prefix}/namespaces/{namespace}/{plural}")["items"]
    assert [o["kind"] for o in objects] == [kind]
    created = objects[0]
    assert created["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert created["metadata"]["labels"][kube.INSTANCE] == release
    # what the API server kept is what we sent: nothing was pruned as unknown by the CRD's schema
    rendered = helm3("get", "manifest", release, "-n", namespace).stdout
    import yaml

    [sent] = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == kind]
    assert not missing_from(sent["spec"], created["spec"]), (
        f"the API server dropped {missing_from(sent['spec'], created['spec'])}"
    )
    helm3("uninstall", release, "-n", namespace, "--wait")
    assert not kube.request(api, "GET", f"{prefix}/namespaces/{namespace}/{plural}")["items"]


def test_engine_needs_are_stated_by_validate(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from generator.cli import cli

    result = CliRunner().invoke(
        cli, ["validate", str(ROOT / "tests/cases/valid/engine-jobset/experiment.yaml")]
    )
    assert result.exit_code == 0
    assert (
        "the jobset engine creates jobsets.jobset.x-k8s.io objects: JobSet must be installed in the cluster"
        in result.output
    )


def test_check_reports_whether_the_engine_is_installed(
    cluster_kubeconfig: str, operator_crds: list[str]
) -> None:
    from click.testing import CliRunner

    from generator.cli import cli

    env = {"KUBECONFIG": cluster_kubeconfig}
    installed = CliRunner().invoke(
        cli, ["check", str(ROOT / "tests/cases/valid/engine-jobset/experiment.yaml")], env=env
    )
    assert "✓ jobset engine installed: jobsets.jobset.x-k8s.io is served (JobSet)" in installed.output


def test_run_and_status_follow_any_engine_and_kueue(
    cluster_kubeconfig: str,
    api: pykube.HTTPClient,
    namespace_factory: Any,
    operator_crds: list[str],
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from generator.cli import cli

    from .conftest import render_spec, with_namespace

    namespace = restricted_namespace(namespace_factory, "scaleout-run")
    create_prerequisites(api, namespace)
    env = {"KUBECONFIG": cluster_kubeconfig}
    text = with_namespace((ROOT / "tests/cases/valid/engine-jobset/experiment.yaml").read_text(), namespace)
    _, folder = render_spec(text, tmp_path / "jobset")
    spec = str(folder / "experiment.yaml")
    # no JobSet controller and no Kueue run here: the JobSet stays suspended in its queue
    result = CliRunner().invoke(cli, ["run", spec, "--components", "train", "--timeout", "4"], env=env)
    assert result.exit_code == 1
    assert (
        "train: jobset eng-jobset-train-" in result.output
        and "suspended, waiting in queue team-a: no Kueue answers in this cluster" in result.output
    )
    assert "failed: not finished after 4 s" in result.output and "(no pod was created)" in result.output, (
        result.output
    )
    status = CliRunner().invoke(cli, ["status", spec, "--output", "json"], env=env)
    [train] = [r for r in __import__("json").loads(status.output)["releases"] if r["component"] == "train"]
    assert train["objects"][0]["kind"] == "JobSet" and train["objects"][0]["state"] == "Suspended"
