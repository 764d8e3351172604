"""Every example in values/, installed on a real API server in the seed's order (train -> merge -> vllm,
then webui), in a namespace where Pod Security admission enforces `restricted`; then `helm test` and
`helm uninstall`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pykube
import pytest

from generator.cluster.realnode import REAL_NODE_LABEL
from generator.core.components import INSTALL_ORDER, is_job
from generator.core.facts import derive
from generator.core.spec import load_spec
from generator.ops import kube, wait
from tests.support import kube as support_kube

from .conftest import CHART, Helm, create_prerequisites, restricted_namespace

ROOT = CHART.parents[1]
# the examples for GPU nodes; one that selects the real node (tiny-cpu) runs in real pods in the node tier
EXAMPLES = sorted(
    p.parent.name
    for p in ROOT.glob("values/*/experiment.yaml")
    if REAL_NODE_LABEL not in load_spec(p).data["resources"]["nodeSelector"]
)


def install(helm: Helm, namespace: str, release: str, values: Path, *extra: str) -> None:
    helm(
        "upgrade", "--install", release, str(CHART), "--namespace", namespace, "--values", str(values), *extra
    )


def admit(api: pykube.HTTPClient, namespace: str, job: dict[str, Any]) -> None:
    """What Kueue does when the queue has room: unsuspend the Job."""
    kube.request(
        api, "PATCH", f"/apis/batch/v1/namespaces/{namespace}/jobs/{job['metadata']['name']}",
        data='{"spec": {"suspend": false}}', headers={"Content-Type": "application/merge-patch+json"},
    )  # fmt: skip


def wait_component(api: pykube.HTTPClient, namespace: str, component: str, release: str) -> None:
    if is_job(component):
        [job] = [
            j
            for j in support_kube.jobs(api, namespace, release)
            if j["metadata"]["labels"][kube.COMPONENT] == component
        ]
        if job["spec"].get("suspend"):
            assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"], "suspended only for a queue"
            assert not kube.pods(api, namespace, {"job-name": job["metadata"]["name"]}), (
                "no pod before admission"
            )
            admit(api, namespace, job)
        outcome = wait.job(api, namespace, job["metadata"]["name"], timeout=90)
        assert outcome.ok, f"{release}: {outcome.reason}"
    else:
        outcome = wait.deployment(api, namespace, release, timeout=90)
        assert outcome.ok, f"{release}: {outcome.reason}"


def assert_pods_fit_their_nodes(api: pykube.HTTPClient, namespace: str) -> None:
    nodes = {n.name: n.obj for n in pykube.Node.objects(api)}
    placed = 0
    for pod in (p.obj for p in pykube.Pod.objects(api, namespace=namespace)):
        node_name = pod["spec"].get("nodeName")
        assert node_name, f"{pod['metadata']['name']} was never scheduled"
        node = nodes[node_name]
        wanted = kube.gpu_request(pod)
        assert int(node["status"]["allocatable"].get("nvidia.com/gpu", 0)) >= wanted
        for key, value in (pod["spec"].get("nodeSelector") or {}).items():
            assert node["metadata"]["labels"].get(key) == value, (
                f"{pod['metadata']['name']} ignored {key}={value}"
            )
        placed += 1
    assert placed


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_installs_runs_tests_and_uninstalls(
    example: str, helm: Helm, api: pykube.HTTPClient, namespace_factory: Any
) -> None:
    facts = derive(load_spec(ROOT / "values" / example / "experiment.yaml"))
    namespace = restricted_namespace(namespace_factory, f"ex-{example}-{helm.binary.parent.name[:7]}"[:63])
    create_prerequisites(api, namespace)

    for component in (c for c in INSTALL_ORDER if c in facts.releases):
        release = facts.releases[component]
        install(helm, namespace, release, ROOT / "values" / example / f"{component}.yaml")
        wait_component(api, namespace, component, release)
    assert_pods_fit_their_nodes(api, namespace)

    if "vllm" in facts.releases:
        result = helm("test", facts.releases["vllm"], "--namespace", namespace, "--timeout", "60s")
        assert re.search(r"^\s*Phase:\s+Succeeded$", result.stdout, re.M), result.stdout
        [test_pod] = [
            p.obj
            for p in pykube.Pod.objects(api, namespace=namespace)
            if p.obj["metadata"]["name"].endswith("-test")
        ]
        container = test_pod["spec"]["containers"][0]
        assert container["command"] == ["python3", "/scripts/chat_test.py"]
        env = {e["name"]: e for e in container["env"]}
        assert env["VLLM_URL"]["value"] == f"http://{facts.releases['vllm']}:8000"
        assert env["MODEL"]["value"] == facts.served_name
        assert test_pod["status"]["phase"] == "Succeeded"

    for release in facts.releases.values():
        helm("uninstall", release, "--namespace", namespace, "--wait")
    assert not support_kube.jobs(api, namespace, facts.releases["train"])
    assert not list(pykube.Deployment.objects(api, namespace=namespace))
    claims = {c.name for c in pykube.PersistentVolumeClaim.objects(api, namespace=namespace)}
    if "existingClaim" in load_spec(ROOT / "values" / example / "experiment.yaml").data["storage"]:
        assert claims == {"llm-storage"}, "the existing claim is not the chart's to delete"
    else:
        assert {f"{r}-storage" for r in facts.releases.values()} <= claims, (
            "helm uninstall must keep the storage"
        )
        volumes = {v.name for v in pykube.PersistentVolume.objects(api)}
        assert {f"{namespace}-{r}-storage" for r in facts.releases.values()} <= volumes


# where each kind the chart renders lives in the API: (path prefix, plural, namespaced)
KINDS = {
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Service": ("/api/v1", "services", True),
    "Pod": ("/api/v1", "pods", True),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims", True),
    "PersistentVolume": ("/api/v1", "persistentvolumes", False),
    "Job": ("/apis/batch/v1", "jobs", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "Ingress": ("/apis/networking.k8s.io/v1", "ingresses", True),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
    "TrainJob": ("/apis/trainer.kubeflow.org/v1alpha1", "trainjobs", True),
    "PyTorchJob": ("/apis/kubeflow.org/v1", "pytorchjobs", True),
    "JobSet": ("/apis/jobset.x-k8s.io/v1alpha2", "jobsets", True),
    "RayJob": ("/apis/ray.io/v1", "rayjobs", True),
}
MANIFEST_SOURCES = (
    sorted(p for p in ROOT.glob("values/*/*.yaml") if p.name != "experiment.yaml")
    + sorted(p for p in ROOT.glob("tests/cases/valid/*/*.yaml") if p.name != "experiment.yaml")
    + sorted((CHART / "ci").glob("*.yaml"))
)


@pytest.mark.parametrize("values_file", MANIFEST_SOURCES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_manifest_passes_strict_server_side_validation(
    values_file: Path, helm3: Helm, api: pykube.HTTPClient, namespace_factory: Any, operator_crds: list[str]
) -> None:
    """Each rendered object is sent to the API server as a dry run with fieldValidation=Strict: an unknown or
    misspelled field, a wrong type or an admission rule (Pod Security restricted) fails here."""
    import yaml

    namespace = restricted_namespace(
        namespace_factory, f"strict-{values_file.parent.name}-{values_file.stem}"[:63]
    )
    out = helm3(
        "template", "strict-check", str(CHART), "--namespace", namespace, "--values", str(values_file)
    ).stdout
    documents = [d for d in yaml.safe_load_all(out) if d]
    # ServiceAccounts for real first: admission of a pod looks its account up, even in a dry run
    documents.sort(key=lambda d: d["kind"] != "ServiceAccount")
    for doc in documents:
        prefix, plural, namespaced = KINDS[doc["kind"]]
        path = f"{prefix}/namespaces/{namespace}/{plural}" if namespaced else f"{prefix}/{plural}"
        if namespaced:
            doc["metadata"]["namespace"] = namespace
        params = {"fieldValidation": "Strict"}
        if doc["kind"] != "ServiceAccount":
            params["dryRun"] = "All"
        kube.request(api, "POST", path, params=params, json=doc)
