"""Cross-field checks: what the schema cannot say, each problem with the fix.

Every check takes the loaded spec and its derived facts and yields Problems; `validate` runs them all.
They read no files and import nothing heavy; checks against the storage or LLaMA-Factory itself live in
`deep` and `preflight`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from typing import Any

from . import lfinfo
from .facts import (
    VLLM_LORA_RANKS,
    Facts,
    derive,
    infer_template,
    is_adapter_method,
    resolve_template,
    smallest_lora_rank,
)
from .problems import Problem, json_path
from .spec import Spec
from .storage import STORAGE_ROOT, on_storage
from .trainlog import LEARNING_RATE_ADVICE
from .vram import gib_to_gb

HELM_RELEASE_MAX = 53
Check = Callable[[Spec, Facts], Iterator[Problem]]
CHECKS: list[Check] = []


def check(fn: Check) -> Check:
    CHECKS.append(fn)
    return fn


def validate(spec: Spec) -> list[Problem]:
    """Every cross-field problem of a schema-valid spec (errors and warnings)."""
    facts = derive(spec)
    return [problem for fn in CHECKS for problem in fn(spec, facts)]


@check
def release_names(spec: Spec, facts: Facts) -> Iterator[Problem]:
    longest = max(facts.releases.values(), key=len)
    if len(longest) > HELM_RELEASE_MAX:
        limit = HELM_RELEASE_MAX - (len(longest) - len(spec.name))
        yield Problem(
            "$.name",
            f"release name {longest} would be {len(longest)} characters; Helm allows {HELM_RELEASE_MAX}",
            f"shorten the name to at most {limit} characters",
        )


@check
def method_and_quantization(spec: Spec, facts: Facts) -> Iterator[Problem]:
    method = spec.data["method"]
    kind, quant = method["type"], method.get("quantization")
    if kind == "qlora" and not quant:
        yield Problem(
            "$.method.quantization", "qlora needs a quantised base model", "add quantization: {bits: 4}"
        )
    if kind != "qlora" and quant:
        fix = (
            "use method.type: qlora for LoRA on a quantised base"
            if kind == "lora"
            else "remove method.quantization"
        )
        yield Problem("$.method.quantization", f"quantization only works with qlora, not {kind}", fix)
    if quant:
        bits, library = quant["bits"], quant["method"]
        allowed = {"bitsandbytes": (4, 8), "eetq": (8,), "hqq": (2, 3, 4, 5, 6, 8)}[library]
        if bits not in allowed:
            yield Problem(
                "$.method.quantization.bits",
                f"{library} quantises to {' or '.join(map(str, allowed))} bits, not {bits}",
                f"use bits: {allowed[-1] if bits > allowed[-1] else allowed[0]} or another method",
            )
    if kind in ("full", "freeze") and "lora" in spec.raw.get("method", {}):
        yield Problem(
            "$.method.lora", f"LoRA settings are ignored for {kind} fine-tuning", severity="warning"
        )


@check
def serving(spec: Spec, facts: Facts) -> Iterator[Problem]:
    d = spec.data
    serve, method = d["serve"], d["method"]["type"]
    if not serve["enabled"] or serve["source"] == "shared":  # no vLLM of its own: shared_serving checks it
        return
    if serve["source"] == "adapter" and not is_adapter_method(method):
        yield Problem(
            "$.serve.source",
            f"{method} fine-tuning produces a full model, not an adapter",
            "use source: merged",
        )
    if serve["source"] == "merged" and is_adapter_method(method) and not d["merge"]["enabled"]:
        yield Problem(
            "$.merge.enabled",
            "serving the merged model needs the merge release",
            "enable merge, or serve base + adapter with serve.source: adapter",
        )
    if serve["source"] == "adapter" and is_adapter_method(method):
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
    if "sharedAdapters" in serve and serve["enabled"] and serve["source"] != "adapter":
        yield Problem(
            "$.serve.sharedAdapters",
            "other experiments' adapters are loaded onto the base model, which only source: adapter serves",
            "use serve.source: adapter (the base model with this experiment's own adapter)",
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
    if not is_adapter_method(d["method"]["type"]):
        yield Problem(
            "$.serve.source",
            f"{d['method']['type']} fine-tuning has no adapter to share",
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
            d["model"]["path"],
            h["model"]["path"],
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
    if not serve["enabled"] or gpus is None:
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
def template(spec: Spec, facts: Facts) -> Iterator[Problem]:
    model = spec.data["model"]
    known = lfinfo.info().templates
    given = model.get("template")
    expected = None
    if given is None:
        if facts.template is None:
            yield Problem(
                "$.model.template",
                f"cannot infer the chat template of {model.get('hub', {}).get('id') or model['path']}",
                "set model.template to the template of the model's family (see LLaMA-Factory's template list)",
            )
        return
    if given not in known:
        close = difflib.get_close_matches(given, sorted(known), n=3)
        yield Problem(
            "$.model.template",
            f"unknown template {given!r} for LLaMA-Factory {lfinfo.info().version}",
            f"did you mean {', '.join(close)}?" if close else "see LLaMA-Factory's template list",
        )
        return
    expected = infer_template(model["path"], model.get("hub", {}).get("id"))
    if expected and expected != given:
        yield Problem(
            "$.model.template",
            f"template {given!r} does not match the model family, which uses {expected!r}",
            f"set template: {expected} (the same template must be used for training and serving)",
        )


@check
def evaluation(spec: Spec, facts: Facts) -> Iterator[Problem]:
    evaluate = spec.data.get("evaluate")
    if evaluate is None:
        return
    if evaluate["dataset"] in spec.data["data"]["datasets"]:
        yield Problem(
            "$.evaluate.dataset",
            f"{evaluate['dataset']} is also a training dataset: its scores overstate what the tuned model learned",
            "register a held-out set the training never sees",
            "warning",
        )
    if not spec.data["serve"]["enabled"]:
        yield Problem(
            "$.evaluate",
            "nothing is served: the gate only scores the models (lfk status and lfk report show the scores)",
            "enable serve to serve the tuned model once it passes",
            "warning",
        )


@check
def learning_rate(spec: Spec, facts: Facts) -> Iterator[Problem]:
    lr = spec.data["training"]["learningRate"]
    method = spec.data["method"]["type"]
    warn_above, fail_at = (5e-4, 1e-2) if is_adapter_method(method) else (1e-4, 1e-3)
    advice = f"{LEARNING_RATE_ADVICE} (too high a rate gives Loss = NaN)"
    if lr >= fail_at:
        yield Problem("$.training.learningRate", f"learning rate {lr:g} is far too high for {method}", advice)
    elif lr > warn_above:
        yield Problem(
            "$.training.learningRate", f"learning rate {lr:g} is high for {method}", advice, "warning"
        )


@check
def vram(spec: Spec, facts: Facts) -> Iterator[Problem]:
    if spec.data["resources"]["gpus"] == 0:
        yield Problem("$.resources.gpus", "training without a GPU is very slow", severity="warning")
        if spec.data["training"]["bf16"]:
            yield Problem("$.training.bf16", "bf16 needs a GPU", "set bf16: false or request a GPU")
        return
    est, memory = facts.vram, facts.gpu_memory_gib
    if est is None:
        yield Problem(
            "$.model.parametersB",
            "cannot estimate VRAM: the model size is unknown",
            "set model.parametersB (billions of parameters)",
            "warning",
        )
        return
    if memory is None:
        yield Problem(
            "$.resources.gpu",
            f"training needs about {est.total_gb:.0f} GB per GPU; the GPU's memory is unknown",
            "set resources.gpu.product (e.g. NVIDIA-A100-SXM4-80GB) or resources.gpu.memoryGiB",
            "warning",
        )
        return
    have = gib_to_gb(memory)
    need = est.total_gb
    summary = (
        f"estimated {need:.1f} GB per GPU (weights {est.weights_gb:.1f}, trained parameters and optimizer "
        f"{est.trainable_gb:.1f}, activations {est.activations_gb:.1f}, logits {est.logits_gb:.1f}, CUDA and "
        f"allocator {est.overhead_gb + est.reserve_gb:.1f}; {est.basis}) but the GPU has {memory:g} GiB ({have:.1f} GB)"
    )
    if need > have:
        yield Problem("$.resources.gpu", summary, vram_advice(spec))
    elif need > 0.9 * have:
        yield Problem(
            "$.resources.gpu",
            summary.replace(" but ", " and ") + ": little headroom",
            vram_advice(spec),
            "warning",
        )


def vram_advice(spec: Spec) -> str:
    d = spec.data
    tips = []
    if d["method"]["type"] in ("lora", "full", "freeze"):
        tips.append("use method.type: qlora with quantization.bits: 4")
    if d["training"]["batchSize"] > 1:
        tips.append("lower training.batchSize (raise gradientAccumulation to keep the effective batch)")
    if not d["training"]["gradientCheckpointing"]:
        tips.append("enable training.gradientCheckpointing")
    if d["data"]["cutoffLen"] > 1024:
        tips.append("lower data.cutoffLen")
    tips.append("use GPUs with more memory")
    if d["distributed"]["deepspeed"] != "zero3" and d["method"]["type"] != "qlora":
        tips.append("or shard the weights over more GPUs with distributed.deepspeed: zero3")
    return "; ".join(tips)


def _storage_paths(spec: Spec) -> Iterator[tuple[str, str]]:
    d = spec.data
    yield "$.model.path", d["model"]["path"]
    yield "$.data.dir", d["data"]["dir"]
    if "exportDir" in d["merge"]:
        yield "$.merge.exportDir", d["merge"]["exportDir"]
    for key, value in d["llamafactoryArgs"].items():
        if isinstance(value, str) and re.search(r"(_dir|_path|_file)$", key):
            yield json_path(["llamafactoryArgs", key]), value


@check
def paths_on_storage(spec: Spec, facts: Facts) -> Iterator[Problem]:
    for path, value in _storage_paths(spec):
        if not on_storage(value):
            yield Problem(
                path,
                f"{value!r} is not under the storage mount {STORAGE_ROOT}",
                f"put it on the shared storage, e.g. {STORAGE_ROOT}/{value.strip('/').split('/')[-1] or 'name'}",
            )
    merged = facts.merged_dir
    if merged and merged.rstrip("/") in (facts.base_model.rstrip("/"), facts.output_dir):
        yield Problem(
            "$.merge.exportDir",
            "the merged model would overwrite the base model or the adapter",
            "choose another directory",
        )
    if spec.data["storage"].get("nfs", {}).get("readOnly"):
        yield Problem(
            "$.storage.nfs.readOnly",
            "training writes to the storage; it cannot be read-only",
            "remove readOnly",
        )


# hub tokens (hf_), OpenAI-style keys (sk-), GitHub tokens, and anything given as a bearer header
_TOKEN_PATTERNS = re.compile(
    r"^(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|Bearer\s+\S+)$"
)
_CREDENTIAL_URI = re.compile(r"^[a-z]+://[^/@\s]+:[^/@\s]+@")
_TOKEN_ARGS = {
    "hf_hub_token": "model.hub.tokenSecret",
    "ms_hub_token": "model.hub.tokenSecret",
    "om_hub_token": "model.hub.tokenSecret",
}


def _strings(value: Any, parts: list[str | int]) -> Iterator[tuple[list[str | int], str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, [*parts, str(k)])
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, [*parts, i])
    elif isinstance(value, str):
        yield parts, value


@check
def no_literal_secrets(spec: Spec, facts: Facts) -> Iterator[Problem]:
    for parts, value in _strings(spec.raw, []):
        if _TOKEN_PATTERNS.match(value.strip()):
            yield Problem(
                json_path(parts),
                "looks like a literal secret token",
                "store it in a Secret and reference it by name and key",
            )
        elif _CREDENTIAL_URI.match(value):
            yield Problem(
                json_path(parts),
                "the URI carries a user name and password",
                "use tracking.mlflow.credentialsSecret",
            )
    for key, field in _TOKEN_ARGS.items():
        if key in spec.data["llamafactoryArgs"]:
            yield Problem(
                json_path(["llamafactoryArgs", key]),
                "tokens are never written into the config",
                f"use {field} (a Secret reference)",
            )


# the rules about what LLaMA-Factory itself accepts register themselves after these
from . import rules_llamafactory  # noqa: E402, F401
