"""The Kubernetes API client of every room (operations, the local cluster, the tests): requests that retry
when the server asks to and fail with KubeError carrying the HTTP status, and the reads of an experiment's
objects (workloads, pods, events, logs).

Built on pykube-ng (kubeconfig with tokens, client certificates, exec plugins). Imported only by the
commands that talk to a cluster, never on the validate/render path.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any

import pykube
import requests

from ..errors import KubeError, SpecError

INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
RUN_ID = "llamafactory-k8s/run-id"
# the completion index of an Indexed Job's pod: its node rank in a multi-node training
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
# JobSet's label on the pods of its Jobs (a TrainJob's JobSet has the TrainJob's name)
JOBSET_NAME = "jobset.sigs.k8s.io/jobset-name"
# the training operator's labels on a PyTorchJob's pods: Master (node rank 0) or Worker i (node rank i + 1)
REPLICA_TYPE = "training.kubeflow.org/replica-type"
REPLICA_INDEX = "training.kubeflow.org/replica-index"


def node_rank(pod: dict[str, Any]) -> str | None:
    """A training pod's node rank in a multi-node run: an Indexed Job's completion index (JobSet's and
    Trainer's pods are those too), or a PyTorchJob's replica; None for a pod of neither."""
    meta = pod["metadata"]
    if (index := meta.get("annotations", {}).get(COMPLETION_INDEX)) is not None:
        return str(index)
    labels = meta.get("labels", {})
    kind, index = labels.get(REPLICA_TYPE), labels.get(REPLICA_INDEX)
    if kind == "master" and index is not None:
        return str(index)
    if kind == "worker" and str(index).isdigit():
        return str(int(index) + 1)
    return None


# kubeconfig entries that name a file, resolved against the file that holds them (as kubectl does)
_FILE_FIELDS = {
    "clusters": ("certificate-authority",),
    "users": ("client-certificate", "client-key", "tokenFile"),
}
_DATA_FIELDS = {
    "clusters": ("certificate-authority-data",),
    "users": ("client-certificate-data", "client-key-data"),
}
_SECTIONS = {"clusters": "cluster", "users": "user", "contexts": "context"}


def kubeconfig_files(kubeconfig: str | None = None) -> list[Path]:
    """The files kubectl would read: --kubeconfig alone; else every file of $KUBECONFIG that exists (in
    order, each once); else ~/.kube/config."""
    if kubeconfig:
        return [Path(kubeconfig)]
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if not listed:
        return [Path("~/.kube/config").expanduser()]
    files: list[Path] = []
    for entry in listed:
        path = Path(entry).expanduser()
        if path not in files and path.is_file():
            files.append(path)
    return files


def _read_kubeconfig(path: Path) -> dict[str, Any]:
    """One kubeconfig file, its sections checked and its file references made absolute."""
    from ..core.spec import load_yaml_file

    try:
        doc = load_yaml_file(path, what="the kubeconfig")
    except SpecError as exc:
        raise KubeError(f"kubeconfig {path}: {exc.problems[0].message}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise KubeError(
            f"kubeconfig {path}: not a kubeconfig (a YAML mapping with clusters, users, contexts)"
        )
    for section, inner in _SECTIONS.items():
        entries = doc.get(section) or []
        if not isinstance(entries, list):
            raise KubeError(f"kubeconfig {path}: {section} must be a list")
        for i, entry in enumerate(entries):
            if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)):
                raise KubeError(f"kubeconfig {path}: {section}[{i}] has no name")
            body = entry.get(inner)
            if body is None:
                body = entry[inner] = {}
            if not isinstance(body, dict):
                raise KubeError(
                    f"kubeconfig {path}: {section}[{i}] ({entry['name']}): {inner} must be a mapping"
                )
            for key in _FILE_FIELDS.get(section, ()):
                if isinstance(body.get(key), str) and body[key]:
                    body[key] = str((path.parent / Path(body[key]).expanduser()).absolute())
            entry["source"] = str(path)
    current = doc.get("current-context")
    if current is not None and not isinstance(current, str):
        raise KubeError(f"kubeconfig {path}: current-context must be a name")
    return doc


def merged_kubeconfig(files: list[Path]) -> dict[str, Any]:
    """The files merged as kubectl merges them: for each named cluster, user and context the first file that
    has it wins, and so does the first file that sets current-context. Entries keep their `source` file."""
    merged: dict[str, Any] = {section: [] for section in _SECTIONS}
    for path in files:
        doc = _read_kubeconfig(path)
        for section in _SECTIONS:
            known = {e["name"] for e in merged[section]}
            merged[section] += [e for e in doc.get(section) or [] if e["name"] not in known]
        if doc.get("current-context") and "current-context" not in merged:
            merged["current-context"] = doc["current-context"]
    return merged


def load_kubeconfig(kubeconfig: str | None = None, context: str | None = None) -> pykube.KubeConfig:
    """The kubeconfig kubectl would use, checked: the context exists, names a cluster with a server and
    a user that exist, and every file it refers to is there. KubeError, one line, otherwise."""
    files = kubeconfig_files(kubeconfig)
    where = ", ".join(str(f) for f in files) or "(none)"
    if kubeconfig and not files[0].is_file():
        raise KubeError(f"kubeconfig {kubeconfig}: no such file")
    if not files:
        raise KubeError(f"no kubeconfig: none of the files in KUBECONFIG exists ({os.environ['KUBECONFIG']})")
    if not kubeconfig and not files[0].is_file():
        raise KubeError(f"no kubeconfig: {files[0]} does not exist (set KUBECONFIG or pass --kubeconfig)")
    doc = merged_kubeconfig(files)
    name = context or doc.get("current-context")
    if not name:
        raise KubeError(f"kubeconfig {where}: no current-context set and no --context given")
    entries = {section: {e["name"]: e for e in doc[section]} for section in _SECTIONS}
    ctx = entries["contexts"].get(name)
    if ctx is None:
        known = ", ".join(sorted(entries["contexts"])) or "none"
        raise KubeError(f"kubeconfig {where}: no context {name!r} (contexts: {known})")
    cluster_name, user_name = ctx["context"].get("cluster"), ctx["context"].get("user")
    cluster = entries["clusters"].get(cluster_name) if isinstance(cluster_name, str) else None
    if cluster is None:
        raise KubeError(
            f"kubeconfig {ctx['source']}: context {name!r} names cluster {cluster_name!r}, which is not there"
        )
    if not cluster["cluster"].get("server"):
        raise KubeError(f"kubeconfig {cluster['source']}: cluster {cluster_name!r} has no server")
    used = [("clusters", cluster)]
    if user_name:
        user = entries["users"].get(user_name) if isinstance(user_name, str) else None
        if user is None:
            raise KubeError(
                f"kubeconfig {ctx['source']}: context {name!r} names user {user_name!r}, which is not there"
            )
        used.append(("users", user))
    for section, entry in used:
        body = entry["cluster" if section == "clusters" else "user"]
        for key in _FILE_FIELDS[section]:
            if key in body and not Path(str(body[key])).is_file():
                raise KubeError(
                    f"kubeconfig {entry['source']}: {_SECTIONS[section]} {entry['name']!r}: {key} {body[key]} does not exist"
                )
        for key in _DATA_FIELDS[section]:
            if key in body:
                try:
                    base64.b64decode(str(body[key]), validate=True)
                except ValueError:
                    raise KubeError(
                        f"kubeconfig {entry['source']}: {_SECTIONS[section]} {entry['name']!r}: {key} is not base64"
                    ) from None
    config = pykube.KubeConfig(doc, current_context=name)
    config.filepath = files[0]
    return config


def client(kubeconfig: str | None = None, context: str | None = None) -> pykube.HTTPClient:
    """An API client for the kubeconfig kubectl would use (see load_kubeconfig)."""
    config = load_kubeconfig(kubeconfig, context)
    try:
        return pykube.HTTPClient(config, timeout=30)
    except (pykube.exceptions.PyKubeError, OSError, ValueError, KeyError, TypeError) as exc:
        raise KubeError(
            f"kubeconfig {config.filepath}: cannot use context {config.current_context!r}: {exc}"
        ) from None


def request(api: pykube.HTTPClient, method: str, path: str, retries: int = 5, **kwargs: Any) -> Any:
    """A raw API call (for what pykube has no object for); the JSON answer, or KubeError. Like kubectl, it
    waits and retries when the server asks to (429/503 with Retry-After, e.g. a new CRD's storage starting)."""
    for attempt in range(retries + 1):
        try:
            response = api.session.request(method, api.url + path, timeout=30, **kwargs)
        except requests.RequestException as exc:
            raise KubeError(f"{method} {path}: {exc}") from None
        if response.status_code not in (429, 503) or attempt == retries:
            break
        time.sleep(min(5.0, float(response.headers.get("Retry-After") or 1)))
    if response.status_code >= 400:
        raise KubeError(
            f"{method} {path}: {response.status_code} {response.text[:400]}", response.status_code
        )
    return response.json() if response.content else None


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj.get("status", {}).get("conditions", []) or []}


def is_true(obj: dict[str, Any], condition: str) -> bool:
    """Any condition of this type with status True: Job controllers put SuccessCriteriaMet before Complete."""
    return any(
        c.get("type") == condition and c.get("status") == "True"
        for c in obj.get("status", {}).get("conditions", []) or []
    )


# where each engine's training workload lives in the API: (path prefix, plural)
ENGINE_RESOURCES = {
    "job": ("/apis/batch/v1", "jobs"),
    "trainjob": ("/apis/trainer.kubeflow.org/v1alpha1", "trainjobs"),
    "pytorchjob": ("/apis/kubeflow.org/v1", "pytorchjobs"),
    "jobset": ("/apis/jobset.x-k8s.io/v1alpha2", "jobsets"),
    "rayjob": ("/apis/ray.io/v1", "rayjobs"),
}


def workloads(
    api: pykube.HTTPClient, namespace: str, release: str, component: str, engine: str = "job"
) -> list[dict[str, Any]]:
    """The objects that run a release's component: batch Jobs, or the engine's custom resources."""
    prefix, plural = ENGINE_RESOURCES[engine]
    selector = f"{INSTANCE}={release},{COMPONENT}={component}"
    answer = request(
        api, "GET", f"{prefix}/namespaces/{namespace}/{plural}", params={"labelSelector": selector}
    )
    return list(answer.get("items", []))


def workload(api: pykube.HTTPClient, namespace: str, name: str, engine: str = "job") -> dict[str, Any]:
    """One Job (or engine workload) by name; KubeError with status 404 when it does not exist."""
    prefix, plural = ENGINE_RESOURCES[engine]
    try:
        obj: dict[str, Any] = request(api, "GET", f"{prefix}/namespaces/{namespace}/{plural}/{name}")
    except KubeError as exc:
        if exc.status == 404:
            raise KubeError(f"{plural} {namespace}/{name} does not exist", 404) from None
        raise
    return obj


def deployment(api: pykube.HTTPClient, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = request(api, "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    return obj


def workload_state(obj: dict[str, Any]) -> tuple[str, str]:
    """(Complete | Failed | Suspended | Running, reason) of a Job, TrainJob, PyTorchJob, JobSet or RayJob."""
    status = obj.get("status", {}) or {}
    if obj.get("kind") == "RayJob":
        # KubeRay: jobDeploymentStatus is the RayJob's own lifecycle (it retries up to backoffLimit);
        # jobStatus is the Ray job's, which may be FAILED during a retry
        deployment, job = status.get("jobDeploymentStatus", ""), status.get("jobStatus", "")
        if deployment == "Complete":
            return ("Complete", "") if job == "SUCCEEDED" else ("Failed", status.get("message", job))
        if deployment in ("Failed", "ValidationFailed"):
            return "Failed", f"{deployment}: {status.get('reason', '')} {status.get('message', '')}".strip()
        return ("Suspended" if obj["spec"].get("suspend") else "Running"), ""
    if any(is_true(obj, c) for c in ("Complete", "Completed", "Succeeded")):
        return "Complete", ""
    if is_true(obj, "Failed"):
        failed = conditions(obj)["Failed"]
        return "Failed", f"{failed.get('reason', '')}: {failed.get('message', '')}".strip(": ")
    suspended = obj.get("spec", {}).get("suspend") or obj.get("spec", {}).get("runPolicy", {}).get("suspend")
    return ("Suspended" if suspended else "Running"), ""


def create(api: pykube.HTTPClient, path: str, body: dict[str, Any], replace: bool = False) -> None:
    """POST body to the collection at path; one of that name already there is kept, or replaced."""
    try:
        request(api, "POST", path, json=body)
    except KubeError as exc:
        if exc.status != 409:
            raise
        if replace:
            url = f"{path}/{body['metadata']['name']}"
            version = request(api, "GET", url)["metadata"]["resourceVersion"]
            request(
                api, "PUT", url, json={**body, "metadata": {**body["metadata"], "resourceVersion": version}}
            )


QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_WORKLOADS = "/apis/kueue.x-k8s.io/v1beta2"


def kueue_workload(api: pykube.HTTPClient, obj: dict[str, Any]) -> dict[str, Any] | None:
    """The Kueue Workload Kueue made for a job (found by the job's uid), or None (not made yet)."""
    namespace, uid = obj["metadata"]["namespace"], obj["metadata"].get("uid", "")
    answer = request(
        api, "GET", f"{KUEUE_WORKLOADS}/namespaces/{namespace}/workloads",
        params={"labelSelector": f"kueue.x-k8s.io/job-uid={uid}"},
    )  # fmt: skip
    items = answer.get("items", [])
    return items[0] if items else None


def queue_wait(api: pykube.HTTPClient, obj: dict[str, Any]) -> str | None:
    """Why a suspended workload with a queue label is not running yet, in Kueue's words: "waiting in queue Q:
    <why>" from its Kueue Workload; None when it is not suspended in a queue."""
    queue = obj["metadata"].get("labels", {}).get(QUEUE_LABEL)
    if not queue or workload_state(obj)[0] != "Suspended":
        return None
    try:
        workload = kueue_workload(api, obj)
    except KubeError:  # no Kueue in this cluster: its API is not served
        return f"waiting in queue {queue}: no Kueue answers in this cluster (its Workload API is not served)"
    if workload is None:
        return f"waiting in queue {queue}: Kueue has not made a Workload for it yet"
    found = conditions(workload)
    evicted = found.get("Evicted", {})
    why = (evicted if evicted.get("status") == "True" else found.get("QuotaReserved", {})).get("message")
    why = why or "not admitted yet"
    return f"waiting in queue {queue}: {why}"


def pods(api: pykube.HTTPClient, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
    return [p.obj for p in pykube.Pod.objects(api, namespace=namespace).filter(selector=selector)]


def events_of(api: pykube.HTTPClient, namespace: str, kind: str, name: str, last: int = 8) -> list[str]:
    """The newest events about one object, as `Reason: message` lines."""
    found = pykube.Event.objects(api, namespace=namespace).filter(
        field_selector={"involvedObject.kind": kind, "involvedObject.name": name}
    )
    events = sorted((e.obj for e in found), key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    return [f"{e.get('type', '')} {e.get('reason', '')}: {e.get('message', '')}" for e in events[-last:]]


def pod_log_tail(
    api: pykube.HTTPClient, namespace: str, pod: str, container: str | None = None, lines: int = 20
) -> str:
    """The last log lines of a pod's container, or a note saying why there are none."""
    params: dict[str, Any] = {"tailLines": lines}
    if container:
        params["container"] = container
    try:
        response = api.session.get(
            f"{api.url}/api/v1/namespaces/{namespace}/pods/{pod}/log", params=params, timeout=30
        )
    except requests.RequestException as exc:
        return f"(no logs: {exc})"
    if response.status_code != 200:
        return f"(no logs: {response.status_code} {response.text[:200]})"
    # the log endpoint names no charset, so requests would guess latin-1: containers write UTF-8 (✓, ✗, ...)
    text = response.content.decode("utf-8", errors="replace")
    return text.rstrip() or "(the container wrote no log lines)"


# kwok's annotation on the nodes whose kubelet it plays: pods there are scheduled but no container runs
SIMULATED_NODE = ("kwok.x-k8s.io/node", "fake")


def simulated_nodes(api: pykube.HTTPClient) -> set[str]:
    """The nodes whose kubelet is simulated: what runs there is scheduled and admitted, never executed."""
    key, value = SIMULATED_NODE
    nodes = request(api, "GET", "/api/v1/nodes")["items"]
    return {n["metadata"]["name"] for n in nodes if n["metadata"].get("annotations", {}).get(key) == value}


def gpu_request(pod: dict[str, Any], resource: str = "nvidia.com/gpu") -> int:
    total = 0
    for container in pod["spec"].get("containers", []):
        limits = container.get("resources", {}).get("limits", {}) or {}
        total += int(limits.get(resource, 0))
    return total
