"""Workload controllers in the local cluster, beside the control plane: Kueue (`lfk cluster up --engines kueue`).

Kueue runs as a host process against the local API server like the other components, its CRDs applied from
its own module (hack/build-tools.sh kueue), with a serving certificate made here. Its admission webhooks are
registered with the URL https://127.0.0.1:PORT/... instead of the in-cluster Service its manifests name, since
the API server runs on this machine too. Kueue without its in-cluster certificate manager reads its metrics
certificate from the fixed path /etc/kueue/metrics/certs: it starts in a mount namespace of its own where an
overlay puts the certificate there, so the host's /etc is never written (root only, like the real node)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from ..errors import ClusterError, ToolMissing
from ..ops import kube
from ..project import built_tool
from . import processes
from .state import State

ENGINES = ("kueue",)
KUEUE_NAMESPACE = "kueue-system"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
# the workload kinds Kueue manages here: batch Jobs (engine job). Its webhooks for kinds not enabled are left
# out: a webhook whose path Kueue does not serve would refuse every object of its kind
KUEUE_FRAMEWORKS = ("batch/job",)
KUEUE_WEBHOOK_PATHS = ("kueue-x-k8s-io", "batch-v1-job")


def kueue_dir() -> Path:
    folder = built_tool("kueue", "KUEUE_VERSION").parent
    if not (folder / ".complete").is_file():
        raise ToolMissing(f"Kueue is not built in {folder}: run `make cluster-tools`")
    return folder


def serving_certificate(folder: Path) -> bytes:
    """A CA and a certificate for 127.0.0.1 signed by it (tls.crt, tls.key in folder); the CA's PEM."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "30", "-subj", "/CN=lfk-local-webhooks")  # fmt: skip
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n", encoding="utf-8")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "tls.crt", "-days", "30", "-extfile", "san.cnf")  # fmt: skip
    return (folder / "ca.crt").read_bytes()


def kueue_config(state: State, certs: Path) -> dict[str, Any]:
    ports = state.ports
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": KUEUE_NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{ports['kueue-health']}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"port": ports["kueue-webhook"], "host": "127.0.0.1", "certDir": str(certs)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        # the on-demand visibility API wants its own certificate at /visibility: not used here
        "featureGates": {"VisibilityOnDemand": False},
        "integrations": {"frameworks": list(KUEUE_FRAMEWORKS)},
    }


def webhooks(manifests: Path, port: int, ca: bytes) -> list[dict[str, Any]]:
    """Kueue's webhook configurations for the kinds it manages here, calling it on 127.0.0.1."""
    bundle = base64.b64encode(ca).decode()
    found = []
    for doc in yaml.safe_load_all(manifests.read_text(encoding="utf-8")):
        if not doc:
            continue
        kept = []
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            if any(p in path for p in KUEUE_WEBHOOK_PATHS):
                kept.append(
                    {**hook, "clientConfig": {"url": f"https://127.0.0.1:{port}{path}", "caBundle": bundle}}
                )
        found.append({**doc, "metadata": {"name": f"kueue-{doc['metadata']['name']}"}, "webhooks": kept})
    return found


def wait_established(api: Any, names: list[str], timeout: float) -> None:
    """Kueue looks its kinds up once at start-up: its CRDs must be served before it starts."""
    deadline = time.monotonic() + timeout
    for name in names:
        while not kube.is_true(kube.request(api, "GET", f"{CRDS}/{name}"), "Established"):
            if time.monotonic() > deadline:
                raise ClusterError(f"the CRD {name} was not established within {timeout:.0f} s")
            time.sleep(0.2)


def start_kueue(state: State, timeout: float = 120) -> None:
    if os.geteuid() != 0:
        raise ClusterError(
            "Kueue runs in a mount namespace of its own here (its certificate path is fixed): run as root"
        )
    folder = kueue_dir()
    api = state.api()
    crds = [yaml.safe_load(p.read_text()) for p in sorted((folder / "crds").glob("*.yaml"))]
    for crd in crds:
        kube.create(api, CRDS, crd, replace=True)
    wait_established(api, [c["metadata"]["name"] for c in crds], timeout)
    kube.create(
        api,
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KUEUE_NAMESPACE}},
    )
    for port in ("kueue-health", "kueue-webhook"):
        state.ports[port] = processes.free_port()
    home = state.directory / "kueue"
    ca = serving_certificate(home / "certs")
    # the overlay's upper layer: /etc/kueue/metrics/certs inside Kueue's mount namespace
    metrics = home / "etc" / "kueue" / "metrics" / "certs"
    metrics.mkdir(parents=True, exist_ok=True)
    for name in ("tls.crt", "tls.key"):
        shutil.copyfile(home / "certs" / name, metrics / name)
    (home / "work").mkdir(exist_ok=True)
    config = home / "config.yaml"
    config.write_text(yaml.safe_dump(kueue_config(state, home / "certs")), encoding="utf-8")
    mount = f"mount -t overlay overlay -o lowerdir=/etc,upperdir={home / 'etc'},workdir={home / 'work'} /etc"
    argv = [
        "unshare", "--mount", "--propagation", "private", "--",
        "sh", "-c", f'{mount} && exec "$0" --config="$1"', str(folder / "kueue"), str(config),
    ]  # fmt: skip
    processes.start(state, "kueue", argv, env={**os.environ, "KUBECONFIG": str(state.kubeconfig)})
    processes.wait_healthy(state, "kueue", f"http://127.0.0.1:{state.ports['kueue-health']}/readyz", timeout)
    for doc in webhooks(folder / "webhooks.yaml", state.ports["kueue-webhook"], ca):
        kind = "mutating" if doc["kind"] == "MutatingWebhookConfiguration" else "validating"
        kube.create(
            api, f"/apis/admissionregistration.k8s.io/v1/{kind}webhookconfigurations", doc, replace=True
        )
    state.extra.setdefault("engines", []).append("kueue")
    state.save()


def start(state: State, engines: tuple[str, ...]) -> None:
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise ClusterError(f"unknown engine(s) {', '.join(unknown)}: choose from {', '.join(ENGINES)}")
    if "kueue" in engines:
        start_kueue(state)
