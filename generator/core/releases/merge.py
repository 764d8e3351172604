"""The merge release: the adapter merged into the base model, verified, then published
(llamafactory-cli export /config/merge.yaml)."""

from __future__ import annotations

from typing import Any

from ..facts import Facts
from .common import common, workload
from .yamltext import Bare, Block


def values(spec: dict[str, Any], facts: Facts) -> Block:
    m = spec["merge"]
    r = m["resources"]
    merge = Block(("enabled", True)).extend(workload(
        spec, spec["images"]["llamafactory"], r.get("gpus", 0), r.get("cpu", "8"), r.get("memory", "64Gi"),
        r.get("shmSize"),
    ))  # fmt: skip
    if spec["queue"]:
        merge.add("queue", spec["queue"])
    merge.comment("the merged model is published here only after it has been verified")
    merge.add("exportDir", facts.merged_dir)
    merge.add("verify", Block(("baseModelDir", facts.base_model), ("dtype", m["dtype"])))
    merge.comment("the complete LLaMA-Factory export config (llamafactory-cli export /config/merge.yaml)")
    config = Block(
        ("model_name_or_path", facts.base_model),
        ("adapter_name_or_path", facts.output_dir),
        ("template", facts.template),
        # LoRA or OFT: LLaMA-Factory's export takes adapters only as lora, and PEFT loads the type
        # adapter_config.json names
        ("finetuning_type", Bare("lora")),
    )
    if spec["stage"]["type"] == "rm":
        config.comment("a reward model: the export copies its value head beside the merged weights")
        config.add("stage", Bare("rm"))
    config.add("trust_remote_code", spec["model"]["trustRemoteCode"]).add("infer_dtype", m["dtype"])
    config.add("export_dir", facts.merged_dir).add("export_size", m["shardSizeGB"])
    config.add("export_device", m["device"]).add("export_legacy_format", False)
    merge.add("config", config)
    return common(spec, facts).add("merge", merge)
