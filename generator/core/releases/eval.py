"""The eval release: the evaluation gate. LLaMA-Factory predicts (or scores) the same held-out data with the
model before this training and with the tuned one; vLLM serves the tuned model only when it passes."""

from __future__ import annotations

from typing import Any

from ..contract import GATE_LIKELIHOOD_METRICS
from ..facts import Facts, gate_metric
from .common import common, media_args, workload
from .yamltext import Bare, Block


def values(spec: dict[str, Any], facts: Facts) -> Block:
    e = spec["evaluate"]
    r = e["resources"]
    gpus = r.get("gpus", 1)
    metric = gate_metric(spec)
    gate = Block(("enabled", True)).extend(workload(
        spec, spec["images"]["llamafactory"], gpus, r.get("cpu", "4"), r.get("memory", "32Gi"), r.get("shmSize"),
    ))  # fmt: skip
    if spec["queue"]:
        gate.add("queue", spec["queue"])
    if spec["images"]["pipPackages"]:
        gate.add("pipPackages", spec["images"]["pipPackages"])
    lower = metric == "perplexity"
    rule = f"{metric} at most {e['maxDrop']} {'above' if lower else 'below'} the base"
    if "floor" in e:
        rule += f", and at {'most' if lower else 'least'} {e['floor']}"
    gate.comment(f"vLLM serves the tuned model only when it passes: {rule}")
    gate.add("metric", metric).add("maxDrop", float(e["maxDrop"]))
    gate.add("floor", float(e["floor"]) if "floor" in e else None).add("scoresFile", facts.eval_scores)
    gate.comment(
        "LLaMA-Factory's prediction of each model on the same data (llamafactory-cli train /config/<model>.yaml)"
    )
    # the model before this training: the base, or the base with the adapter it trained further
    # a likelihood metric (eval_gate.py scores it with likelihood.py) generates nothing
    generates = metric not in GATE_LIKELIHOOD_METRICS
    base = prediction(spec, facts, facts.base_model, facts.start_adapter, "base", gpus, generates)
    gate.add("baseConfig", base)
    if facts.merged_dir:
        tuned = prediction(spec, facts, facts.merged_dir, None, "tuned", gpus, generates)
    elif spec["method"]["type"] in ("lora", "qlora"):
        tuned = prediction(spec, facts, facts.base_model, facts.output_dir, "tuned", gpus, generates)
    else:
        tuned = prediction(spec, facts, facts.output_dir, None, "tuned", gpus, generates)
    gate.add("tunedConfig", tuned)
    return common(spec, facts).add("eval", gate)


def prediction(
    spec: dict[str, Any], facts: Facts, model: str, adapter: str | None, out: str, gpus: int, generates: bool
) -> Block:
    """One model's LLaMA-Factory config for the gate's data; the prediction settings only when the gate's
    metric is scored on generated answers."""
    e = spec["evaluate"]
    config = Block(("model_name_or_path", model))
    if adapter:
        config.add("adapter_name_or_path", adapter)
    config.add("template", facts.template).add("trust_remote_code", spec["model"]["trustRemoteCode"])
    if generates:
        config.add("stage", Bare("sft")).add("do_predict", True).add("predict_with_generate", True)
    # an adapter (LoRA or OFT: PEFT reads which from its adapter_config.json) is loaded as LLaMA-Factory loads LoRA
    method = spec["method"]["type"]
    config.add("finetuning_type", "lora" if adapter or method in ("lora", "qlora", "oft") else method)
    data = spec["data"]
    config.add("dataset_dir", data["dir"]).add("eval_dataset", e["dataset"]).add(
        "cutoff_len", data["cutoffLen"]
    )
    config.add("max_samples", e["maxSamples"]).add("preprocessing_num_workers", data["preprocessingWorkers"])
    config.extend(media_args(spec))
    if generates:
        config.add("max_new_tokens", e["maxNewTokens"]).add("do_sample", False)
    config.add("per_device_eval_batch_size", e["batchSize"]).add(
        "bf16", spec["training"]["bf16"] and gpus > 0
    )
    config.add("output_dir", f"{facts.output_dir}/eval/{out}").add("overwrite_output_dir", True)
    return config.add("report_to", Bare("none"))
