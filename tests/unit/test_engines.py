"""The workload controllers' wiring into the local cluster (generator/cluster/engines.py), without starting them:
Kueue's configuration, Trainer's flags and runtime, which webhooks are registered, and where they call."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from generator.cluster import engines
from generator.cluster.state import State
from generator.project import REPO_ROOT

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


def validating_webhooks(folder: Path, operator: str, paths: list[str]) -> Path:
    """An operator's webhook manifest as its module has it: a ValidatingWebhookConfiguration with one webhook
    per service path."""
    manifests = folder / "webhooks.yaml"
    manifests.write_text(yaml.safe_dump({
        "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "validating-webhook-configuration"},
        "webhooks": [{"name": f"validator.{i}.{operator}", "clientConfig": {"service": {"path": path}}}
                     for i, path in enumerate(paths)],
    }))  # fmt: skip
    return manifests


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


def test_kueue_listens_on_loopback_only_and_manages_each_engines_kind_only_beside_that_engine(
    tmp_path: Path,
) -> None:
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
    every = ("jobset", "trainer", "training-operator", "kueue")
    assert engines.kueue_config(state, tmp_path, every)["integrations"]["frameworks"] == [
        "batch/job",
        "jobset.x-k8s.io/jobset",
        "trainer.kubeflow.org/trainjob",
        "kubeflow.org/pytorchjob",
    ]
    paths = engines.KUEUE.webhook_paths(every)
    assert "trainer-kubeflow-org-v1alpha1-trainjob" in paths and "kubeflow-org-v1-pytorchjob" in paths
    # Kueue serves a kind's webhooks only when it manages the kind: one registered but not served would refuse
    # every object of that kind
    assert "kubeflow-org-v1-pytorchjob" not in engines.KUEUE.webhook_paths(("trainer", "kueue"))


def test_jobset_starts_before_kueue_and_listens_on_loopback_only(tmp_path: Path) -> None:
    # Trainer watches the JobSets it makes, Kueue looks the JobSet kind up at its start
    assert list(engines.ENGINES) == ["jobset", "trainer", "training-operator", "kuberay", "kueue"]
    state = State(tmp_path, ports={"jobset-health": 18091, "jobset-webhook": 19453})
    config = engines.jobset_config(state, tmp_path / "certs")
    assert (
        config["webhook"]["host"] == "127.0.0.1"
        and config["health"]["healthProbeBindAddress"] == "127.0.0.1:18091"
    )
    argv = engines.argv(state, engines.JOBSET, tmp_path, tmp_path / "config.yaml", tmp_path)
    assert "--metrics-bind-address=0" in argv and "--health-probe-bind-address=127.0.0.1:18091" in argv


def test_trainer_listens_on_loopback_only_with_our_certificate_and_brings_jobset_along(
    tmp_path: Path,
) -> None:
    state = State(tmp_path, ports={"trainer-health": 18101, "trainer-webhook": 19463})
    argv = engines.argv(state, engines.TRAINER, tmp_path, tmp_path / "config.yaml", tmp_path)
    assert argv[1:] == [
        "--webhook-host=127.0.0.1",
        "--webhook-port=19463",
        f"--webhook-cert-dir={tmp_path / 'certs'}",
        "--health-probe-bind-address=127.0.0.1:18101",
    ]
    assert engines.TRAINER.config is None and engines.NEEDS["trainer"] == ("jobset",)
    paths = ("clustertrainingruntime", "trainingruntime", "trainjob")
    manifests = validating_webhooks(
        tmp_path, "trainer.kubeflow.org", [f"/validate-trainer-kubeflow-org-v1alpha1-{p}" for p in paths]
    )
    [doc] = engines.webhooks(manifests, "trainer", engines.TRAINER.webhook_paths(()), 19463, b"CA")
    assert [h["clientConfig"]["url"] for h in doc["webhooks"]] == [
        f"https://127.0.0.1:19463/validate-trainer-kubeflow-org-v1alpha1-{p}" for p in paths
    ]


def test_the_training_operator_listens_on_loopback_only_and_adds_no_init_container(tmp_path: Path) -> None:
    """Its Workers' init container (alpine, nslookup, no security context) would be refused under Pod Security
    restricted and cannot be pulled here: an empty template leaves it out (torch's rendezvous waits instead)."""
    state = State(tmp_path, ports={"training-operator-health": 18102, "training-operator-webhook": 19464})
    engine = engines.TRAINING_OPERATOR
    argv = engines.argv(state, engine, tmp_path, tmp_path / "config.yaml", tmp_path)
    template = tmp_path / "init-container.yaml"
    assert argv[1:] == [
        "--webhook-host=127.0.0.1",
        "--webhook-port=19464",
        f"--webhook-cert-dir={tmp_path / 'certs'}",
        "--health-probe-bind-address=127.0.0.1:18102",
        f"--pytorch-init-container-template-file={template}",
    ]
    assert yaml.safe_load(template.read_text()) == []
    assert engine.config is None and engine.name not in engines.NEEDS
    kinds = ("mxjob", "pytorchjob", "tfjob")
    manifests = validating_webhooks(
        tmp_path, "training-operator.kubeflow.org", [f"/validate-kubeflow-org-v1-{k}" for k in kinds]
    )
    # only PyTorchJob's: the command serves no other kind, and an unserved webhook refuses every object
    [doc] = engines.webhooks(manifests, engine.name, engine.webhook_paths(()), 19464, b"CA")
    assert [h["clientConfig"]["url"] for h in doc["webhooks"]] == [
        "https://127.0.0.1:19464/validate-kubeflow-org-v1-pytorchjob"
    ]


def test_kuberay_listens_on_loopback_only_elects_no_leader_and_registers_no_webhook(tmp_path: Path) -> None:
    state = State(tmp_path, ports={"kuberay-health": 18103, "kuberay-webhook": 19465})
    argv = engines.argv(state, engines.KUBERAY, tmp_path, tmp_path / "config.yaml", tmp_path)
    assert argv[1:] == [
        "--metrics-addr=0",
        "--health-probe-bind-address=127.0.0.1:18103",
        "--enable-leader-election=false",
        "--log-stdout-encoder=console",
    ]
    assert (
        engines.KUBERAY.webhook_paths(("kuberay",)) == ()
    )  # its webhooks are off unless ENABLE_WEBHOOKS=true
    assert "ray.io/rayjob" in engines.kueue_frameworks(("kuberay", "kueue"))
    assert "ray-io-v1-rayjob" in engines.KUEUE.webhook_paths(("kuberay", "kueue"))


def test_the_torch_distributed_runtime_gives_the_pods_the_charts_security_contexts() -> None:
    """The chart's TrainJob sets its pods' security contexts in its runtime patch; the project's runtime
    carries the same defaults for a TrainJob made without the chart, which a namespace under Pod Security
    `restricted` would otherwise refuse."""
    chart = yaml.safe_load((REPO_ROOT / "charts" / "llama-factory" / "values.yaml").read_text())
    runtime = yaml.safe_load(engines.RUNTIME.read_text())
    assert runtime["kind"] == "ClusterTrainingRuntime" and runtime["metadata"]["name"] == "torch-distributed"
    [job] = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert job["name"] == "node"  # the chart's runtime patch targets it
    pod = job["template"]["spec"]["template"]["spec"]
    assert pod["securityContext"] == chart["podSecurityContext"]
    [container] = pod["containers"]
    assert container["name"] == "node" and container["securityContext"] == chart["securityContext"]
