"""Rules on serving: what vLLM can load (the trained rank, the weights on its GPUs), and an adapter shared
with another experiment's vLLM (the host's spec, read once with the experiment, must agree with it)."""

from __future__ import annotations

from collections.abc import Iterator

from ..components import is_adapter_method, is_chat_model, is_lora_method
from ..contract import VLLM_LORA_RANKS
from ..facts import Facts, resolve_template, smallest_lora_rank
from ..problems import Problem
from ..spec import Spec
from ..storage import normalise
from ..vram import gib_to_gb
from .registry import check


@check
def serving(spec: Spec, facts: Facts) -> Iterator[Problem]:
    d = spec.data
    serve, method = d["serve"], d["method"]["type"]
    if not serve["enabled"] or serve["source"] == "shared":  # no vLLM of its own: shared_serving checks it
        return
    if not is_chat_model(d):  # nothing is served (describe says why)
        return
    if serve["source"] == "adapter" and not is_adapter_method(method):
        yield Problem(
            "$.serve.source",
            f"{method} fine-tuning produces a full model, not an adapter",
            "use source: merged",
        )
    elif serve["source"] == "adapter" and not is_lora_method(method):
        yield Problem(
            "$.serve.source", f"vLLM serves LoRA adapters only, not {method} ones", "use source: merged"
        )
    if serve["source"] == "merged" and is_adapter_method(method) and not d["merge"]["enabled"]:
        yield Problem(
            "$.merge.enabled",
            "serving the merged model needs the merge release",
            "enable merge, or serve base + adapter with serve.source: adapter",
        )
    if serve["source"] == "adapter" and is_lora_method(method):
        rank = d["method"]["lora"]["rank"]
        if facts.max_lora_rank is None:
            yield Problem(
                "$.method.lora.rank",
                f"vLLM serves LoRA ranks up to {VLLM_LORA_RANKS[-1]}, not {rank}",
                "lower the rank or serve the merged model",
            )
        elif facts.max_lora_rank < rank:
            yield Problem(
                "$.serve.maxLoraRank",
                f"--max-lora-rank {facts.max_lora_rank} is below the trained rank {rank}; vLLM would refuse the adapter",
                f"use maxLoraRank: {smallest_lora_rank(rank)} or leave it out",
            )
    info, memory = facts.model_info, facts.gpu_memory_gib
    if info and memory and serve["resources"].get("gpus") != 0:
        tp = serve["tensorParallelSize"]
        weights = 2 * info.parameters_b / tp
        usable = gib_to_gb(memory) * serve["gpuMemoryUtilization"]
        if weights > usable:
            need = next(
                (n for n in (1, 2, 4, 8, 16, 32, 64) if 2 * info.parameters_b / n < usable * 0.8), None
            )
            yield Problem(
                "$.serve.tensorParallelSize",
                f"16-bit weights need {weights:.0f} GB per GPU with tensor parallel {tp}; "
                f"{memory:g} GiB GPUs give vLLM {usable:.0f} GB",
                f"use tensorParallelSize: {need}" if need else "serve on larger GPUs",
            )


# LLaMA-Factory arguments whose adapters vLLM cannot load at run time: extra trained modules
# (modules_to_save), a resized vocabulary, DoRA
UNSHAREABLE_ARGS = {
    "additional_target": "trains whole modules beside the LoRA weights (modules_to_save)",
    "resize_vocab": "resizes the vocabulary",
    "new_special_tokens": "adds tokens, which resizes the vocabulary",
    "use_dora": "trains DoRA, which vLLM does not serve",
}
MERGE_INSTEAD = "serve it with source: merged (its own vLLM) instead"


@check
def shared_serving(spec: Spec, facts: Facts) -> Iterator[Problem]:
    """serve.source: shared loads the adapter into the host experiment's vLLM: it must be an adapter vLLM can
    load beside others, and the host must serve the same base model, with room for its rank."""
    d = spec.data
    serve = d["serve"]
    if not is_chat_model(d):
        return
    if "sharedAdapters" in serve and serve["enabled"] and serve["source"] != "adapter":
        yield Problem(
            "$.serve.sharedAdapters",
            "other experiments' adapters are loaded onto the base model, which only source: adapter serves",
            "use serve.source: adapter (the base model with this experiment's own adapter)",
        )
    if "sharedAdapters" in serve and serve["enabled"] and "apiKeySecret" not in serve:
        # runtime LoRA updating opens /v1/load_lora_adapter to whoever reaches the port, unless a key guards it
        yield Problem(
            "$.serve.apiKeySecret",
            "a vLLM that loads adapters at run time (sharedAdapters) needs an API key: without one, anyone who "
            "reaches its port can load and unload adapters",
            "add serve.apiKeySecret: {name: <Secret in the namespace>, key: <its key>}",
        )
    if "host" in serve and serve["source"] != "shared":
        yield Problem(
            "$.serve.host",
            f"a host is used only with source: shared; this experiment serves {serve['source']}",
            "remove serve.host, or use source: shared",
            "warning",
        )
    if serve["source"] != "shared" or not serve["enabled"]:
        return
    if not is_lora_method(d["method"]["type"]):
        yield Problem(
            "$.serve.source",
            f"{d['method']['type']} fine-tuning has no LoRA adapter to share (vLLM loads LoRA ones only)",
            "use source: merged",
        )
        return
    for arg, why in UNSHAREABLE_ARGS.items():
        if d["llamafactoryArgs"].get(arg):
            yield Problem(
                f"$.llamafactoryArgs.{arg}",
                f"a shared vLLM cannot load this adapter: it {why}",
                MERGE_INSTEAD,
            )
    host = facts.host
    if host is None:
        yield Problem(
            "$.serve.host",
            "source: shared needs the experiment whose vLLM loads the adapter",
            "set serve.host",
        )
        return
    if host.name == spec.name:
        yield Problem("$.serve.host", "an experiment cannot host its own adapter", "use source: adapter")
        return
    if host.spec is None:
        yield Problem(
            "$.serve.host",
            host.problem or f"no experiment {host.name}",
            "name an experiment folder beside this one",
        )
        return
    h = host.spec.data
    if "sharedAdapters" not in h["serve"] or h["serve"]["source"] != "adapter" or not h["serve"]["enabled"]:
        yield Problem(
            "$.serve.host",
            f"{host.name}'s vLLM does not load other experiments' adapters",
            f"give {host.source} serve.source: adapter and serve.sharedAdapters",
        )
        return
    for path, mine, theirs, why in (
        ("$.namespace", d["namespace"], h["namespace"], "its vLLM's service is reached within the namespace"),
        ("$.storage", d["storage"], h["storage"], "its vLLM reads the adapter from its own storage"),
        (
            "$.model.path",
            normalise(d["model"]["path"]),
            normalise(h["model"]["path"]),
            "an adapter only fits the base model it was trained on",
        ),
    ):
        if mine != theirs:
            yield Problem(
                path, f"must be the same as {host.name}'s ({why})", f"use {theirs!r}, or {MERGE_INSTEAD}"
            )
    template, host_template = facts.template, resolve_template(host.spec)[0]
    if template != host_template:
        yield Problem(
            "$.model.template",
            f"{host.name}'s vLLM formats every chat with template {host_template}, this adapter learnt {template}",
            f"train with template: {host_template}, or {MERGE_INSTEAD}",
        )
    rank = d["method"]["lora"]["rank"]
    if facts.max_lora_rank is not None and rank > facts.max_lora_rank:
        yield Problem(
            "$.method.lora.rank",
            f"{host.name}'s vLLM loads ranks up to {facts.max_lora_rank} (--max-lora-rank), not {rank}",
            f"train with rank <= {facts.max_lora_rank}, raise {host.name}'s serve.maxLoraRank, or {MERGE_INSTEAD}",
        )
    host_served = h["serve"].get("servedModelName") or host.name
    if facts.served_name in (host_served, f"{host_served}-base"):
        yield Problem(
            "$.serve.servedModelName",
            f"{facts.served_name} is a name {host.name}'s vLLM already serves",
            "give this adapter another servedModelName",
        )


@check
def serving_gpus(spec: Spec, facts: Facts) -> Iterator[Problem]:
    """vLLM's GPUs are its tensor parallel size; resources.gpus may only say 0 (vLLM on CPU)."""
    serve = spec.data["serve"]
    gpus, tp = serve["resources"].get("gpus"), serve["tensorParallelSize"]
    if not serve["enabled"] or gpus is None or not is_chat_model(spec.data):
        return
    if gpus == 0 and tp > 1:
        yield Problem(
            "$.serve.tensorParallelSize",
            "vLLM on CPU (resources.gpus: 0) runs one process",
            "use tensorParallelSize: 1",
        )
    elif gpus not in (0, tp):
        yield Problem(
            "$.serve.resources.gpus",
            f"vLLM gets {tp} GPU(s), its tensor parallel size, not {gpus}",
            "leave resources.gpus out (or 0 to serve on CPU) and set tensorParallelSize",
        )


@check
def media_per_prompt(spec: Spec, facts: Facts) -> Iterator[Problem]:
    """serve.mediaPerPrompt counts only for media the template takes; the others are not passed to vLLM."""
    for medium in spec.data["serve"].get("mediaPerPrompt", {}):
        if medium.removesuffix("s") not in facts.serve_media:
            takes = ", ".join(f"{m}s" for m in facts.serve_media) or "no media"
            yield Problem(
                f"$.serve.mediaPerPrompt.{medium}",
                f"template {facts.template} takes {takes}, not {medium}: ignored",
                f"leave {medium} out, or use a template of the model's family that takes them",
                "warning",
            )
