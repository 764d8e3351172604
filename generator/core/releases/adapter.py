"""The adapter release of `serve.source: shared`: this experiment's adapter loaded at run time into another
experiment's vLLM, which serves the same base model."""

from __future__ import annotations

from typing import Any

from ..facts import Facts
from .common import common, secret_ref, workload
from .yamltext import Block


def values(spec: dict[str, Any], facts: Facts) -> Block:
    host = facts.host
    assert host is not None and host.spec is not None, "an adapter release has a valid host (rules)"
    host_serve = host.spec.data["serve"]
    adapter = Block(("enabled", True)).extend(
        workload(spec, spec["images"]["vllm"], 0, "250m", "256Mi", "64Mi")
    )
    adapter.add("name", facts.served_name).add("path", facts.lora_module).add(
        "maxLoraRank", facts.max_lora_rank
    )
    target = Block(
        ("name", host.name),
        ("url", host.url),
        ("registry", host.registry),
        ("syncIntervalSeconds", host_serve["sharedAdapters"]["syncIntervalSeconds"]),
    )
    secret = host_serve.get("apiKeySecret")
    if secret is not None:
        target.add("apiKey", secret_ref(secret))
    adapter.add("host", target)
    values = common(spec, facts)
    values.comment(
        f"loaded at run time into {host.name}'s vLLM ({host.release}), which serves the same base model"
    )
    return values.add("adapter", adapter)
