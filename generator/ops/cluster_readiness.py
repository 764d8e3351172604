"""The items of the guide's before-training checklist that ask the Kubernetes API (Secrets, GPU nodes, the
training engine's CRD), and the whole list run in the cluster as the chart's GPU-less preflight Job."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pykube
import yaml

from ..core.facts import ENGINE_CRDS, Facts
from ..core.problems import Item
from ..core.spec import Spec
from ..errors import KubeError, RunFailed
from ..project import CHART_DIR
from . import kube, wait
from .target import Target


def referenced_secrets(spec: Spec) -> dict[str, set[str]]:
    """Secret name -> keys the releases read."""
    found: dict[str, set[str]] = {}
    d = spec.data
    refs = [d["model"].get("hub", {}).get("tokenSecret"), d["serve"].get("apiKeySecret")]
    for ref in refs:
        if ref:
            found.setdefault(ref["name"], set()).add(ref["key"])
    creds = d["tracking"].get("mlflow", {}).get("credentialsSecret")
    if creds:
        keys = {creds["tokenKey"]} if "tokenKey" in creds else {creds["usernameKey"], creds["passwordKey"]}
        found.setdefault(creds["name"], set()).update(keys)
    return found


def secrets(spec: Spec, facts: Facts, api: Any) -> Item:
    name = "referenced Secrets exist"
    wanted = referenced_secrets(spec)
    if not wanted:
        return Item(name, True, "the spec references none")
    if api is None:
        return Item(name, None, "needs the cluster: no kubeconfig")
    missing = []
    for secret, keys in sorted(wanted.items()):
        try:
            data = (
                pykube.Secret.objects(api, namespace=facts.namespace).get(name=secret).obj.get("data", {})
                or {}
            )
        except pykube.exceptions.ObjectDoesNotExist:
            missing.append(f"{secret} (keys {', '.join(sorted(keys))})")
            continue
        absent = sorted(keys - set(data))
        if absent:
            missing.append(f"{secret} lacks key(s) {', '.join(absent)}")
    if missing:
        first = sorted(wanted)[0]
        fix = f"kubectl -n {facts.namespace} create secret generic {first} --from-literal={sorted(wanted[first])[0]}=..."
        return Item(name, False, f"in namespace {facts.namespace}: missing {'; '.join(missing)}", fix)
    return Item(name, True, f"{', '.join(sorted(wanted))} in namespace {facts.namespace}")


def _tolerates(taints: list[dict[str, Any]], tolerations: list[dict[str, Any]]) -> bool:
    for taint in taints:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(
            (t.get("key") in (None, "", taint.get("key")))
            and (t.get("operator") == "Exists" or t.get("value", "") == taint.get("value", ""))
            and (not t.get("effect") or t.get("effect") == taint.get("effect"))
            for t in tolerations
        ):
            return False
    return True


def gpu_nodes(spec: Spec, facts: Facts, api: Any) -> Item:
    name = "a node with enough allocatable GPUs"
    d = spec.data
    wanted = d["resources"]["gpus"]
    if wanted == 0:
        return Item(name, True, "training asks for no GPU")
    if api is None:
        return Item(name, None, "needs the cluster: no kubeconfig")
    selector = dict(d["resources"]["nodeSelector"])
    if "product" in d["resources"]["gpu"]:
        selector["nvidia.com/gpu.product"] = d["resources"]["gpu"]["product"]
    resource = d["resources"]["gpuResource"]
    fitting, matching, best = [], 0, 0
    untolerated: set[str] = set()
    for node in (n.obj for n in pykube.Node.objects(api)):
        labels = node["metadata"].get("labels", {})
        if any(labels.get(k) != v for k, v in selector.items()):
            continue
        taints = node.get("spec", {}).get("taints", []) or []
        if not _tolerates(taints, d["resources"]["tolerations"]):
            untolerated.update(
                f"{t['key']}:{t['effect']}" for t in taints if t.get("effect") in ("NoSchedule", "NoExecute")
            )
            continue
        matching += 1
        allocatable = int(node.get("status", {}).get("allocatable", {}).get(resource, 0))
        best = max(best, allocatable)
        if allocatable >= wanted:
            fitting.append(node["metadata"]["name"])
    where = f" matching {selector}" if selector else ""
    if fitting:
        return Item(
            name,
            True,
            f"{len(fitting)} node(s){where} with {wanted} or more {resource} allocatable ({', '.join(fitting[:3])}{', ...' if len(fitting) > 3 else ''})",
        )
    if not matching:
        tainted = (
            f" (matching nodes carry taints the pods do not tolerate: {', '.join(sorted(untolerated))})"
            if untolerated
            else ""
        )
        return Item(
            name,
            False,
            f"no node{where} that the pods tolerate{tainted}",
            "check resources.gpu.product, resources.nodeSelector and resources.tolerations",
        )
    return Item(
        name,
        False,
        f"{matching} node(s){where}, the largest with {best} {resource} allocatable; the pod asks for {wanted}",
        "lower resources.gpus, or use nodes with more GPUs",
    )


def engine_crd(spec: Spec, api: Any) -> Item | None:
    """The CRD of the training engine, when it is an operator's (None for plain Jobs)."""
    engine = spec.data["distributed"]["engine"]
    if engine not in ENGINE_CRDS:
        return None
    crd, provider = ENGINE_CRDS[engine]
    name = f"{engine} engine installed"
    if api is None:
        return Item(name, None, "needs the cluster: no kubeconfig")
    try:
        kube.request(api, "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}")
    except KubeError as exc:
        if exc.status == 404:
            return Item(
                name,
                False,
                f"the cluster has no {crd}",
                f"install {provider}, or use distributed.engine: job",
            )
        return Item(name, None, str(exc))
    return Item(name, True, f"{crd} is served ({provider})")


# ------------------------------------------------------------------------------------ preflight in the cluster
def preflight_in_cluster(
    target: Target, report: Callable[[str], None], timeout: float = 900
) -> tuple[bool, str]:
    """Run the chart's GPU-less preflight Job (the one the train release runs as a hook) on its own, with the
    train release's values; (passed, its checklist output or why there is none)."""
    release = target.facts.releases["train"]
    values = target.spec.folder / "train.yaml"
    rendered = target.helm.run(
        "template", release, str(CHART_DIR), "--namespace", target.namespace, "--values", str(values),
    )  # fmt: skip
    if rendered.returncode != 0:
        raise RunFailed(f"check: helm template failed:\n{rendered.stderr.strip()}")
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    jobs = [d for d in docs if d["kind"] == "Job" and d["metadata"]["name"].endswith("-preflight")]
    if not jobs:
        raise RunFailed(f"check: {values} renders no preflight Job (train.preflight.enabled is false)")
    job = jobs[0]
    # the Job mounts the release's claim; before the first install it does not exist yet: made here as the
    # install's hooks make it (kept like the chart keeps it; the install finds it and leaves it as it is)
    for storage in (d for d in docs if d["kind"] in ("PersistentVolume", "PersistentVolumeClaim")):
        namespaced = storage["kind"] == "PersistentVolumeClaim"
        where = (
            f"/api/v1/namespaces/{target.namespace}/persistentvolumeclaims"
            if namespaced
            else "/api/v1/persistentvolumes"
        )
        try:
            kube.request(target.api, "POST", where, json=storage)
        except KubeError as exc:
            if exc.status != 409:  # already there
                raise
    name = f"{release}-check-{int(time.time()) % 100000}"[:52]
    # the hook Jobs read their config and scripts from the release's hook ConfigMap, itself a hook: made here
    # under the check's name, and the Job pointed at it
    hook_maps = [
        d for d in docs
        if d["kind"] == "ConfigMap"
        and d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "train-hooks"
    ]  # fmt: skip
    if not hook_maps:
        raise RunFailed(f"check: {values} renders no hook ConfigMap for the preflight Job")
    config_map = {**hook_maps[0], "metadata": {**hook_maps[0]["metadata"], "name": name}}
    config_map["metadata"]["namespace"] = target.namespace
    config_map["metadata"].pop("annotations", None)
    for volume in job["spec"]["template"]["spec"].get("volumes", []):
        if "configMap" in volume:
            volume["configMap"]["name"] = name
    job["metadata"]["name"] = name
    job["metadata"]["namespace"] = target.namespace
    job["metadata"].pop("annotations", None)  # a plain Job here, not a hook
    job["spec"]["ttlSecondsAfterFinished"] = 600
    configmaps = f"/api/v1/namespaces/{target.namespace}/configmaps"
    kube.request(target.api, "POST", configmaps, json=config_map)
    try:
        kube.request(target.api, "POST", f"/apis/batch/v1/namespaces/{target.namespace}/jobs", json=job)
    except KubeError:
        kube.request(target.api, "DELETE", f"{configmaps}/{name}")
        raise
    report(f"check: preflight Job {name} (no GPU) started in namespace {target.namespace}")
    try:
        outcome = wait.job(target.api, target.namespace, name, timeout)
        pods = kube.pods(target.api, target.namespace, {"job-name": name})
        output = (
            kube.pod_log_tail(target.api, target.namespace, pods[-1]["metadata"]["name"], lines=60)
            if pods
            else "(no pod)"
        )
    finally:
        # gone with its pod, however the wait ended: a check leaves nothing running behind
        kube.request(
            target.api, "DELETE", f"/apis/batch/v1/namespaces/{target.namespace}/jobs/{name}",
            json={"propagationPolicy": "Foreground"},
        )  # fmt: skip
        kube.request(target.api, "DELETE", f"{configmaps}/{name}")
    return outcome.ok, output if outcome.ok else f"{outcome.reason}\n{output}"
