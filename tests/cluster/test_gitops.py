"""`lfk render --gitops` as the controllers receive it: the Argo CD and Flux objects created on the real API
server with those projects' CRDs (no controller runs; the CRDs' schemas judge them, and a field they would
prune shows up as lost), and helmfile, built from its Go module, really applying the seed example to the
local cluster in the guide's order, after which `lfk status` shows what it shows after `lfk run`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pykube
import pytest
import yaml

from generator.errors import KubeError
from generator.ops.kube import request as kube_request
from generator.project import built_tool, helm_binary, kubectl_binary

from .conftest import lfk, seed_example

REPO = "https://git.example.internal/platform/llm-values.git"


def kubectl(kubeconfig: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl_binary(), "--kubeconfig", kubeconfig, *args], input=stdin, capture_output=True, text=True
    )


def contains(stored: Any, sent: Any, path: str = "$") -> list[str]:
    """Where `sent` is not found in `stored` (defaults the server added are fine, anything lost is not)."""
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [f"{path}: {stored!r} is not a mapping"]
        return [m for k, v in sent.items() for m in contains(stored.get(k), v, f"{path}.{k}")]
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(stored) != len(sent):
            return [f"{path}: {stored!r} != {sent!r}"]
        return [
            m
            for i, (a, b) in enumerate(zip(stored, sent, strict=True))
            for m in contains(a, b, f"{path}[{i}]")
        ]
    return [] if stored == sent else [f"{path}: stored {stored!r}, sent {sent!r}"]


@pytest.fixture(scope="module")
def seed(
    tmp_path_factory: pytest.TempPathFactory, namespace_factory: Any, api: pykube.HTTPClient
) -> tuple[Any, Path, str]:
    return seed_example(tmp_path_factory, namespace_factory, api, "gitops-seed")


def ensure_namespace(api: pykube.HTTPClient, name: str) -> None:
    try:
        kube_request(api, "POST", "/api/v1/namespaces", json={"metadata": {"name": name}})
    except KubeError as exc:
        if exc.status != 409:  # already there
            raise


@pytest.mark.parametrize("kind", ["argocd", "flux"])
def test_controller_objects_are_accepted_whole_by_the_real_crds(
    kind: str,
    seed: tuple[Any, Path, str],
    gitops_crds: list[str],
    api: pykube.HTTPClient,
    cluster_kubeconfig: str,
) -> None:
    facts, spec, _ = seed
    result = lfk(cluster_kubeconfig, "render", str(spec), "--gitops", kind, "--repo", REPO)
    assert result.exit_code == 0, result.output
    text = (spec.parent / f"{kind}.yaml").read_text()
    documents = [d for d in yaml.safe_load_all(text) if d]
    for namespace in {d["metadata"]["namespace"] for d in documents}:
        ensure_namespace(api, namespace)

    applied = kubectl(
        cluster_kubeconfig, "apply", "--server-side", "--field-manager=lfk-test", "-f", "-", stdin=text
    )
    assert applied.returncode == 0, applied.stderr

    releases = [d for d in documents if d["kind"] in ("Application", "HelmRelease")]
    assert [d["metadata"]["name"] for d in releases] == [
        facts.releases[c] for c in ("train", "merge", "vllm", "webui")
    ]
    for sent in documents:
        meta = sent["metadata"]
        got = kubectl(cluster_kubeconfig, "get", sent["kind"].lower() + "." + sent["apiVersion"].split("/")[0],
                      meta["name"], "-n", meta["namespace"], "-o", "json")  # fmt: skip
        assert got.returncode == 0, got.stderr
        lost = contains(json.loads(got.stdout), {"metadata": meta, "spec": sent["spec"]})
        assert not lost, f"{sent['kind']} {meta['name']}: the CRD's schema dropped or changed fields: {lost}"

    # the schemas do judge: a wrong type is refused with the field named
    broken = dict(releases[0], spec={**releases[0]["spec"]})
    if kind == "argocd":
        broken["spec"]["syncPolicy"] = {"automated": {"prune": "sometimes"}}
        field = "spec.syncPolicy.automated.prune"
    else:
        broken["spec"]["dependsOn"] = "train"
        field = "spec.dependsOn"
    refused = kubectl(
        cluster_kubeconfig, "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(broken)
    )
    assert refused.returncode != 0 and field in refused.stderr, refused.stderr

    deleted = kubectl(cluster_kubeconfig, "delete", "-f", "-", "--wait", stdin=text)
    assert deleted.returncode == 0, deleted.stderr


def test_helmfile_applies_the_seed_example_in_order_and_status_shows_it(
    seed: tuple[Any, Path, str], cluster_kubeconfig: str
) -> None:
    facts, spec, namespace = seed
    result = lfk(cluster_kubeconfig, "render", str(spec), "--gitops", "helmfile")
    assert result.exit_code == 0, result.output
    helmfile = built_tool("helmfile", "HELMFILE_VERSION")
    if not helmfile.is_file():
        pytest.fail("helmfile missing: run `make cluster-tools`")
    env = {**os.environ, "KUBECONFIG": cluster_kubeconfig, "HELMFILE_UPGRADE_NOTICE_DISABLED": "1"}
    synced = subprocess.run(
        [str(helmfile), "--file", str(spec.parent / "helmfile.yaml"), "--helm-binary", helm_binary(), "sync"],
        capture_output=True, text=True, env=env, timeout=900, cwd=spec.parent,
    )  # fmt: skip
    assert synced.returncode == 0, synced.stdout + synced.stderr

    # `needs:` held each release until the one before it was done: helm's own record says when each went in
    listed = json.loads(subprocess.run(
        [helm_binary(), "list", "--namespace", namespace, "--output", "json"],
        capture_output=True, text=True, env=env, check=True,
    ).stdout)  # fmt: skip
    updated = {r["name"]: r["updated"] for r in listed}
    chain = [facts.releases[c] for c in ("train", "merge", "vllm")]
    assert sorted(chain, key=lambda r: updated[r]) == chain, updated

    status = lfk(cluster_kubeconfig, "status", str(spec), "--output", "json")
    assert status.exit_code == 0, status.output
    by_component = {r["component"]: r for r in json.loads(status.output)["releases"]}
    assert {c: r["helm"] for c, r in by_component.items()} == dict.fromkeys(facts.releases, "deployed")
    assert by_component["train"]["objects"][0]["state"] == "Complete"
    assert by_component["train"]["objects"][0]["run_id"] == facts.run_id
    assert by_component["merge"]["objects"][0]["state"] == "Complete"
    # and `lfk run` afterwards finds every step already done, as after its own run
    again = lfk(cluster_kubeconfig, "run", str(spec))
    assert again.exit_code == 0, again.output
    assert sum("skipped" in line for line in again.output.splitlines()) == 4, again.output
