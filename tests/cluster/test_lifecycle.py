"""helm upgrade, rollback and uninstall of the training release on a real API server, and the Job's failure
policy: a configuration error fails the Job at once, other failures are retried."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pykube
import pytest

from generator.ops import kube, wait
from tests.support import kube as support_kube

from .conftest import CHART, Helm, create_prerequisites, render_spec, restricted_namespace, with_namespace

ROOT = CHART.parents[1]


def the_job(api: pykube.HTTPClient, namespace: str, release: str) -> dict[str, Any]:
    [job] = support_kube.jobs(api, namespace, release)
    return job


def test_upgrade_rollback_and_uninstall(
    helm: Helm, api: pykube.HTTPClient, namespace_factory: Any, tmp_path: Path
) -> None:
    namespace = restricted_namespace(namespace_factory, f"lifecycle-{helm.binary.parent.name[:7]}")
    create_prerequisites(api, namespace)
    seed = (ROOT / "values/llama31-qa/experiment.yaml").read_text()
    facts, folder = render_spec(with_namespace(seed, namespace), tmp_path / "v1")
    release = facts.releases["train"]
    install = ("upgrade", "--install", release, str(CHART), "-n", namespace)

    helm(*install, "-f", str(folder / "train.yaml"))
    first = the_job(api, namespace, release)
    assert first["metadata"]["labels"][kube.RUN_ID] == facts.run_id
    assert wait.job(api, namespace, first["metadata"]["name"], timeout=60).ok
    first = the_job(api, namespace, release)

    # identical values: the Job is left alone
    helm(*install, "-f", str(folder / "train.yaml"))
    again = the_job(api, namespace, release)
    assert again["metadata"]["uid"] == first["metadata"]["uid"]
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]

    # a changed hyperparameter: a new Job under the new run id, without an immutable-field error
    faster = seed.replace("learningRate: 5.0e-5", "learningRate: 1.0e-4")
    changed, folder2 = render_spec(with_namespace(faster, namespace), tmp_path / "v2")
    assert changed.run_id != facts.run_id
    helm(*install, "-f", str(folder2 / "train.yaml"))
    second = the_job(api, namespace, release)
    assert second["metadata"]["name"] != first["metadata"]["name"]
    assert second["metadata"]["labels"][kube.RUN_ID] == changed.run_id
    assert wait.job(api, namespace, second["metadata"]["name"], timeout=60).ok
    config = pykube.ConfigMap.objects(api, namespace=namespace).get(name=f"{release}-config").obj
    assert f"output_dir: /storage/output/llama31-qa/{changed.run_id}" in config["data"]["train.yaml"]

    # rollback to the first revision brings the first run's Job back
    helm("rollback", release, "1", "-n", namespace, "--wait")
    rolled = the_job(api, namespace, release)
    assert rolled["metadata"]["name"] == first["metadata"]["name"]
    assert rolled["metadata"]["labels"][kube.RUN_ID] == facts.run_id
    history = helm("history", release, "-n", namespace, "-o", "json").stdout
    assert history.count('"revision"') == 4

    # uninstall removes the workloads and keeps the storage
    helm("uninstall", release, "-n", namespace, "--wait")
    assert not support_kube.jobs(api, namespace, release)
    assert not list(
        pykube.ConfigMap.objects(api, namespace=namespace).filter(selector={kube.INSTANCE: release})
    )
    claim = pykube.PersistentVolumeClaim.objects(api, namespace=namespace).get(name=f"{release}-storage").obj
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    # and a new install of the same release adopts the kept storage
    helm(*install, "-f", str(folder2 / "train.yaml"))
    assert wait.job(api, namespace, the_job(api, namespace, release)["metadata"]["name"], timeout=60).ok


@pytest.mark.parametrize(
    ("code", "what"), [(3, "a configuration error"), (4, "the GPU out of memory"), (137, "killed for memory")]
)
def test_failures_a_retry_cannot_mend_fail_the_job_at_once(
    code: int, what: str, helm3: Helm, api: pykube.HTTPClient, namespace_factory: Any
) -> None:
    namespace = restricted_namespace(namespace_factory, f"failure-policy-{code}")
    create_prerequisites(api, namespace)
    values = str(ROOT / "values/llama32-3b-full/train.yaml")
    # the exit code, rehearsed by the kwok stage through a pod annotation (the node tier does it for real)
    helm3(
        "install", "fail-at-once", str(CHART), "-n", namespace, "-f", values,
        "--set-string", f"train.podAnnotations.lfk\\.local/exit-code={code}",
    )  # fmt: skip
    job = the_job(api, namespace, "fail-at-once")
    outcome = wait.job(api, namespace, job["metadata"]["name"], timeout=60)
    assert not outcome.ok and outcome.reason.startswith("PodFailurePolicy"), outcome
    assert len(kube.pods(api, namespace, {kube.INSTANCE: "fail-at-once"})) == 1, f"no retry for {what}"


def test_other_failures_are_retried_up_to_the_backoff_limit(
    helm3: Helm, api: pykube.HTTPClient, namespace_factory: Any
) -> None:
    namespace = restricted_namespace(namespace_factory, "failure-retry")
    create_prerequisites(api, namespace)
    values = str(ROOT / "values/llama32-3b-full/train.yaml")
    helm3(
        "install", "crash", str(CHART), "-n", namespace, "-f", values,
        "--set-string", "train.podAnnotations.lfk\\.local/exit-code=1", "--set", "train.backoffLimit=1",
        "--set-string", "train.podAnnotations.lfk\\.local/run-duration=1s",
    )  # fmt: skip
    job = the_job(api, namespace, "crash")
    outcome = wait.job(api, namespace, job["metadata"]["name"], timeout=90)
    assert not outcome.ok and outcome.reason.startswith("BackoffLimitExceeded"), outcome
    assert len(kube.pods(api, namespace, {kube.INSTANCE: "crash"})) == 2
