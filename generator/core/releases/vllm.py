"""The vllm release: vLLM's OpenAI-compatible server for the merged model, the full model, or the base
model with the trained adapter (and, as a shared host, other experiments' adapters loaded at run time)."""

from __future__ import annotations

from typing import Any

from ..facts import Facts
from .common import common, secret_ref, workload
from .yamltext import Block


def values(spec: dict[str, Any], facts: Facts) -> Block:
    s, r = spec["serve"], spec["serve"]["resources"]
    gpus = 0 if r.get("gpus") == 0 else s["tensorParallelSize"]
    vllm = Block(("enabled", True)).extend(workload(
        spec, spec["images"]["vllm"], gpus, r.get("cpu", "8"), r.get("memory", "64Gi"), r.get("shmSize"),
    ))  # fmt: skip
    vllm.add("model", facts.serve_model).add("servedModelName", facts.served_name)
    vllm.add("tensorParallelSize", s["tensorParallelSize"]).add(
        "gpuMemoryUtilization", float(s["gpuMemoryUtilization"])
    )
    if gpus == 0:
        vllm.add("cpu", Block(("kvCacheSpaceGiB", s["cpuKvCacheGiB"])))
    vllm.add("maxModelLen", s["maxModelLen"]).add("trustRemoteCode", spec["model"]["trustRemoteCode"])
    if facts.lora_module:
        lora = Block(
            ("enabled", True), ("name", facts.served_name), ("path", facts.lora_module),
            ("maxLoraRank", facts.max_lora_rank),
        )  # fmt: skip
        if facts.adapter_registry:
            shared = s["sharedAdapters"]
            lora.comment(
                "other experiments' adapters (serve.source: shared), loaded at run time by each replica's sidecar"
            )
            lora.add("maxLoras", shared["maxLoras"]).add("runtime", Block(
                ("enabled", True), ("registry", facts.adapter_registry),
                ("syncIntervalSeconds", shared["syncIntervalSeconds"]),
            ))  # fmt: skip
        vllm.add("lora", lora)
        vllm.comment(
            "the template the adapter was trained with, saved beside it by LLaMA-Factory (the base model may have none)"
        )
        vllm.add("chatTemplate", facts.lora_module + "/chat_template.jinja")
    if facts.serve_media:
        budget = ", its images scaled to the training's pixel budget" if facts.serve_pixels else ""
        vllm.comment(f"what one request may carry besides text{budget}")
        multimodal = Block(("limitPerPrompt", facts.serve_media))
        if facts.serve_pixels:
            multimodal.add("processorKwargs", facts.serve_pixels)
        vllm.add("multimodal", multimodal)
    secret = s.get("apiKeySecret")
    if secret is not None:
        vllm.add("apiKey", secret_ref(secret))
    vllm.add("replicas", s["replicas"])
    placement = spec["resources"]
    if placement["nodeSelector"] or placement["tolerations"]:
        vllm.add(
            "test",
            Block(("nodeSelector", placement["nodeSelector"]), ("tolerations", placement["tolerations"])),
        )
    vllm.add("extraArgs", s["extraArgs"])
    values = common(spec, facts).add("vllm", vllm)
    if s["allowedClients"]:
        policy = Block().comment(
            "serve.allowedClients: who besides the release's own helm test may call the API"
        )
        values.add(
            "networkPolicy", Block(("vllm", policy.add("from", [peer(c) for c in s["allowedClients"]])))
        )
    return values


def peer(client: dict[str, Any]) -> dict[str, Any]:
    """One allowed client as a NetworkPolicy peer: its namespace, its pods' labels, or both."""
    selected: dict[str, Any] = {}
    if "namespace" in client:
        selected["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": client["namespace"]}}
    if "podLabels" in client:
        selected["podSelector"] = {"matchLabels": client["podLabels"]}
    return selected
