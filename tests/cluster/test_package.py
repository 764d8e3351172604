"""The packaged chart (the .tgz `make chart-package` makes for an OCI registry), not the folder, installed on the
API server with an example's train values: the release is the package's version and its Job runs (kwok
completes it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pykube
import yaml

from generator.core.facts import derive
from generator.core.spec import load_spec
from generator.ops import wait
from tests.support import kube as support_kube

from .conftest import CHART, Helm, create_prerequisites, restricted_namespace

EXAMPLE = CHART.parents[1] / "values" / "llama31-qa"
VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))["version"]


def test_packaged_chart_installs_and_its_job_runs(
    helm: Helm, api: pykube.HTTPClient, namespace_factory: Any, tmp_path: Path
) -> None:
    helm("package", str(CHART), "--destination", str(tmp_path))
    archive = tmp_path / f"llama-factory-{VERSION}.tgz"
    assert archive.is_file()

    facts = derive(load_spec(EXAMPLE / "experiment.yaml"))
    release = facts.releases["train"]
    namespace = restricted_namespace(namespace_factory, f"pkg-{helm.binary.parent.name[:7]}")
    create_prerequisites(api, namespace)
    helm(
        "upgrade", "--install", release, str(archive), "--namespace", namespace,
        "--values", str(EXAMPLE / "train.yaml"), "--timeout", "3m",
    )  # fmt: skip

    [listed] = json.loads(helm("list", "--namespace", namespace, "--output", "json").stdout)
    assert listed["name"] == release
    assert listed["chart"] == f"llama-factory-{VERSION}"
    assert listed["status"] == "deployed"

    [job] = support_kube.jobs(api, namespace, release, "train")
    outcome = wait.job(api, namespace, job["metadata"]["name"], timeout=90)
    assert outcome.ok, f"{release}: {outcome.reason}"

    helm("uninstall", release, "--namespace", namespace, "--wait")
    assert not support_kube.jobs(api, namespace, release, "train")
