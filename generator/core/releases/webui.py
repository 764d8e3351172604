"""The webui release: LlamaBoard, with its working directory on the storage and, when exposed, an Ingress
behind authentication."""

from __future__ import annotations

from typing import Any

from ..contract import STORAGE
from ..facts import Facts
from .common import common, workload
from .yamltext import Bare, Block


def values(spec: dict[str, Any], facts: Facts) -> Block:
    w = spec["webui"]
    r = w["resources"]
    webui = Block(("enabled", True))
    webui.comment(
        "LlamaBoard has no login: whoever can open the UI can use the credentials it holds (experiment.yaml:"
    )
    webui.comment("webui.credentials)")
    webui.add("credentials", w.get("credentials", False))
    webui.extend(workload(
        spec, spec["images"]["llamafactory"], r.get("gpus", 0), r.get("cpu", "4"), r.get("memory", "32Gi"),
        r.get("shmSize"),
    ))  # fmt: skip
    webui.comment(
        "LlamaBoard keeps saves/ and its caches in its working directory: the one writable folder of the storage"
    )
    webui.add("workingDir", f"{STORAGE['llamaboard']}/{facts.name}")
    values = common(spec, facts).add("webui", webui)
    ingress = w.get("ingress")
    if ingress is None:
        return values
    exposed = Block(("enabled", True), ("className", ingress["className"]), ("host", ingress["host"]))
    if "tlsSecret" in ingress:
        exposed.add("tls", [{"secretName": ingress["tlsSecret"], "hosts": [ingress["host"]]}])
    auth = ingress["auth"]
    if "basicSecret" in auth:
        login = Block(("type", Bare("basic")), ("secretName", auth["basicSecret"]))
    else:
        login = Block(("type", Bare("url")), ("url", auth["url"]))
        if "signin" in auth:
            login.add("signin", auth["signin"])
    exposed.add("auth", login)
    webui.add("ingress", exposed)
    controller = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ingress["controllerNamespace"]}}
    }
    policy = Block().comment("the Ingress controller's namespace: the only one let in to the UI")
    return values.add("networkPolicy", Block(("webui", policy.add("from", [controller]))))
