"""The blocks every release shares: the experiment, the storage, the hub token and MLflow at the top; the image,
GPUs, CPU and memory, /dev/shm and placement in each component's own section."""

from __future__ import annotations

from typing import Any

from ..facts import Facts, shm_size
from ..lfinfo import MEDIA_ARGS
from .yamltext import Block


def image_ref(ref: str) -> dict[str, str]:
    """`repo/name:tag@sha256:...` -> the chart's image block."""
    name, _, digest = ref.partition("@")
    repository, tag = name, ""
    if ":" in name.rsplit("/", 1)[-1]:
        repository, _, tag = name.rpartition(":")
    return {"repository": repository, "tag": tag, "digest": digest}


def secret_ref(secret: dict[str, str]) -> Block:
    """A Secret reference as the chart takes it: its name and the key that holds the value."""
    return Block(("secretName", secret["name"]), ("secretKey", secret["key"]))


def media_args(spec: dict[str, Any]) -> Block:
    """LLaMA-Factory's pixel, frame and sampling arguments the spec's data.media sets (training and evaluation
    read the media alike)."""
    media = spec["data"].get("media", {})
    return Block(*((key, media[field]) for key, field in MEDIA_ARGS.items() if field in media))


def common(spec: dict[str, Any], facts: Facts) -> Block:
    """The top of every values file: what the chart needs whatever the component."""
    values = Block(("experiment", Block(("name", facts.name), ("runId", facts.run_id))))
    storage = spec["storage"]
    if "existingClaim" in storage:
        values.add("storage", Block(("existingClaim", storage["existingClaim"])))
    else:
        nfs = storage["nfs"]
        values.add("storage", Block(
            ("nfs", Block(("server", nfs["server"]), ("path", nfs["path"]), ("readOnly", nfs["readOnly"]))),
            ("size", str(storage["size"])),
        ))  # fmt: skip
    token = spec["model"].get("hub", {}).get("tokenSecret")
    if token is not None:
        values.add("hfToken", secret_ref(token))
    mlflow = spec["tracking"].get("mlflow")
    if mlflow is not None:
        tracking = Block(
            ("trackingUri", mlflow["trackingUri"]), ("experimentName", mlflow.get("experiment", facts.name))
        )
        secret = mlflow.get("credentialsSecret")
        if secret is not None:
            credentials = Block(("secretName", secret["name"]))
            if "tokenKey" in secret:
                credentials.add("tokenKey", secret["tokenKey"])
            else:
                credentials.add("usernameKey", secret["usernameKey"]).add(
                    "passwordKey", secret["passwordKey"]
                )
            tracking.add("credentials", credentials)
        values.add("mlflow", tracking)
    return values


def workload(spec: dict[str, Any], image: str, gpus: int, cpu: Any, memory: Any, shm: Any) -> Block:
    """A component's image, GPUs, CPU and memory (requests = limits), /dev/shm and placement."""
    resources = spec["resources"]
    sized = {"cpu": str(cpu), "memory": str(memory)}
    selector = dict(resources["nodeSelector"])
    if gpus > 0 and "product" in resources.get("gpu", {}):
        selector["nvidia.com/gpu.product"] = resources["gpu"]["product"]
    return Block(
        ("image", Block(*image_ref(image).items())),
        ("gpu", Block(("count", gpus), ("resourceName", resources["gpuResource"]))),
        ("resources", Block(("requests", sized), ("limits", dict(sized)))),
        ("shm", Block(("sizeLimit", shm_size(shm, gpus)))),
        ("nodeSelector", selector),
        ("tolerations", resources["tolerations"]),
        ("priorityClassName", resources["priorityClassName"]),
    )  # fmt: skip
