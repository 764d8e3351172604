"""The workload controllers' wiring into the local cluster (generator/cluster/engines.py), without starting them:
Kueue's configuration and which of its webhooks are registered, and where they call."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from generator.cluster import engines
from generator.cluster.state import State

MANIFESTS = [
    {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "mutating-webhook-configuration"},
        "webhooks": [
            {"name": f"m{kind}.kb.io", "clientConfig": {"service": {"name": "webhook-service", "namespace": "system",
             "path": path}}, "failurePolicy": "Fail"}
            for kind, path in (("job", "/mutate-batch-v1-job"), ("pod", "/mutate--v1-pod"),
                               ("clusterqueue", "/mutate-kueue-x-k8s-io-v1beta2-clusterqueue"),
                               ("mpijob", "/mutate-kubeflow-org-v2beta1-mpijob"))
        ],
    }
]  # fmt: skip


def test_only_the_webhooks_of_what_kueue_manages_here_are_registered_and_they_call_127_0_0_1(
    tmp_path: Path,
) -> None:
    manifests = tmp_path / "webhooks.yaml"
    manifests.write_text(yaml.safe_dump_all(MANIFESTS))
    paths = engines.KUEUE.webhook_paths(("kueue",))
    [doc] = engines.webhooks(manifests, "kueue", paths, 19443, b"CA PEM")
    assert doc["metadata"] == {"name": "kueue-mutating-webhook-configuration"}
    # a webhook for pods or MPIJobs, whose path Kueue does not serve with only batch/job enabled, would refuse
    # every pod of the cluster: left out
    assert [h["name"] for h in doc["webhooks"]] == ["mjob.kb.io", "mclusterqueue.kb.io"]
    for hook in doc["webhooks"]:
        assert hook["clientConfig"]["url"].startswith("https://127.0.0.1:19443/mutate-")
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == b"CA PEM"
        assert "service" not in hook["clientConfig"] and hook["failurePolicy"] == "Fail"


def test_kueue_listens_on_loopback_only_and_manages_jobsets_only_beside_jobset(tmp_path: Path) -> None:
    state = State(tmp_path, ports={"kueue-health": 18081, "kueue-webhook": 19443})
    config = engines.kueue_config(state, tmp_path / "certs", ("kueue",))
    assert config["health"]["healthProbeBindAddress"] == "127.0.0.1:18081"
    assert config["webhook"] == {"port": 19443, "host": "127.0.0.1", "certDir": str(tmp_path / "certs")}
    assert config["metrics"] == {"bindAddress": "0"} and config["leaderElection"] == {"leaderElect": False}
    assert config["integrations"] == {"frameworks": ["batch/job"]}
    both = ("jobset", "kueue")
    assert engines.kueue_config(state, tmp_path, both)["integrations"]["frameworks"] == [
        "batch/job",
        "jobset.x-k8s.io/jobset",
    ]
    assert "jobset-x-k8s-io" in engines.KUEUE.webhook_paths(both)
    assert "jobset-x-k8s-io" not in engines.KUEUE.webhook_paths(("kueue",))


def test_jobset_starts_before_kueue_and_listens_on_loopback_only(tmp_path: Path) -> None:
    assert list(engines.ENGINES) == ["jobset", "kueue"]  # Kueue looks the JobSet kind up at its start
    state = State(tmp_path, ports={"jobset-health": 18091, "jobset-webhook": 19453})
    config = engines.jobset_config(state, tmp_path / "certs")
    assert (
        config["webhook"]["host"] == "127.0.0.1"
        and config["health"]["healthProbeBindAddress"] == "127.0.0.1:18091"
    )
    argv = engines.argv(state, engines.JOBSET, tmp_path, tmp_path / "config.yaml", tmp_path)
    assert "--metrics-bind-address=0" in argv and "--health-probe-bind-address=127.0.0.1:18091" in argv
