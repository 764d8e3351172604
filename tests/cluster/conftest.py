"""The cluster tier: a real kube-apiserver (the local control plane, or the cluster in $LFK_TEST_KUBECONFIG)
with kwok GPU nodes, driven by the real helm binary. pytest-helm-charts provides the cluster and namespace
fixtures; `kube_config` is pointed at the local cluster, which this tier starts and stops itself."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykube
import pytest
import yaml

from generator.cluster import engines, lifecycle, storage
from generator.core.facts import derive
from generator.core.render import render
from generator.core.spec import spec_from_text
from generator.core.write import write
from generator.errors import LfkError
from generator.ops.kube import create as kube_create
from generator.project import REPO_ROOT, built_tool

CHART = REPO_ROOT / "charts" / "llama-factory"
RESTRICTED = {"labels": storage.RESTRICTED}


@pytest.fixture(scope="session")
def cluster_kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("LFK_TEST_KUBECONFIG")
    if external:
        yield external
        return
    directory = tmp_path_factory.mktemp("cluster")
    try:
        state, _ = lifecycle.up(directory)
    except LfkError as exc:
        pytest.fail(f"the local cluster did not start: {exc}")
    try:
        yield str(state.kubeconfig)
    finally:
        lifecycle.down(directory)


@pytest.fixture(scope="module")
def kube_config(cluster_kubeconfig: str) -> str:
    """pytest-helm-charts' kube_cluster reads this."""
    return cluster_kubeconfig


@pytest.fixture(scope="module")
def api(kube_cluster: Any) -> pykube.HTTPClient:
    return kube_cluster.kube_client


@dataclass
class Helm:
    binary: Path
    kubeconfig: str

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        result = subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, env=env, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result


@pytest.fixture(scope="module", params=[3, 4], ids=["helm3", "helm4"])
def helm(request: pytest.FixtureRequest, cluster_kubeconfig: str) -> Helm:
    binary = built_tool("helm", f"HELM{request.param}_VERSION")
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run `make tools`")
    return Helm(binary, cluster_kubeconfig)


@pytest.fixture(scope="module")
def helm3(cluster_kubeconfig: str) -> Helm:
    return Helm(built_tool("helm", "HELM3_VERSION"), cluster_kubeconfig)


def install_crds(kubeconfig: str, pattern: str, missing: str) -> list[str]:
    """Install the CRDs of the newest .tools/<pattern> folder and wait until they are established; their
    names."""
    folders = sorted((REPO_ROOT / ".tools").glob(pattern))
    if not folders:
        pytest.fail(missing)
    api = pykube.HTTPClient(pykube.KubeConfig.from_file(kubeconfig))
    crds = [yaml.safe_load(path.read_text()) for path in sorted(folders[-1].glob("*.yaml"))]
    for crd in crds:
        kube_create(api, engines.CRDS, crd)  # one already there is kept
    names = [crd["metadata"]["name"] for crd in crds]
    engines.wait_established(api, names, 20)  # established before anything is created with it
    return names


@pytest.fixture(scope="session")
def operator_crds(cluster_kubeconfig: str) -> list[str]:
    """The CRDs of Kubeflow Trainer, the training operator, JobSet and KubeRay (from their Go modules,
    `make cluster-tools`), installed in the cluster; their names. No controller runs: the API server only
    validates our objects against their schemas."""
    return install_crds(cluster_kubeconfig, "crds-*", "operator CRDs missing: run `make cluster-tools`")


@pytest.fixture(scope="session")
def gitops_crds(cluster_kubeconfig: str) -> list[str]:
    """Argo CD's and Flux's CRDs (from their Go modules, `make cluster-tools`), installed; no controller runs."""
    return install_crds(cluster_kubeconfig, "gitops-crds-*", "GitOps CRDs missing: run `make cluster-tools`")


def restricted_namespace(namespace_factory: Any, name: str) -> str:
    """A fresh namespace where Pod Security admission enforces `restricted` on every pod."""
    return str(namespace_factory(name, extra_metadata=RESTRICTED).name)


def render_spec(text: str, folder: Path) -> tuple[Any, Path]:
    """Render a spec given as text into folder; (facts, folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec_path = folder / "experiment.yaml"
    spec_path.write_text(text, encoding="utf-8")
    spec = spec_from_text(text, str(spec_path))
    write(render(spec, folder), folder)
    return derive(spec), folder


def with_namespace(spec_text: str, namespace: str) -> str:
    data = yaml.safe_load(spec_text)
    data["namespace"] = namespace
    return yaml.safe_dump(data, sort_keys=False)


def create_prerequisites(api: pykube.HTTPClient, namespace: str) -> None:
    """What the examples reference and a platform team provides: Secrets, and the existing claim."""
    for name, keys in {
        "hf-token": ["token"],
        "mlflow-credentials": ["username", "password"],
        "vllm-api-key": ["token"],
    }.items():
        pykube.Secret(api, {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "stringData": {k: "not-a-real-secret" for k in keys},
        }).create()  # fmt: skip
    pv_name = f"{namespace}-llm-storage"
    pykube.PersistentVolume(api, {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "10Ti"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain", "nfs": {"server": "nfs.example.internal", "path": "/exports/llm"},
            "claimRef": {"namespace": namespace, "name": "llm-storage"},
        },
    }).create()  # fmt: skip
    pykube.PersistentVolumeClaim(api, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "llm-storage", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv_name,
                 "resources": {"requests": {"storage": "10Ti"}}},
    }).create()  # fmt: skip


def seed_example(
    tmp_path_factory: pytest.TempPathFactory, namespace_factory: Any, api: pykube.HTTPClient, name: str
) -> tuple[Any, Path, str]:
    """The guide's example (values/llama31-qa) in a fresh restricted namespace with its prerequisites, rendered
    into a temporary folder: (facts, its experiment.yaml, the namespace)."""
    namespace = restricted_namespace(namespace_factory, name)
    create_prerequisites(api, namespace)
    text = with_namespace(
        (CHART.parents[1] / "values" / "llama31-qa" / "experiment.yaml").read_text(), namespace
    )
    facts, folder = render_spec(text, tmp_path_factory.mktemp(name) / "llama31-qa")
    return facts, folder / "experiment.yaml", namespace


def lfk(kubeconfig: str, *args: str) -> Any:
    """lfk in this process, against the test cluster, with the project's helm."""
    from click.testing import CliRunner

    from generator.cli import cli
    from generator.project import helm_binary

    return CliRunner().invoke(cli, list(args), env={"KUBECONFIG": kubeconfig, "LFK_HELM": helm_binary()})
