"""helm lint --strict and helm template with Helm 3 and Helm 4 on every example's values and every ci/ scenario;
the strict schema; Job names across upgrades."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from .conftest import CHART, Helm

ROOT = CHART.parents[1]
EXAMPLE_VALUES = sorted(p for p in ROOT.glob("values/*/*.yaml") if p.name != "experiment.yaml")
# the golden cases' rendered values too: every engine, Kueue, ZeRO, multi-node
CASE_VALUES = sorted(p for p in ROOT.glob("tests/cases/valid/*/*.yaml") if p.name != "experiment.yaml")
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
WORKLOAD_KINDS = {"Job", "Deployment"}
ENGINE_KINDS = {"PyTorchJob", "JobSet", "TrainJob", "RayJob"}


def release_of(values_file: Path) -> str:
    return (
        values_file.parent.name + "-" + values_file.stem
        if values_file.parent.name != "ci"
        else values_file.stem.removesuffix("-values")
    )


@pytest.mark.parametrize(
    "values_file", EXAMPLE_VALUES + CASE_VALUES + SCENARIOS, ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_lints_strictly(helm: Helm, values_file: Path) -> None:
    result = helm.run("lint", "--strict", str(CHART), "--values", str(values_file))
    assert "0 chart(s) failed" in result.stdout


def pod_specs(doc: dict) -> list[dict]:
    """The pod specs of a workload of any engine (a TrainJob's runtime owns its pod template)."""
    spec = doc["spec"]
    if doc["kind"] in ("Job", "Deployment"):
        return [spec["template"]["spec"]]
    if doc["kind"] == "PyTorchJob":
        return [r["template"]["spec"] for r in spec["pytorchReplicaSpecs"].values()]
    if doc["kind"] == "JobSet":
        return [r["template"]["spec"]["template"]["spec"] for r in spec["replicatedJobs"]]
    if doc["kind"] == "RayJob":
        return [g["template"]["spec"] for g in spec["rayClusterSpec"]["workerGroupSpecs"]]
    return []


@pytest.mark.parametrize(
    "values_file", EXAMPLE_VALUES + CASE_VALUES + SCENARIOS, ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_renders_workloads_with_gpu_shm_and_storage(helm: Helm, values_file: Path) -> None:
    docs = helm.template("--values", str(values_file), release=release_of(values_file))
    # the GPU workloads; the preflight hook is a CPU check that holds no GPU and mounts the export read-only
    workloads = [
        d
        for d in docs
        if d["kind"] in WORKLOAD_KINDS | ENGINE_KINDS
        and "helm.sh/hook" not in d["metadata"].get("annotations", {})
    ]
    assert workloads, "every values file enables a component"
    for pod in (p for doc in workloads for p in pod_specs(doc)):
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
        assert "persistentVolumeClaim" in volumes["storage"]
        container = pod["containers"][0]
        assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/storage", "/dev/shm"}
        assert container["resources"]["limits"]["memory"] == container["resources"]["requests"]["memory"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["automountServiceAccountToken"] is False
        for env in container.get("env", []):
            words = set(env["name"].split("_"))  # HF_TOKEN, API_KEY; not TOKENIZED_ROOT
            assert not words & {"TOKEN", "PASSWORD", "KEY"} or "valueFrom" in env


def test_examples_render_the_same_with_both_helm_versions(helm3: Helm) -> None:
    from .conftest import _helm

    helm4 = _helm(4)
    for values_file in EXAMPLE_VALUES:
        args = ("--values", str(values_file))
        release = release_of(values_file)
        assert helm3.template(*args, release=release) == helm4.template(*args, release=release), values_file


def test_schema_rejects_an_unknown_key_naming_it(helm: Helm) -> None:
    result = helm.run("template", "x", str(CHART), "--set", "train.enabeld=true", check=False)
    assert result.returncode != 0
    assert "enabeld" in result.stderr


def test_schema_rejects_a_wrong_type_naming_the_key(helm: Helm) -> None:
    result = helm.run("template", "x", str(CHART), "--set-string", "vllm.replicas=two", check=False)
    assert result.returncode != 0
    assert "replicas" in result.stderr


def test_schema_rejects_overwriting_the_output_dir(helm: Helm) -> None:
    result = helm.run(
        "template", "x", str(CHART), "--values", str(SCENARIOS[0]), "--set", "train.config.overwrite_output_dir=true",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "overwrite_output_dir" in result.stderr


def test_refuses_kubernetes_older_than_its_constraint(helm: Helm) -> None:
    result = helm.run("template", "x", str(CHART), "--kube-version", "1.27.0", check=False)
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr or "incompatible" in result.stderr


def job_name(helm: Helm, *args: str) -> str:
    docs = helm.template(
        "--values", str(ROOT / "values/llama31-qa/train.yaml"), *args, release="llama31-qa-train"
    )
    [job] = [
        d
        for d in docs
        if d["kind"] == "Job" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "train"
    ]
    return str(job["metadata"]["name"])


def test_job_name_is_stable_for_the_same_values_and_changes_with_them(helm: Helm) -> None:
    first = job_name(helm)
    assert first == job_name(helm)
    assert first.startswith("llama31-qa-train-") and len(first) <= 52
    assert job_name(helm, "--set", "train.config.learning_rate=0.0001") != first
    assert job_name(helm, "--set", "train.resources.limits.memory=128Gi") != first


def test_a_long_release_name_keeps_every_name_within_limits(helm: Helm) -> None:
    release = "an-experiment-name-of-forty-seven-characters-x-train"[:53]
    docs = helm.template("--values", str(SCENARIOS[0]), release=release)
    for doc in docs:
        limit = 52 if doc["kind"] == "Job" else 63
        assert len(doc["metadata"]["name"]) <= limit, doc["metadata"]["name"]


def test_every_kind_the_chart_can_render(helm3: Helm) -> None:
    kinds = set()
    for scenario in SCENARIOS:
        kinds |= {d["kind"] for d in helm3.template("--values", str(scenario), release=release_of(scenario))}
    assert kinds == {
        "ServiceAccount", "PersistentVolume", "PersistentVolumeClaim", "ConfigMap", "Job", "Deployment", "Service",
        "Ingress", "NetworkPolicy", "PodDisruptionBudget", "Pod",
    }  # fmt: skip


CLUSTER_SCOPED = {"PersistentVolume"}


def test_every_namespaced_object_names_the_release_namespace(helm3: Helm) -> None:
    """`helm template | kubectl apply` (and GitOps tools that render) put each object where the release says,
    whatever kubectl's default namespace is; every template is covered by some values file here."""
    seen: set[str] = set()
    for values_file in EXAMPLE_VALUES + CASE_VALUES + SCENARIOS:
        output = helm3.run(
            "template", release_of(values_file), str(CHART), "--namespace", "ns-check", "--values", str(values_file),
            "--include-crds", "--debug",
        ).stdout  # fmt: skip
        for source, doc in zip(
            re.findall(r"^# Source: llama-factory/(\S+)", output, re.M),
            [d for d in yaml.safe_load_all(output) if d],
            strict=True,
        ):
            seen.add(source)
            if doc["kind"] in CLUSTER_SCOPED:
                assert "namespace" not in doc["metadata"], source
            else:
                assert doc["metadata"].get("namespace") == "ns-check", (
                    f"{source}: {doc['kind']} {doc['metadata']['name']}"
                )
    templates = {str(p.relative_to(CHART)) for p in (CHART / "templates").rglob("*.yaml")} - {
        "templates/validate.yaml"
    }
    assert templates <= seen, f"templates no values file renders: {sorted(templates - seen)}"
