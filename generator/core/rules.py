"""Cross-field checks: what the schema cannot say, each problem with the fix.

Every check takes the loaded spec and its derived facts and yields Problems; `validate` runs them all.
They read no files and import nothing heavy; checks against the storage or LLaMA-Factory itself live in
`deep` and `preflight`.
"""

from __future__ import annotations

import difflib
import math
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
    neighbour_paths,
    resolve_template,
    smallest_lora_rank,
)
from .problems import Problem, json_path
from .spec import Spec
from .storage import MERGED_DIR, MODELS_DIR, STORAGE_ROOT, climbs, normalise, on_storage, within
from .trainlog import LEARNING_RATE_ADVICE
from .vram import gib_to_gb

HELM_RELEASE_MAX = 53
Check = Callable[[Spec, Facts], Iterator[Problem]]
CHECKS: list[Check] = []


def check(fn: Check) -> Check:
    CHECKS.append(fn)
    return fn


def validate(spec: Spec) -> list[Problem]:
    """Every cross-field problem of a schema-valid spec (errors and warnings). Values no schema keyword can
    refuse (control characters, NaN, YAML's dates) are refused first: nothing is derived from them."""
    malformed = list(malformed_values(spec.raw, []))
    if malformed:
        return malformed
    facts = derive(spec)
    return [problem for fn in CHECKS for problem in fn(spec, facts)]


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators (YAML 1.1 breaks lines at those)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# a pass-through value is written with the YAML dumper's escapes: it may hold lines and tabs (a system prompt)
_CONTROL_IN_ARGUMENT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def malformed_values(value: Any, parts: list[str | int]) -> Iterator[Problem]:
    """What the schema's patterns and bounds let through, anywhere in the spec: a control character (Python's
    `$` matches before a final newline, so `name: "demo\\n"` passes `^[a-z]+$`), a key that is not a string, a
    number that is not finite (`.nan` passes every bound: comparisons with NaN are false), and values JSON
    has no type for (YAML reads 2024-01-01 as a date)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                yield Problem(json_path(parts), f"the key {key!r} is not a string", "quote it")
                continue
            if found := _CONTROL.search(key):  # located at the mapping: the key itself cannot be printed
                yield Problem(
                    json_path(parts),
                    f"the key {key!r} holds the control character U+{ord(found.group()):04X}",
                    "remove it",
                )
                continue
            yield from malformed_values(item, [*parts, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from malformed_values(item, [*parts, index])
    elif isinstance(value, str):
        control = _CONTROL_IN_ARGUMENT if parts[:1] == ["llamafactoryArgs"] else _CONTROL
        if found := control.search(value):
            yield Problem(
                json_path(parts), f"holds the control character U+{ord(found.group()):04X}", "remove it"
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            yield Problem(json_path(parts), f"{value} is not a finite number", "write a number")
    elif not isinstance(value, bool | int) and value is not None:
        yield Problem(
            json_path(parts),
            f"YAML reads {value!r} as a {type(value).__name__}, which a spec does not hold",
            "quote it to make it a string",
        )


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


# LLaMA-Factory arguments that name a file or folder without saying so in a suffix
PATH_ARGS = {
    "resume_from_checkpoint",
    "fsdp_config",
    "new_special_tokens_config",
    "export_quantization_dataset",
}
PATH_ARG_SUFFIX = re.compile(r"(_dir|_path|_file|_folder|_logdir)$")


def _storage_paths(spec: Spec) -> Iterator[tuple[str, str]]:
    d = spec.data
    yield "$.model.path", d["model"]["path"]
    yield "$.data.dir", d["data"]["dir"]
    if "exportDir" in d["merge"]:
        yield "$.merge.exportDir", d["merge"]["exportDir"]
    for key, value in d["llamafactoryArgs"].items():
        if isinstance(value, str) and (key in PATH_ARGS or PATH_ARG_SUFFIX.search(key)):
            yield json_path(["llamafactoryArgs", key]), value


def _leaf(value: str) -> str:
    """The last named segment of a path, for a hint."""
    segments = [s for s in value.split("/") if s not in ("", ".", "..")]
    return segments[-1] if segments else "name"


@check
def paths_on_storage(spec: Spec, facts: Facts) -> Iterator[Problem]:
    refused = set()
    for path, value in _storage_paths(spec):
        if climbs(value):
            refused.add(path)
            yield Problem(path, f"{value!r} has a `..` segment", "write the path without `..`")
        elif value.startswith("/") and normalise(value) == STORAGE_ROOT:
            refused.add(path)
            yield Problem(path, f"{value!r} is the storage mount itself", "name a folder inside it")
        elif not on_storage(value):
            refused.add(path)
            yield Problem(
                path,
                f"{value!r} is not under the storage mount {STORAGE_ROOT}",
                f"put it on the shared storage, e.g. {STORAGE_ROOT}/{_leaf(value)}",
            )
    nfs_path = spec.data["storage"].get("nfs", {}).get("path", "")
    if climbs(nfs_path):
        yield Problem("$.storage.nfs.path", f"{nfs_path!r} has a `..` segment", "write the path without `..`")
    if facts.merged_dir and "$.merge.exportDir" not in refused and "$.model.path" not in refused:
        yield from _export_dir(spec, facts)
    if spec.data["storage"].get("nfs", {}).get("readOnly"):
        yield Problem(
            "$.storage.nfs.readOnly",
            "training writes to the storage; it cannot be read-only",
            "remove readOnly",
        )


def _export_dir(spec: Spec, facts: Facts) -> Iterator[Problem]:
    """The merge Job replaces its target folder whole (merge.sh moves it aside and removes it): the target must
    be a folder of the merge's own, holding nothing else anyone reads."""
    given = spec.data["merge"].get("exportDir")
    if not given or facts.merged_dir is None:
        return  # the default, under the managed folder: one per experiment and run
    export = facts.merged_dir
    own = f"choose a folder of its own, e.g. {MODELS_DIR}/{spec.name}-merged"
    if export in (facts.base_model, facts.output_dir):
        yield Problem(
            "$.merge.exportDir", "the merged model would overwrite the base model or the adapter", own
        )
        return
    if not within(export, MODELS_DIR) or export == MODELS_DIR:
        yield Problem(
            "$.merge.exportDir",
            f"{given!r} is not a folder under {MODELS_DIR}/: publishing the merged model replaces the whole folder",
            own,
        )
        return
    if within(export, MERGED_DIR):
        yield Problem(
            "$.merge.exportDir",
            f"{given!r} is in {MERGED_DIR}, where every experiment's runs are published by default",
            f"leave exportDir out to publish there, or {own}",
        )
        return
    others = [
        ("the base model", facts.base_model),
        ("the adapter", facts.output_dir),
        ("the data", normalise(spec.data["data"]["dir"])),
    ]
    others += [(f"experiment {name}'s {field}", path) for name, field, path in neighbour_paths(spec)]
    for what, path in others:
        if within(export, path) or within(path, export):
            where = "is" if export == path else "contains" if within(path, export) else "is inside"
            yield Problem(
                "$.merge.exportDir",
                f"{given!r} {where} {what} ({path}): publishing the merged model replaces the whole folder",
                own,
            )
            return
    if spec.data["storage"].get("nfs", {}).get("readOnly"):
        yield Problem(
            "$.storage.nfs.readOnly",
            "training writes to the storage; it cannot be read-only",
            "remove readOnly",
        )


# ---------------------------------------------------------------------------------------- literal secrets
# Secrets reach the pods only as Secret references; a value written into the spec would land in the values
# files, the ConfigMaps and git. Every string of the spec is searched (a token pasted into a description
# counts too). Each pattern begins with a fixed prefix right after a non-word character and has single,
# non-overlapping quantifiers, so a search is linear in the length of the string.
_TOKEN_IN_TEXT = re.compile(
    r"(?<![A-Za-z0-9_-])(?:"
    r"(?P<hub>hf_[A-Za-z0-9]{20,})"
    r"|sk-[A-Za-z0-9_-]{20,}"  # OpenAI-style API keys
    r"|gh[pousr]_[A-Za-z0-9]{20,}"  # GitHub
    r"|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"  # a JWT
    r"|Bearer[ \t]+[A-Za-z0-9._~+/=-]{20,}"
    r")"
)
_PRIVATE_KEY = "PRIVATE KEY-----"
# LLaMA-Factory arguments (and any key named like them) that hold a credential, with the spec's way instead
_SECRET_ARGS = {
    "hf_hub_token": "model.hub.tokenSecret",
    "hub_token": "model.hub.tokenSecret",
    "ms_hub_token": "model.hub.tokenSecret",
    "om_hub_token": "model.hub.tokenSecret",
}
_SECRET_KEY_ENDINGS = ("token", "api_key", "apikey", "password", "passwd", "secret", "credentials")
# query parameters that carry a credential (?token=, &access_token=, password=, signed-URL signatures)
_SECRET_QUERY_KEYS = {
    "token", "access_token", "auth_token", "id_token", "refresh_token", "api_key", "apikey", "key",
    "password", "passwd", "pwd", "secret", "client_secret", "sig", "signature", "x-amz-signature",
    "x-amz-credential", "x-goog-signature",
}  # fmt: skip
# `vllm serve` flags that take a credential, with the spec's Secret reference for it
_SECRET_FLAGS = {"api-key": "serve.apiKeySecret", "hf-token": "model.hub.tokenSecret"}
_SECRET_REFS = (
    "model.hub.tokenSecret (hub tokens), serve.apiKeySecret (the serving API key), "
    "tracking.mlflow.credentialsSecret (MLflow)"
)


def _strings(value: Any, parts: list[str | int]) -> Iterator[tuple[list[str | int], str]]:
    """Every string of the tree (mapping keys too) with its path."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield [*parts, str(k)], str(k)
            yield from _strings(v, [*parts, str(k)])
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, [*parts, i])
    elif isinstance(value, str):
        yield parts, value


def _looks_random(token: str) -> bool:
    # real tokens mix letters and digits; words such as sk-learn-compatible-estimators do not
    return any(c.isdigit() for c in token) and any(c.isalpha() for c in token)


def secret_in_text(text: str) -> str | None:
    """What kind of literal secret the text contains, or None: a token, a private key, or a URI carrying
    credentials (user info, or a credential in its query)."""
    for match in _TOKEN_IN_TEXT.finditer(text):
        if _looks_random(match.group()):
            return "hub token" if match.group("hub") else "a token"
    if _PRIVATE_KEY in text and "-----BEGIN " in text:
        return "a private key"
    return _uri_credentials(text)


def _uri_credentials(text: str) -> str | None:
    """The first URI in the text that carries credentials, described; None when there is none. Words are
    split on whitespace and each is parsed by urllib (no regex over the whole text)."""
    from urllib.parse import parse_qsl, urlsplit

    if "://" not in text:
        return None
    for word in text.split():
        at = word.find("://")
        if at <= 0:
            continue
        start = at
        while start > 0 and (word[start - 1].isalnum() or word[start - 1] in "+.-"):
            start -= 1
        try:
            parts = urlsplit(word[start:].strip("'\"()<>[],;"))
            query = parse_qsl(parts.query, keep_blank_values=False)
            password, user = parts.password, parts.username
        except ValueError:
            continue
        if password is not None:
            return "a URI with a user name and password"
        if user and user != "git":  # ssh://git@host is a fixed account name, not a credential
            return "a URI with user info (a user name or token before @)"
        if any(key.lower() in _SECRET_QUERY_KEYS for key, _ in query):
            return "a URI with a credential in its query"
    return None


def _secret_key(key: str) -> bool:
    name = key.lower().replace("-", "_")
    return name in _SECRET_ARGS or name.endswith(_SECRET_KEY_ENDINGS)


def _flag_name(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("-").replace("_", "-").lower() if arg.startswith("--") else ""


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@check
def no_literal_secrets(spec: Spec, facts: Facts) -> Iterator[Problem]:
    reported: set[str] = set()  # one problem per place
    for key, value in _mapping(spec.raw.get("llamafactoryArgs")).items():
        if _secret_key(str(key)) and value not in (None, "", False):
            path = json_path(["llamafactoryArgs", str(key)])
            reported.add(path)
            field = _SECRET_ARGS.get(str(key).lower())
            yield Problem(
                path,
                f"{key} would write a credential into the training config (a ConfigMap, and git)",
                f"use {field} (a Secret reference)"
                if field
                else f"store it in a Secret; the spec references Secrets only through {_SECRET_REFS}",
            )
    args = _mapping(spec.raw.get("serve")).get("extraArgs")
    for i, arg in enumerate(args if isinstance(args, list) else []):
        flag = _flag_name(arg) if isinstance(arg, str) else ""
        if flag and (flag in _SECRET_FLAGS or flag.replace("-", "_").endswith(_SECRET_KEY_ENDINGS)):
            reported.add(json_path(["serve", "extraArgs", i]))
            if "=" not in arg:
                reported.add(json_path(["serve", "extraArgs", i + 1]))  # its value, the next argument
            field = _SECRET_FLAGS.get(flag)
            yield Problem(
                json_path(["serve", "extraArgs", i]),
                f"--{flag} would put a credential on the vLLM command line (in the pod spec, and git)",
                f"use {field} (a Secret reference)" if field else f"store it in a Secret: {_SECRET_REFS}",
            )
    for parts, value in _strings(spec.raw, []):
        path = json_path(parts)
        found = None if path in reported else secret_in_text(value)
        if found is None:
            continue
        reported.add(path)
        mlflow = parts[:2] == ["tracking", "mlflow"]
        if found == "a URI with a user name and password" and mlflow:
            yield Problem(
                path, "the URI carries a user name and password", "use tracking.mlflow.credentialsSecret"
            )
        elif found == "hub token":
            yield Problem(
                path, "looks like a literal hub token", "use model.hub.tokenSecret (a Secret reference)"
            )
        else:
            yield Problem(
                path,
                f"looks like a literal secret: {found}",
                "use tracking.mlflow.credentialsSecret"
                if mlflow
                else f"store it in a Secret: {_SECRET_REFS}",
            )


@check
def serve_extra_args_not_managed(spec: Spec, facts: Facts) -> Iterator[Problem]:
    # remote code from the model repository would run inside the serving pod: only an explicit spec field
    # (reviewed as such) may ask for it
    for i, arg in enumerate(spec.data["serve"]["extraArgs"]):
        if _flag_name(arg) == "trust-remote-code":
            yield Problem(
                json_path(["serve", "extraArgs", i]),
                "--trust-remote-code runs Python code from the model repository inside the serving pod; "
                "it is not accepted in extraArgs",
                "set model.trustRemoteCode: true, which says so for training, merge and serving alike",
            )


@check
def webui_ingress_authenticates(spec: Spec, facts: Facts) -> Iterator[Problem]:
    """LlamaBoard has no login: an Ingress in front of it must authenticate, one way."""
    webui = spec.data["webui"]
    ingress = webui.get("ingress")
    if not webui["enabled"] or ingress is None:
        return
    auth = ingress.get("auth", {})
    ways = [key for key in ("basicSecret", "url") if key in auth]
    if not ways:
        yield Problem(
            "$.webui.ingress.auth",
            "LlamaBoard has no login: an Ingress without authentication lets anyone who reaches it train, read "
            "the storage and use what the UI holds",
            "set auth.basicSecret (a Secret with an htpasswd file under `auth`) or auth.url (an authentication "
            "service such as an OAuth2 proxy)",
        )
    elif len(ways) > 1:
        yield Problem("$.webui.ingress.auth", "basicSecret and url are both set", "keep one of them")
    if "signin" in auth and "url" not in auth:
        yield Problem("$.webui.ingress.auth.signin", "signin goes with url", "set auth.url, or drop signin")


# the rules about what LLaMA-Factory itself accepts register themselves after these
from . import rules_llamafactory  # noqa: E402, F401
