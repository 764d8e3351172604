"""Workload controllers in the local cluster, beside the control plane: JobSet, Kubeflow Trainer, the Kubeflow
training operator (PyTorchJob), KubeRay and Kueue (`lfk cluster up --engines jobset --engines trainer
--engines training-operator --engines kuberay --engines kueue`).

Each runs as a host process against the local API server like the other components, its CRDs applied from
its own module (hack/build-tools.sh jobset trainer training-operator kuberay kueue), with a serving
certificate made here. Their admission webhooks are registered with the URL https://127.0.0.1:PORT/...
instead of the in-cluster Service their manifests name, since the API server runs on this machine too; only
the webhooks of the kinds an engine manages here are registered (one whose path it does not serve would
refuse every object of its kind).
Kueue without its in-cluster certificate manager reads its metrics certificate from the fixed path
/etc/kueue/metrics/certs: it starts in a mount namespace of its own where an overlay puts the certificate
there, so the host's /etc is never written (root only, like the real node). Trainer runs on JobSet (its
TrainJobs become JobSets) and is built from a command of ours that sets its webhook server's address and
certificate folder (hack/trainer-controller/main.go); the cluster training runtime our TrainJobs name by
default, torch-distributed, is this project's (torch-distributed.yaml beside this module): it restarts the
group when a rank fails, and carries the security contexts a namespace under Pod Security `restricted` needs,
which Trainer's example runtime lacks. The training operator likewise runs a command of ours
(hack/training-operator/main.go), PyTorchJobs only; its init container that makes a Worker wait for the
Master's DNS name (alpine with nslookup, no security context) is left out with an empty template: a Worker
waits for the Master in torch's own rendezvous, within the spec's rendezvous timeout, and a pod of that init
container could neither be pulled here nor pass Pod Security `restricted`. KubeRay's operator takes loopback
addresses as flags and serves no webhook; no image here carries Ray, so the Ray clusters it makes run only on
the simulated nodes. Kueue manages the kinds of the engines started with it (KUEUE_MANAGES)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ClusterError, ToolMissing
from ..ops import kube
from ..project import built_tool
from . import processes
from .state import State

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


@dataclass(frozen=True)
class Engine:
    name: str
    version_key: str  # its pin in hack/versions.env
    namespace: str  # where it keeps what it keeps (leader election is off)
    # its configuration file's content (state, certs, engines started); None: it takes flags only
    config: Callable[[State, Path, tuple[str, ...]], dict[str, Any]] | None
    webhook_paths: Callable[[tuple[str, ...]], tuple[str, ...]]  # substrings of the paths it serves here
    # (collection, manifest) of the objects it comes with, created once its webhooks answer (they check them)
    objects: tuple[tuple[str, Path], ...] = ()

    def folder(self) -> Path:
        folder = built_tool(self.name, self.version_key).parent
        if not (folder / ".complete").is_file():
            raise ToolMissing(f"{self.name} is not built in {folder}: run `make cluster-tools`")
        return folder

    def port(self, state: State, what: str) -> int:
        return state.ports[f"{self.name}-{what}"]


# the workload kinds Kueue manages beside batch Jobs, each when the engine that runs them is started (Kueue
# looks a kind up once, at its start: the engine starts first), with the path of its webhooks in Kueue's manifest
KUEUE_MANAGES = {
    "jobset": ("jobset.x-k8s.io/jobset", "jobset-x-k8s-io"),
    "trainer": ("trainer.kubeflow.org/trainjob", "trainer-kubeflow-org-v1alpha1-trainjob"),
    "training-operator": ("kubeflow.org/pytorchjob", "kubeflow-org-v1-pytorchjob"),
    "kuberay": ("ray.io/rayjob", "ray-io-v1-rayjob"),
}


def kueue_frameworks(started: tuple[str, ...]) -> list[str]:
    """The workload kinds Kueue manages here: batch Jobs (engine job), and those of the engines started."""
    return ["batch/job", *(kind for engine, (kind, _) in KUEUE_MANAGES.items() if engine in started)]


def kueue_webhook_paths(started: tuple[str, ...]) -> tuple[str, ...]:
    return (
        "kueue-x-k8s-io",
        "batch-v1-job",
        *(path for engine, (_, path) in KUEUE_MANAGES.items() if engine in started),
    )


def controller_config(engine: Engine, state: State, certs: Path) -> dict[str, Any]:
    """What every engine's configuration sets alike: loopback health and webhook ports, no metrics, no leader
    election, the serving certificate made here instead of its own certificate manager."""
    return {
        "health": {"healthProbeBindAddress": f"127.0.0.1:{engine.port(state, 'health')}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"port": engine.port(state, "webhook"), "host": "127.0.0.1", "certDir": str(certs)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
    }


def kueue_config(state: State, certs: Path, started: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": KUEUE.namespace,
        **controller_config(KUEUE, state, certs),
        # the on-demand visibility API wants its own certificate at /visibility: not used here
        "featureGates": {"VisibilityOnDemand": False},
        "integrations": {"frameworks": kueue_frameworks(started)},
    }


def jobset_config(state: State, certs: Path, started: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "apiVersion": "config.jobset.x-k8s.io/v1alpha1",
        "kind": "Configuration",
        **controller_config(JOBSET, state, certs),
    }


# the cluster training runtime our TrainJobs name by default, written by this project
RUNTIME = Path(__file__).resolve().parent / "torch-distributed.yaml"
KUEUE = Engine("kueue", "KUEUE_VERSION", "kueue-system", kueue_config, kueue_webhook_paths)
JOBSET = Engine(
    "jobset", "JOBSET_VERSION", "jobset-system", jobset_config, lambda started: ("jobset", "-v1-pod")
)
TRAINER = Engine(
    "trainer", "KUBEFLOW_TRAINER_VERSION", "kubeflow-system", None, lambda started: ("trainer-kubeflow-org",),
    objects=(("/apis/trainer.kubeflow.org/v1alpha1/clustertrainingruntimes", RUNTIME),),
)  # fmt: skip
TRAINING_OPERATOR = Engine(
    "training-operator", "KUBEFLOW_TRAINING_OPERATOR_VERSION", "kubeflow", None,
    lambda started: ("kubeflow-org-v1-pytorchjob",),
)  # fmt: skip
# its webhooks are off unless ENABLE_WEBHOOKS=true: it serves none here
KUBERAY = Engine("kuberay", "KUBERAY_VERSION", "ray-system", None, lambda started: ())
# in the order they start: Trainer watches the JobSets it makes, so JobSet's kind is served first; Kueue
# manages a kind only when it is served before Kueue starts
ENGINES = {e.name: e for e in (JOBSET, TRAINER, TRAINING_OPERATOR, KUBERAY, KUEUE)}
NEEDS = {"trainer": ("jobset",)}  # engines an engine cannot run without, started with it


def serving_certificate(folder: Path) -> bytes:
    """A CA and a certificate for 127.0.0.1 signed by it (tls.crt, tls.key in folder); the CA's PEM."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "30", "-subj", "/CN=lfk-local-webhooks")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tls.key", "-out", "tls.csr",
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n", encoding="utf-8")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "tls.crt", "-days", "30", "-extfile", "san.cnf")  # fmt: skip
    return (folder / "ca.crt").read_bytes()


def webhooks(
    manifests: Path, prefix: str, paths: tuple[str, ...], port: int, ca: bytes
) -> list[dict[str, Any]]:
    """An engine's webhook configurations (named prefix-...) with only the webhooks whose path contains one of
    paths, calling it on 127.0.0.1."""
    bundle = base64.b64encode(ca).decode()
    found = []
    for doc in yaml.safe_load_all(manifests.read_text(encoding="utf-8")):
        if not doc:
            continue
        kept = []
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            if any(p in path for p in paths):
                kept.append(
                    {**hook, "clientConfig": {"url": f"https://127.0.0.1:{port}{path}", "caBundle": bundle}}
                )
        found.append({**doc, "metadata": {"name": f"{prefix}-{doc['metadata']['name']}"}, "webhooks": kept})
    return found


def wait_established(api: Any, names: list[str], timeout: float) -> None:
    """Controllers look their kinds up once at start-up: the CRDs must be served before they start."""
    deadline = time.monotonic() + timeout
    for name in names:
        while not kube.is_true(kube.request(api, "GET", f"{CRDS}/{name}"), "Established"):
            if time.monotonic() > deadline:
                raise ClusterError(f"the CRD {name} was not established within {timeout:.0f} s")
            time.sleep(0.2)


def argv(state: State, engine: Engine, folder: Path, config: Path, home: Path) -> list[str]:
    binary = str(folder / engine.name)
    if engine in (TRAINER, TRAINING_OPERATOR):
        # commands of ours (hack/*/main.go): the webhook server's address and certificates are flags
        command = [
            binary,
            "--webhook-host=127.0.0.1",
            f"--webhook-port={engine.port(state, 'webhook')}",
            f"--webhook-cert-dir={home / 'certs'}",
            f"--health-probe-bind-address=127.0.0.1:{engine.port(state, 'health')}",
        ]
        if engine is TRAINING_OPERATOR:
            template = home / "init-container.yaml"
            template.write_text("[]\n", encoding="utf-8")  # no init container (see the module's docstring)
            command.append(f"--pytorch-init-container-template-file={template}")
        return command
    if engine is KUBERAY:
        # its flags' defaults listen on every address and elect a leader through the API: loopback, or nothing
        return [
            binary,
            "--metrics-addr=0",
            f"--health-probe-bind-address=127.0.0.1:{engine.port(state, 'health')}",
            "--enable-leader-election=false",
            "--log-stdout-encoder=console",
        ]
    if engine is not KUEUE:
        # JobSet's flags would listen on every address and win over its config: loopback, or nothing
        health = f"127.0.0.1:{engine.port(state, 'health')}"
        return [
            binary,
            f"--config={config}",
            "--metrics-bind-address=0",
            f"--health-probe-bind-address={health}",
        ]
    # Kueue: /etc/kueue/metrics/certs inside a mount namespace of its own (the overlay's upper layer)
    metrics = home / "etc" / "kueue" / "metrics" / "certs"
    metrics.mkdir(parents=True, exist_ok=True)
    for name in ("tls.crt", "tls.key"):
        shutil.copyfile(home / "certs" / name, metrics / name)
    (home / "work").mkdir(exist_ok=True)
    mount = f"mount -t overlay overlay -o lowerdir=/etc,upperdir={home / 'etc'},workdir={home / 'work'} /etc"
    return [
        "unshare", "--mount", "--propagation", "private", "--",
        "sh", "-c", f'{mount} && exec "$0" --config="$1"', binary, str(config),
    ]  # fmt: skip


def start_engine(state: State, engine: Engine, started: tuple[str, ...], timeout: float = 120) -> None:
    folder = engine.folder()
    api = state.api()
    crds = [yaml.safe_load(p.read_text()) for p in sorted((folder / "crds").glob("*.yaml"))]
    for crd in crds:
        kube.create(api, CRDS, crd, replace=True)
    wait_established(api, [c["metadata"]["name"] for c in crds], timeout)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": engine.namespace}}
    kube.create(api, "/api/v1/namespaces", namespace, replace=True)
    for what in ("health", "webhook"):
        state.ports[f"{engine.name}-{what}"] = processes.free_port()
    home = state.directory / engine.name
    ca = serving_certificate(home / "certs")
    config = home / "config.yaml"
    if engine.config:
        config.write_text(yaml.safe_dump(engine.config(state, home / "certs", started)), encoding="utf-8")
    env = {**os.environ, "KUBECONFIG": str(state.kubeconfig)}
    processes.start(state, engine.name, argv(state, engine, folder, config, home), env=env)
    processes.wait_healthy(
        state, engine.name, f"http://127.0.0.1:{engine.port(state, 'health')}/readyz", timeout
    )
    paths = engine.webhook_paths(started)
    hooks = (
        webhooks(folder / "webhooks.yaml", engine.name, paths, engine.port(state, "webhook"), ca)
        if paths
        else []
    )
    for doc in hooks:
        kind = "mutating" if doc["kind"] == "MutatingWebhookConfiguration" else "validating"
        kube.create(
            api, f"/apis/admissionregistration.k8s.io/v1/{kind}webhookconfigurations", doc, replace=True
        )
    for collection, manifest in engine.objects:
        kube.create(api, collection, yaml.safe_load(manifest.read_text(encoding="utf-8")), replace=True)
    state.extra.setdefault("engines", []).append(engine.name)
    state.save()


def start(state: State, names: tuple[str, ...], report: Callable[[str], None] = lambda line: None) -> None:
    """Start the named engines that are not running yet, JobSet before Kueue."""
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise ClusterError(f"unknown engine(s) {', '.join(unknown)}: choose from {', '.join(ENGINES)}")
    running = tuple(state.extra.get("engines", []))
    names = (*names, *(need for n in names for need in NEEDS.get(n, ())))
    wanted = tuple(n for n in ENGINES if n in names and n not in running)
    if "kueue" in wanted and os.geteuid() != 0:
        raise ClusterError(
            "Kueue runs in a mount namespace of its own here (its certificate path is fixed): run as root"
        )
    if wanted:
        report(f"engines: {', '.join(wanted)}")
    for name in wanted:
        start_engine(state, ENGINES[name], running + wanted)
