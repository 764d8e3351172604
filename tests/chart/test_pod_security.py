"""Every pod the chart renders for the examples meets Pod Security `restricted` (checked here field by field,
as the admission plugin does) and runs with a read-only root filesystem. The cluster tier also sends the
manifests to a namespace that enforces `restricted`; this catches the same mistakes without a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import CHART, Helm

ROOT = CHART.parents[1]
EXAMPLES = sorted(p for p in ROOT.glob("values/*/*.yaml") if p.name != "experiment.yaml")
# the volume types `restricted` admits
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip


def pod_templates(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every pod a rendered object makes, for every kind the chart renders."""
    kind, spec, name = doc["kind"], doc.get("spec", {}), doc["metadata"]["name"]
    where = f"{kind}/{name}"
    if kind == "Pod":
        return [(where, spec)]
    if kind in ("Job", "Deployment"):
        return [(where, spec["template"]["spec"])]
    if kind == "PyTorchJob":
        return [(f"{where}/{r}", s["template"]["spec"]) for r, s in spec["pytorchReplicaSpecs"].items()]
    if kind == "JobSet":
        return [
            (f"{where}/{r['name']}", r["template"]["spec"]["template"]["spec"])
            for r in spec["replicatedJobs"]
        ]
    if kind == "RayJob":
        cluster = spec["rayClusterSpec"]
        groups = [("head", cluster["headGroupSpec"])] + [
            (g["groupName"], g) for g in cluster["workerGroupSpecs"]
        ]
        return [(f"{where}/{n}", g["template"]["spec"]) for n, g in groups]
    if kind == "TrainJob":
        # the runtime owns the pod template; the chart's runtime patch adds the volumes, the security contexts
        # and the container's mounts (its env is spec.trainer's)
        return [
            (f"{where}/patch/{r['name']}", r["template"]["spec"]["template"]["spec"])
            for patch in spec["runtimePatches"]
            for r in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
        ]
    return []


def violations(pod: dict[str, Any]) -> list[str]:
    """What keeps the pod from `restricted` (and from a read-only root filesystem)."""
    found = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            found.append(f"{field}: true")
    for volume in pod.get("volumes", []):
        types = set(volume) - {"name"}
        if not types <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}: {sorted(types - RESTRICTED_VOLUMES)}")
    pod_context = pod.get("securityContext", {})
    if pod_context.get("runAsUser") == 0:
        found.append("pod runAsUser 0")
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        name = container["name"]
        context = container.get("securityContext", {})
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            found.append(f"{name}: runAsNonRoot is not true")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {}))
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile {seccomp.get('type')}")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        if context.get("privileged"):
            found.append(f"{name}: privileged")
        capabilities = context.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            found.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities {capabilities['add']}")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            found.append(f"{name}: hostPort")
        if context.get("readOnlyRootFilesystem") is not True:
            found.append(f"{name}: the root filesystem is writable")
    return found


@pytest.mark.parametrize("values_file", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_pod_of_the_examples_meets_pod_security_restricted(helm3: Helm, values_file: Path) -> None:
    docs = helm3.template(
        "--values", str(values_file), release=f"{values_file.parent.name}-{values_file.stem}"
    )
    pods = [p for doc in docs for p in pod_templates(doc)]
    assert pods, "every example renders a workload"
    problems = [f"{where}: {problem}" for where, pod in pods for problem in violations(pod)]
    assert not problems, "\n".join(problems)


def test_the_check_finds_what_restricted_refuses() -> None:
    """The checker itself: a pod with an inline NFS volume, host namespaces and a root container fails it."""
    pod = {
        "hostPID": True,
        "volumes": [{"name": "storage", "nfs": {"server": "nfs", "path": "/"}}],
        "containers": [
            {"name": "c", "securityContext": {"runAsUser": 0, "capabilities": {"add": ["SYS_ADMIN"]}}}
        ],
    }
    found = "\n".join(violations(pod))
    for expected in ("hostPID", "volume storage", "runAsUser 0", "allowPrivilegeEscalation", "SYS_ADMIN",
                     "drop ALL", "seccompProfile", "root filesystem"):  # fmt: skip
        assert expected in found, found


def test_hook_jobs_mount_the_claim_which_is_made_before_them(helm3: Helm) -> None:
    """The train release's hook Jobs mount the release's claim; the claim and its volume are pre-install hooks
    that run first (lower weights), so the claim exists when the first hook pod starts."""
    docs = helm3.template("--values", str(CHART / "ci" / "all-components-values.yaml"), release="ci-all")
    hooks = {
        (d["kind"], d["metadata"]["name"]): d["metadata"]["annotations"]
        for d in docs
        if "helm.sh/hook" in d["metadata"].get("annotations", {})
    }
    claim = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    volume = next(d for d in docs if d["kind"] == "PersistentVolume")
    storage_weights = [
        int(hooks[(d["kind"], d["metadata"]["name"])]["helm.sh/hook-weight"]) for d in (claim, volume)
    ]
    # the claim first: replacing both on a later install deletes the claim before the volume it is bound to
    assert storage_weights[0] < storage_weights[1]
    for d in (claim, volume):
        assert d["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert "pre-install" in d["metadata"]["annotations"]["helm.sh/hook"]
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    jobs = [d for d in docs if d["kind"] == "Job" and (d["kind"], d["metadata"]["name"]) in hooks]
    pre_install = [j for j in jobs if "pre-install" in hooks[("Job", j["metadata"]["name"])]["helm.sh/hook"]]
    assert pre_install
    for job in pre_install:
        assert int(hooks[("Job", job["metadata"]["name"])].get("helm.sh/hook-weight", "0")) > max(
            storage_weights
        )
        volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
        assert volumes["storage"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


def test_hook_jobs_mount_their_scripts_from_a_hook_config_map_made_before_them(helm3: Helm) -> None:
    """The hook Jobs run before the release's ConfigMap exists: theirs is a hook of the same events, made
    after the storage hooks and before every hook Job, and deleted once the whole hook phase succeeded."""
    docs = helm3.template(
        "--values", str(CHART / "ci" / "all-components-values.yaml"), "--set", "train.tokenize.enabled=true",
        release="ci-all",
    )  # fmt: skip
    annotations = {d["metadata"]["name"]: d["metadata"].get("annotations", {}) for d in docs}
    [config_map] = [
        d for d in docs if d["kind"] == "ConfigMap" and "helm.sh/hook" in annotations[d["metadata"]["name"]]
    ]
    own = annotations[config_map["metadata"]["name"]]
    assert own["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    weight = int(own["helm.sh/hook-weight"])
    storage = [d for d in docs if d["kind"] in ("PersistentVolume", "PersistentVolumeClaim")]
    assert storage and all(
        int(annotations[d["metadata"]["name"]]["helm.sh/hook-weight"]) < weight for d in storage
    )
    jobs = [d for d in docs if d["kind"] == "Job" and "helm.sh/hook" in annotations[d["metadata"]["name"]]]
    assert {j["metadata"]["name"].rsplit("-", 1)[1] for j in jobs} == {"download", "preflight", "tokenize"}
    for job in jobs:
        hook = annotations[job["metadata"]["name"]]
        assert int(hook.get("helm.sh/hook-weight", "0")) > weight
        assert set(hook["helm.sh/hook"].split(",")) <= set(own["helm.sh/hook"].split(","))
        volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
        assert volumes["scripts"]["configMap"]["name"] == config_map["metadata"]["name"]


def test_a_hook_job_weight_below_its_config_map_is_refused(helm3: Helm) -> None:
    result = helm3.run(
        "template", "ci-all", str(CHART), "--values", str(CHART / "ci" / "all-components-values.yaml"),
        "--set-string", "train.preflight.hookAnnotations.helm\\.sh/hook-weight=-15", check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "train.preflight.hookAnnotations: helm.sh/hook-weight must be above -15" in result.stderr


def test_releases_without_hooks_keep_the_storage_as_release_objects(helm3: Helm) -> None:
    docs = helm3.template("--values", str(ROOT / "values/llama31-qa/vllm.yaml"), release="llama31-qa-vllm")
    for doc in (d for d in docs if d["kind"] in ("PersistentVolume", "PersistentVolumeClaim")):
        assert "helm.sh/hook" not in doc["metadata"]["annotations"]
        assert doc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
