"""What `lfk describe` reports about a spec, as plain data: its releases and their GPUs, the VRAM estimate
per training GPU part by part against the GPU's memory, the stage and the models it holds, and the run's
paths. The CLI prints it as text or
JSON."""

from __future__ import annotations

from typing import Any

from .chain import lineage
from .components import COMPONENTS, is_lora_method
from .facts import Facts, uses_reference_model
from .spec import Spec
from .vram import gib_to_gb


def gpus_of(spec: Spec) -> dict[str, int]:
    """GPUs of one pod of each component (training: per node): each component's own rule."""
    return {name: component.gpus(spec.data) for name, component in COMPONENTS.items()}


def stage_summary(d: dict[str, Any]) -> str:
    """The stage in words: what it optimises and which models it holds beside the trained one."""
    stage, method = d["stage"]["type"], d["method"]["type"]
    beside = "the base with the adapter off" if is_lora_method(method) else "a second frozen copy"
    if stage == "sft":
        return "sft: supervised fine-tuning on instruction data"
    if stage == "pt":
        return "pt: pre-training on raw text"
    if stage == "rm":
        return "rm: a reward model scoring answers (a value head on the model; not served as a chat model)"
    if stage == "dpo":
        loss = d["stage"]["dpo"]["loss"]
        reference = (
            f"reference model: {beside}" if uses_reference_model(stage, loss) else "no reference model"
        )
        return f"dpo: preference pairs, {loss} loss, {reference}"
    if stage == "kto":
        return f"kto: answers tagged desirable or not, reference model: {beside}"
    reward = d["stage"]["ppo"]["rewardModel"]
    how = "an adapter on the policy's base" if reward["type"] == "lora" else "a second model"
    return f"ppo: answers generated and scored by the reward model {reward['path']} ({how}), reference model: {beside}"


def description(spec: Spec, facts: Facts) -> dict[str, Any]:
    d = spec.data
    gpus = gpus_of(spec)
    pods = {"train": d["distributed"]["nodes"], "vllm": d["serve"]["replicas"]}
    out: dict[str, Any] = {
        "experiment": facts.name,
        "namespace": facts.namespace,
        "run_id": facts.run_id,
        "releases": [
            {"component": c, "release": r, "gpus_per_pod": gpus[c], "pods": pods.get(c, 1)}
            for c, r in facts.releases.items()
        ],
        "gpu": {
            "product": d["resources"]["gpu"].get("product"),
            "memory_gib": facts.gpu_memory_gib,
            "memory_gb": round(gib_to_gb(facts.gpu_memory_gib), 2) if facts.gpu_memory_gib else None,
        },
        "vram_per_training_gpu": None,
        "template": facts.template,
        "template_inferred": facts.template_inferred,
        "paths": {
            "base_model": facts.base_model,
            "output": facts.output_dir,
            "merged_model": facts.merged_dir,
            "served": facts.serve_model,
            "adapter_served": facts.lora_module,
        },
        "stage": stage_summary(d),
        "lineage": lineage(facts.upstreams, facts.name, facts.run_id),
        "served_name": facts.served_name if facts.serving_release else None,
        "served_by": facts.serving_host.release if facts.serving_host else None,
        # a vision-language model: what one request may carry, and the pixel budget of its images
        "served_media": facts.serve_media if facts.serving_release else {},
        "served_pixels": facts.serve_pixels if facts.serving_release else {},
    }
    if facts.vram:
        out["vram_per_training_gpu"] = {**facts.vram.parts(), "basis": facts.vram.basis}
    return out


def text(data: dict[str, Any]) -> list[str]:
    lines = [f"experiment {data['experiment']} (namespace {data['namespace']}, run {data['run_id']})"]
    for r in data["releases"]:
        pods = f" x {r['pods']} pods" if r["pods"] > 1 else ""
        lines.append(f"  release {r['release']:<32} GPUs {r['gpus_per_pod']}{pods}")
    vram, gpu = data["vram_per_training_gpu"], data["gpu"]
    if vram:
        memory = (
            f"{gpu['memory_gib']:g} GiB ({gpu['memory_gb']:.1f} GB)"
            if gpu["memory_gib"]
            else "unknown memory"
        )
        lines.append(
            f"  VRAM estimate {vram['total_gb']:.1f} GB per training GPU, against {memory}: {vram['basis']}"
        )
        for key, label in (
            ("weights_gb", "base model weights"),
            ("trainable_gb", "trained parameters, gradients, optimizer"),
            ("activations_gb", "activations"),
            ("logits_gb", "logits and the loss"),
            ("reference_gb", "reference model (a frozen copy)"),
            ("reward_gb", "reward model (PPO)"),
            ("generation_gb", "KV cache of the generated answers (PPO)"),
            ("overhead_gb", "CUDA context and workspaces"),
            ("reserve_gb", "allocator reserve"),
        ):
            if key in vram:  # a stage's parts only where it has them
                lines.append(f"    {label:<42} {vram[key]:6.1f} GB")
    inferred = " (inferred)" if data["template_inferred"] else ""
    paths = data["paths"]
    lines.append(f"  stage         {data['stage']}")
    for chain in data["lineage"]:
        lines.append(f"  starts from   {chain}")
    lines.append(f"  template      {data['template']}{inferred}")
    lines.append(f"  base model    {paths['base_model']}")
    lines.append(f"  output        {paths['output']}")
    if paths["merged_model"]:
        lines.append(f"  merged model  {paths['merged_model']}")
    if data["served_name"]:
        adapter = f" + adapter {paths['adapter_served']}" if paths["adapter_served"] else ""
        by = f" in {data['served_by']} (shared)" if data["served_by"] else ""
        lines.append(f"  serving       {paths['served']}{adapter} as {data['served_name']!r}{by}")
    if data["served_media"]:
        allowed = ", ".join(f"{count} {medium}" for medium, count in data["served_media"].items())
        pixels = data["served_pixels"]
        budget = f"; images at {pixels['min_pixels']}..{pixels['max_pixels']} pixels" if pixels else ""
        lines.append(f"  media         a request carries at most: {allowed}{budget}")
    return lines
