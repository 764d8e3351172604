"""Cross-release facts, computed once from a spec: names, paths, run id, template, sizes.

Every release reads these instead of recomputing them, so train, merge and serve cannot disagree about
the base model, where the adapter lands or which template the model speaks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..errors import SpecError
from . import catalog, components, lfinfo
from .catalog import ModelInfo
from .components import install_timeout, is_adapter_method, is_lora_method, release_name
from .contract import PORTS, VLLM_LORA_RANKS
from .lfinfo import MEDIA_COLUMNS
from .spec import Spec, Upstream, load_spec
from .storage import MERGED_DIR, OUTPUT_DIR, SERVING_DIR, climbs, normalise
from .vram import VramEstimate, estimate

VLLM_PORT = PORTS["vllm"]  # the chart's vllm.service.port
# training keys that change how often things are written, not what is learned
NOT_IN_RUN_ID = ("loggingSteps", "saveStrategy", "saveSteps", "saveTotalLimit")


@dataclass(frozen=True)
class SharedHost:
    """The experiment whose vLLM loads this one's adapter at run time (serve.source: shared), read from its
    own spec (../<host>/experiment.yaml), so both sides agree on the service, the registry and the limits."""

    name: str
    source: str  # its spec file
    spec: Spec | None  # None: missing or invalid (`problem` says which)
    problem: str | None
    release: str  # its vllm release
    url: str  # its vLLM service, as pods in the namespace reach it
    registry: str  # the folder its adapter-sync sidecars read


@dataclass(frozen=True)
class Facts:
    name: str
    namespace: str
    run_id: str
    releases: dict[str, str]  # enabled component -> Helm release name
    template: str | None
    template_inferred: bool
    base_model: str
    model_hub: str | None  # the hub repository the train release downloads the base model from, if any
    tokenizes: bool  # the train release tokenizes the data once, in its GPU-less hook
    output_dir: str  # adapter (lora/qlora) or full model (full/freeze)
    merged_dir: str | None  # None when there is nothing to merge
    eval_scores: str | None  # the evaluation gate's scores (JSON), when the spec evaluates
    serve_model: str  # what vllm serve loads
    served_name: str
    lora_module: str | None  # adapter path when serving base + adapter (or loading it into a shared vLLM)
    max_lora_rank: int | None
    upstreams: tuple[Upstream, ...]  # the experiments whose results this one starts from
    host: SharedHost | None  # serve.source: shared: the experiment whose vLLM loads the adapter
    adapter_registry: str | None  # serve.sharedAdapters: where guests register their adapters
    model_info: ModelInfo | None
    gpu_memory_gib: float | None
    vram: VramEstimate | None
    llamafactory_version: str | None
    world_size: int
    # vLLM's modality -> items one request may carry (--limit-mm-per-prompt); empty for a text-only template
    serve_media: dict[str, int]
    # the image processor's pixel budget the training scaled images to (--mm-processor-kwargs); may be empty
    serve_pixels: dict[str, int]

    @property
    def start_adapter(self) -> str | None:
        """model.from with use: adapter: the other experiment's adapter, trained further."""
        return adapter_trained_further(self.upstreams)

    @property
    def serving_host(self) -> SharedHost | None:
        """The experiment whose vLLM serves this one's adapter, when it is served that way (an adapter release)."""
        return self.host if "adapter" in self.releases else None

    @property
    def serving_release(self) -> str | None:
        """The vLLM release that serves the model: its own, or the host's; None when nothing is served."""
        return self.serving_host.release if self.serving_host else self.releases.get("vllm")

    def install_timeout(self, component: str) -> str:
        """helm's --timeout for the component's release: longer for a train release that downloads the model
        or tokenizes first. Printed commands, `lfk run` and the GitOps files all use it."""
        return install_timeout(component, bool(self.model_hub), self.tokenizes)


def run_id(spec: Spec) -> str:
    """Short hash of everything that changes the training result (not logging, saving or resources)."""
    d = spec.data
    training = {k: v for k, v in d["training"].items() if k not in NOT_IN_RUN_ID}
    # how the data is tokenized (workers, once or in the trainer) gives the same tokens
    data = {
        k: v for k, v in d["data"].items() if k not in ("preprocessingWorkers", "register", "tokenizeOnce")
    }
    data["entries"] = {
        n: d["data"]["register"][n] for n in d["data"]["datasets"] if n in d["data"]["register"]
    }
    # where the model comes from, not how it is fetched: a renamed token Secret is the same run
    hub = {k: v for k, v in d["model"].get("hub", {}).items() if k != "tokenSecret"}
    model = {"path": d["model"]["path"], "hub": hub or None}
    model["template"] = resolve_template(spec)[0]
    payload = {
        "model": model,
        "data": data,
        # OFT's settings only where OFT trains (they came after the other methods' run ids were taken)
        "method": {k: v for k, v in d["method"].items() if k != "oft" or d["method"]["type"] == "oft"},
        "training": training,
        "world_size": world_size(spec),
        "llamafactoryArgs": d["llamafactoryArgs"],
    }
    # the stage only where it is not supervised fine-tuning (it came after the SFT run ids were taken), and
    # only its own settings
    stage = d["stage"]["type"]
    if stage != "sft":
        payload["stage"] = {"type": stage, "settings": d["stage"].get(stage)}
    # an adapter trained further: its run's folder (the model path is its base, which does not change)
    if adapter := adapter_trained_further(spec.upstreams):
        payload["adapter"] = adapter
    # checkpoints of another ZeRO stage, or of Ray's trainer, cannot be resumed: a new run
    distributed = d["distributed"]
    if distributed["deepspeed"] != "none" or distributed["engine"] == "rayjob":
        payload["checkpoints"] = {
            "deepspeed": distributed["deepspeed"],
            "ray": distributed["engine"] == "rayjob",
        }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def adapter_trained_further(upstreams: tuple[Upstream, ...]) -> str | None:
    """The LoRA adapter of another experiment this one trains further (model.from with use: adapter)."""
    return next((u.result for u in upstreams if u.use == "adapter"), None)


def world_size(spec: Spec) -> int:
    """Training processes: one per GPU on every node."""
    return max(1, int(spec.data["resources"]["gpus"])) * int(spec.data["distributed"]["nodes"])


def zero_stage(spec: Spec) -> int:
    return {"none": 0, "zero2": 2, "zero3": 3}[spec.data["distributed"]["deepspeed"]]


def resolve_template(spec: Spec) -> tuple[str | None, bool]:
    """(template, inferred?): the spec's own, else the model family's, else LLaMA-Factory's model table."""
    model = spec.data["model"]
    if model.get("template"):
        return model["template"], False
    return infer_template(model["path"], model.get("hub", {}).get("id")), True


def infer_template(path: str, hub_id: str | None) -> str | None:
    if info := catalog.known_model(hub_id, path):
        return info.template
    # LLaMA-Factory's own table names the exact model (Qwen2-VL is qwen2_vl), before the family's name
    table = lfinfo.info().model_templates
    for name in (hub_id, path):
        if name and (found := table.get(name.lower()) or table.get(catalog.model_key(name))):
            return found
    if template := catalog.family_template(hub_id, path):
        return template
    if hub_id:  # a hub model whose files are in the local Hugging Face cache
        from .models import template_from_hub_cache

        return template_from_hub_cache(hub_id)
    return None


def model_names(upstreams: tuple[Upstream, ...]) -> tuple[str, ...]:
    """The names the model an experiment starts from is known by (its first model's, up the chain)."""
    return next((u.model_names for u in upstreams if u.use != "reward"), ())


def model_info(spec: Spec) -> ModelInfo | None:
    model = spec.data["model"]
    hub_id = model.get("hub", {}).get("id")
    # a model trained by another experiment is known by that experiment's model's names
    known = catalog.known_model(hub_id, model["path"], *model_names(spec.upstreams))
    given: float | None = model.get("parametersB")
    if known:  # a size the person gives wins; the known shape stays
        size = given or known.parameters_b
        return dataclasses.replace(known, parameters_b=size)
    guessed = given or catalog.size_from_name(hub_id, model["path"], *model_names(spec.upstreams))
    return catalog.approximate_architecture(guessed) if guessed else None


def gpu_memory_gib(spec: Spec) -> float | None:
    gpu = spec.data["resources"]["gpu"]
    if "memoryGiB" in gpu:
        return float(gpu["memoryGiB"])
    return catalog.gpu_memory_gib(gpu["product"]) if "product" in gpu else None


def vram_estimate(spec: Spec, info: ModelInfo | None) -> VramEstimate | None:
    if info is None:
        return None
    d = spec.data
    method = d["method"]
    oft = method.get("oft", {})
    extra = d["llamafactoryArgs"]
    return estimate(
        info,
        method=method["type"],
        bits=method.get("quantization", {}).get("bits"),
        batch_size=d["training"]["batchSize"],
        cutoff_len=d["data"]["cutoffLen"],
        gradient_checkpointing=d["training"]["gradientCheckpointing"],
        half_precision=bool(d["training"]["bf16"] or extra.get("fp16") or extra.get("pure_bf16")),
        pure_bf16=bool(extra.get("pure_bf16")),
        lora_rank=method.get("lora", {}).get("rank", 16),
        lora_target=str(method.get("lora", {}).get("target", "all")),
        trainable_layers=method.get("freeze", {}).get("trainableLayers", 2),
        oft_block_size=oft.get("blockSize", 32),
        oft_rank=oft.get("rank", 0),
        oft_target=str(oft.get("target", "all")),
        zero_stage=zero_stage(spec),
        data_parallel=world_size(spec),
        **stage_models(d),
    )


# the evaluation gate's metric when the spec names none: what the stage is for
GATE_METRIC = {
    "dpo": "preference-accuracy",
    "kto": "preference-accuracy",
    "pt": "perplexity",
    "rm": "pairwise-accuracy",
}
# the data each metric scores, as the stage whose data it is (pairs, raw text, instructions)
METRIC_DATA_STAGE = {"preference-accuracy": "dpo", "perplexity": "pt", "pairwise-accuracy": "rm"}


def gate_metric(d: dict[str, Any]) -> str:
    """The metric the evaluation gate compares (the spec's, else the stage's)."""
    return str(d["evaluate"].get("metric") or GATE_METRIC.get(d["stage"]["type"], "rouge-l"))


def gate_data_stage(d: dict[str, Any]) -> str:
    """The stage whose data the gate's held-out set must be: pairs, raw text, or instructions (sft)."""
    return METRIC_DATA_STAGE.get(gate_metric(d), "sft")


REFERENCE_FREE_LOSSES = ("orpo", "simpo")  # DPO losses that need no reference model


def uses_reference_model(stage: str, loss: str) -> bool:
    """The stage keeps a frozen reference model beside the trained one: DPO but its reference-free losses
    (LLaMA-Factory's use_ref_model), KTO and PPO, whose trainers always compare with one."""
    return stage in ("kto", "ppo") or (stage == "dpo" and loss not in REFERENCE_FREE_LOSSES)


def stage_models(d: dict[str, Any]) -> dict[str, Any]:
    """What the stage holds beside the trained model, for the VRAM estimate: LLaMA-Factory keeps a reference
    model for DPO (but ORPO and SimPO), KTO and PPO, apart only where the trained model is not a LoRA adapter
    on the base (create_ref_model); PPO's full reward model is a second model, a LoRA one an adapter."""
    stage = d["stage"]["type"]
    reference = uses_reference_model(stage, d["stage"]["dpo"]["loss"])
    ppo = d["stage"].get("ppo", {})
    return {
        "stage": stage,
        "reference_copy": reference and not is_lora_method(d["method"]["type"]),
        "reward_copy": stage == "ppo" and ppo["rewardModel"]["type"] == "full",
        "new_tokens": ppo.get("maxNewTokens", 0),
    }


def smallest_lora_rank(rank: int) -> int | None:
    return next((r for r in VLLM_LORA_RANKS if r >= rank), None)


def enabled_components(spec: Spec) -> list[str]:
    return components.enabled_components(spec.data)


def adapter_registry(vllm_release: str) -> str:
    """The folder a shared vLLM's sidecars read: one JSON file per registered adapter."""
    return f"{SERVING_DIR}/{vllm_release}/adapters"


def max_lora_rank(spec: Spec) -> int | None:
    """--max-lora-rank of a vLLM serving base + adapter: the spec's, else the smallest vLLM allows for the rank."""
    return spec.data["serve"].get("maxLoraRank") or smallest_lora_rank(spec.data["method"]["lora"]["rank"])


def shared_host(spec: Spec) -> SharedHost | None:
    """serve.source: shared: the host experiment, from its spec beside this one."""
    serve = spec.data["serve"]
    if serve["source"] != "shared" or "host" not in serve:
        return None
    name = serve["host"]
    source = str(spec.folder.parent / name / "experiment.yaml")
    release = release_name(name, "vllm")
    host, problem = None, None
    beside = f"../{name}/experiment.yaml"
    try:
        host = load_spec(source)
    except SpecError as exc:
        first = exc.problems[0]
        problem = f"no valid experiment {name} beside this one: {beside}::{first.path}: {first.message}"
    if host is not None and host.name != name:
        problem, host = f"{beside} names experiment {host.name}, not {name}", None
    return SharedHost(
        name=name,
        source=source,
        spec=host,
        problem=problem,
        release=release,
        url=f"http://{release}:{VLLM_PORT}",
        registry=adapter_registry(release),
    )


def neighbour_paths(spec: Spec) -> list[tuple[str, str, str]]:
    """(experiment, field, normalised path) of the folders the experiments beside this one read or publish
    (their base model, data and merge target), so a merge here cannot publish over them. Specs that do not load
    are skipped: they are refused on their own."""
    found = []
    for source in sorted(spec.folder.parent.glob("*/experiment.yaml")):
        if source.parent.resolve() == spec.folder.resolve():
            continue
        try:
            other = load_spec(source)
        except SpecError:
            continue
        d = other.data
        fields = [("model.path", d["model"]["path"]), ("data.dir", d["data"]["dir"])]
        if d["merge"].get("exportDir"):
            fields.append(("merge.exportDir", d["merge"]["exportDir"]))
        found += [(other.name, name, normalise(path)) for name, path in fields if not climbs(path)]
    return found


def output_dir_of(spec: Spec, rid: str) -> str:
    return f"{OUTPUT_DIR}/{spec.name}/{rid}"


def for_run(spec: Spec, facts: Facts, rid: str) -> Facts:
    """The experiment's facts as they were for another run id (an earlier run: `lfk report --run`): the folders
    that carry the run id move with it."""
    if rid == facts.run_id:
        return facts
    output_dir = output_dir_of(spec, rid)
    merged_dir = facts.merged_dir
    if merged_dir and not spec.data["merge"].get("exportDir"):
        merged_dir = f"{MERGED_DIR}/{spec.name}/{rid}"
    return dataclasses.replace(
        facts,
        run_id=rid,
        output_dir=output_dir,
        merged_dir=merged_dir,
        eval_scores=f"{output_dir}/eval/scores.json" if facts.eval_scores else None,
    )


def derive(spec: Spec) -> Facts:
    d = spec.data
    name = spec.name
    rid = run_id(spec)
    method = d["method"]["type"]
    output_dir = output_dir_of(spec, rid)
    components = enabled_components(spec)
    # the spec's paths in one spelling (`..` is refused by the rules): /storage//models/x/ is /storage/models/x
    base_model = normalise(d["model"]["path"])
    merged_dir = None
    if "merge" in components:
        export_dir = d["merge"].get("exportDir")
        merged_dir = normalise(export_dir) if export_dir else f"{MERGED_DIR}/{name}/{rid}"
    serve = d["serve"]
    lora_module = None
    max_rank = None
    host = shared_host(spec)
    if serve["source"] == "adapter" and is_lora_method(method):
        serve_model, lora_module = base_model, output_dir
        max_rank = max_lora_rank(spec)
    elif serve["source"] == "shared" and is_lora_method(method):
        serve_model, lora_module = base_model, output_dir
        if host and host.spec and is_lora_method(host.spec.data["method"]["type"]):
            max_rank = max_lora_rank(host.spec)
    elif merged_dir:
        serve_model = merged_dir
    else:  # full/freeze write a complete model; lora without a merge serves the base (checked elsewhere)
        serve_model = output_dir if not is_adapter_method(method) else base_model
    template, inferred = resolve_template(spec)
    info = model_info(spec)
    return Facts(
        name=name,
        namespace=d["namespace"],
        run_id=rid,
        releases={c: release_name(name, c) for c in components},
        template=template,
        template_inferred=inferred,
        base_model=base_model,
        model_hub=d["model"].get("hub", {}).get("id"),
        tokenizes=bool(d["data"].get("tokenizeOnce", True)),
        output_dir=output_dir,
        merged_dir=merged_dir,
        eval_scores=f"{output_dir}/eval/scores.json" if "eval" in components else None,
        serve_model=serve_model,
        served_name=serve.get("servedModelName") or name,
        lora_module=lora_module,
        max_lora_rank=max_rank,
        upstreams=spec.upstreams,
        host=host,
        adapter_registry=adapter_registry(release_name(name, "vllm")) if "sharedAdapters" in serve else None,
        model_info=info,
        gpu_memory_gib=gpu_memory_gib(spec),
        vram=vram_estimate(spec, info),
        llamafactory_version=lfinfo.image_version(d["images"]["llamafactory"]),
        world_size=world_size(spec),
        serve_media=serve_media(spec, template),
        serve_pixels=serve_pixels(spec, template),
    )


def spec_media(d: dict[str, Any]) -> dict[str, list[str]]:
    """The media each trained or gated dataset of data.register carries: {"images": [dataset, ...], ...}."""
    data = d["data"]
    named = [*data["datasets"], *([d["evaluate"]["dataset"]] if "evaluate" in d else [])]
    found: dict[str, list[str]] = {}
    for name in named:
        columns = data["register"].get(name, {}).get("columns", {})
        for medium in MEDIA_COLUMNS:
            if medium in columns:
                found.setdefault(medium, []).append(name)
    return found


def serve_media(spec: Spec, template: str | None) -> dict[str, int]:
    """Items of each medium the template takes that one request to vLLM may carry: serve.mediaPerPrompt, else
    1 of each the trained data carries and 0 of the others (vLLM sets memory aside for what is allowed, and
    would allow 999 of each)."""
    takes = lfinfo.info().media_templates.get(template or "", ())
    carried = spec_media(spec.data)
    chosen = spec.data["serve"].get("mediaPerPrompt", {})
    return {medium.removesuffix("s"): chosen.get(medium, int(medium in carried)) for medium in takes}


# templates of models whose image processor takes min_pixels and max_pixels (Qwen2-VL and Qwen2.5-VL), which
# vLLM passes on from --mm-processor-kwargs
PIXEL_BUDGET_TEMPLATES = frozenset({"qwen2_vl"})


def serve_pixels(spec: Spec, template: str | None) -> dict[str, int]:
    """The pixel budget LLaMA-Factory scaled the training images to (data.media, else its defaults), for vLLM
    to scale requests' images alike: a model tuned on small images is otherwise served at the processor's own
    budget, many times the tokens per image."""
    if template not in PIXEL_BUDGET_TEMPLATES or "images" not in spec_media(spec.data):
        return {}
    media = spec.data["data"].get("media", {})
    defaults = lfinfo.info().defaults
    return {
        "min_pixels": int(media.get("imageMinPixels", defaults["image_min_pixels"])),
        "max_pixels": int(media.get("imageMaxPixels", defaults["image_max_pixels"])),
    }


# the custom resources each engine creates, and who provides them
ENGINE_CRDS = {
    "trainjob": ("trainjobs.trainer.kubeflow.org", "Kubeflow Trainer v2"),
    "pytorchjob": ("pytorchjobs.kubeflow.org", "the Kubeflow training operator"),
    "jobset": ("jobsets.jobset.x-k8s.io", "JobSet"),
    "rayjob": ("rayjobs.ray.io", "KubeRay"),
}


def shm_size(explicit: Any, gpus: int) -> str:
    """/dev/shm: what the spec says, else 8Gi per GPU with a 2Gi floor (PyTorch dataloaders and NCCL use it)."""
    if explicit:
        return str(explicit)
    return f"{max(2, 8 * gpus)}Gi"
