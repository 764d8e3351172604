"""Rules about what LLaMA-Factory itself accepts: pass-through arguments it knows and the spec does not
already set, precision and saving, dataset entries, its refusals with DeepSpeed, and what each training
engine needs. They register last, so they run after the spec's own rules."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator

from .. import lfinfo
from ..contract import LLAMAFACTORY_VERSION, OUTPUT_DIR
from ..facts import ENGINE_CRDS, Facts
from ..lfinfo import MEDIA_ARGS
from ..problems import Problem, json_path
from ..spec import Spec
from .registry import check

# passthrough keys the spec sets through its own fields
MANAGED_ARGS = {
    "model_name_or_path": "model.path",
    "template": "model.template",
    "trust_remote_code": "model.trustRemoteCode",
    "dataset_dir": "data.dir",
    "dataset": "data.datasets",
    "cutoff_len": "data.cutoffLen",
    "max_samples": "data.maxSamples",
    "val_size": "data.valSize",
    "preprocessing_num_workers": "data.preprocessingWorkers",
    "finetuning_type": "method.type",
    "lora_rank": "method.lora.rank",
    "lora_alpha": "method.lora.alpha",
    "lora_dropout": "method.lora.dropout",
    "lora_target": "method.lora.target",
    "quantization_bit": "method.quantization.bits",
    "quantization_method": "method.quantization.method",
    "freeze_trainable_layers": "method.freeze.trainableLayers",
    "oft_block_size": "method.oft.blockSize",
    "oft_rank": "method.oft.rank",
    "oft_target": "method.oft.target",
    "num_train_epochs": "training.epochs",
    "max_steps": "training.maxSteps",
    "learning_rate": "training.learningRate",
    "per_device_train_batch_size": "training.batchSize",
    "gradient_accumulation_steps": "training.gradientAccumulation",
    "lr_scheduler_type": "training.scheduler",
    "warmup_ratio": "training.warmupRatio",
    "max_grad_norm": "training.maxGradNorm",
    "bf16": "training.bf16",
    "disable_gradient_checkpointing": "training.gradientCheckpointing",
    "flash_attn": "training.attention",
    "logging_steps": "training.loggingSteps",
    "save_strategy": "training.saveStrategy",
    "save_steps": "training.saveSteps",
    "save_total_limit": "training.saveTotalLimit",
    "seed": "training.seed",
    "output_dir": f"(derived: {OUTPUT_DIR}/<name>/<run id>)",
    "overwrite_output_dir": "(false, so runs resume; true for PPO, which LLaMA-Factory cannot resume)",
    "logging_dir": "(derived: <output dir>/logs)",
    "report_to": "tracking.mlflow",
    "run_name": "tracking.mlflow.runName",
    "stage": "stage.type",
    "do_train": "(always true)",
    "export_dir": "merge.exportDir",
    "export_size": "merge.shardSizeGB",
    "export_device": "merge.device",
    "infer_dtype": "merge.dtype",
    "adapter_name_or_path": "model.from with use: adapter (another experiment's adapter, trained further)",
    "tokenized_path": "data.tokenizeOnce (the set is kept on the storage under a key of its inputs)",
    # the config written for ZeRO is mounted at /config/deepspeed.json: another file would replace it
    "deepspeed": "distributed.deepspeed (zero2 or zero3: the project writes and mounts the DeepSpeed config)",
    "ddp_timeout": "distributed.ddpTimeout",
    "ray_num_workers": "(derived: distributed.nodes x resources.gpus)",
    **{key: f"data.media.{field}" for key, field in MEDIA_ARGS.items()},
    "plot_loss": "(always true: lfk status and lfk report read the loss)",
    "include_num_input_tokens_seen": "(always true: lfk status and lfk report read the throughput)",
}


# each stage's own arguments and their fields under stage.<stage> (pref_beta is DPO's and KTO's)
STAGE_ARGS: dict[str, dict[str, str]] = {
    "dpo": {
        "pref_loss": "loss",
        "pref_beta": "beta",
        "pref_ftx": "ftx",
        "dpo_label_smoothing": "labelSmoothing",
        "simpo_gamma": "simpoGamma",
    },
    "kto": {
        "pref_beta": "beta",
        "pref_ftx": "ftx",
        "kto_chosen_weight": "desirableWeight",
        "kto_rejected_weight": "undesirableWeight",
    },
    "ppo": {
        "reward_model": "rewardModel.path",
        "reward_model_type": "rewardModel.type",
        "ppo_epochs": "epochs",
        "ppo_target": "target",
        "ppo_buffer_size": "bufferSize",
        "ppo_score_norm": "scoreNorm",
        "ppo_whiten_rewards": "whitenRewards",
        "max_new_tokens": "maxNewTokens",
    },
}


def stage_fields(key: str) -> list[str]:
    """The spec fields of a stage argument, one per stage that has it: ['stage.dpo.beta', 'stage.kto.beta']."""
    return [f"stage.{stage}.{fields[key]}" for stage, fields in STAGE_ARGS.items() if key in fields]


@check
def passthrough_args(spec: Spec, facts: Facts) -> Iterator[Problem]:
    legal = lfinfo.info().arguments
    for key in spec.data["llamafactoryArgs"]:
        path = json_path(["llamafactoryArgs", key])
        if key in MANAGED_ARGS:
            yield Problem(path, f"{key} is set by the spec", f"use {MANAGED_ARGS[key]}")
        elif fields := stage_fields(key):
            yield Problem(path, f"{key} is set by the spec", f"use {' or '.join(fields)}")
        elif key not in legal:
            close = difflib.get_close_matches(key, sorted(legal), n=3)
            yield Problem(
                path,
                f"LLaMA-Factory {lfinfo.info().version} has no argument {key!r}",
                f"did you mean {', '.join(close)}?" if close else "see `llamafactory-cli train -h`",
            )


@check
def tokenize_once(spec: Spec, facts: Facts) -> Iterator[Problem]:
    if facts.tokenizes and spec.data["llamafactoryArgs"].get("streaming"):
        yield Problem(
            "$.data.tokenizeOnce",
            "a streamed dataset cannot be tokenized ahead: LLaMA-Factory refuses to save it (tokenized_path)",
            "set data.tokenizeOnce: false, or drop streaming",
        )


# images known to lack packages some specs need: the official image (and the project's CPU copy of it, which
# keeps its contract) has neither mlflow nor the quantisation libraries; llamafactory-plus adds mlflow and
# bitsandbytes (images/llamafactory-plus)
IMAGE_LACKS = {
    "hiyouga/llamafactory": {"mlflow", "bitsandbytes", "hqq", "eetq"},
    "lfk.local/llamafactory": {"mlflow", "bitsandbytes", "hqq", "eetq"},
    "llamafactory-plus": {"hqq", "eetq"},
}
PLUS_IMAGE = f"registry.example.internal/llamafactory-k8s/llamafactory-plus:{LLAMAFACTORY_VERSION}"


def image_lacks(image: str) -> set[str]:
    repository = image.split("@")[0].rsplit(":", 1)[0].removeprefix("docker.io/")
    return IMAGE_LACKS.get(repository) or IMAGE_LACKS.get(repository.rsplit("/", 1)[-1], set())


def package_name(requirement: str) -> str:
    return re.split(r"[\[=<>!~ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def needed_packages(spec: Spec) -> dict[str, str]:
    """Packages the training needs beyond LLaMA-Factory's own, and why."""
    d = spec.data
    needs = {}
    if "mlflow" in d["tracking"]:
        needs["mlflow"] = "reporting to MLflow (transformers' MLflowCallback imports mlflow)"
    quantization = d["method"].get("quantization")
    if d["method"]["type"] == "qlora" and quantization:
        needs[quantization["method"]] = f"QLoRA with {quantization['method']}"
    return needs


@check
def packages_in_the_image(spec: Spec, facts: Facts) -> Iterator[Problem]:
    d = spec.data
    given = {package_name(p) for p in d["images"]["pipPackages"]}
    given |= {"mlflow"} if "mlflow-skinny" in given else set()
    lacking = image_lacks(d["images"]["llamafactory"])
    for package, why in needed_packages(spec).items():
        if package in lacking and package not in given:
            yield Problem(
                "$.images.pipPackages",
                f"{why} needs the {package} package, which {d['images']['llamafactory']} lacks: the preflight would stop the run",
                f"use the project's image with it (images/llamafactory-plus, e.g. images.llamafactory: {PLUS_IMAGE}), "
                f"or add a pinned {package} to images.pipPackages",
            )
    for index, requirement in enumerate(d["images"]["pipPackages"]):
        if "==" not in requirement:
            yield Problem(
                json_path(["images", "pipPackages", index]),
                f"{requirement!r} is not pinned: every pod start would install whatever the index serves that day",
                f"pin it ({package_name(requirement)}==VERSION), or build it into the image (images/llamafactory-plus)",
                "warning",
            )


@check
def precision_and_saving(spec: Spec, facts: Facts) -> Iterator[Problem]:
    t = spec.data["training"]
    if t["attention"] in ("fa2", "fa3") and not t["bf16"] and not spec.data["llamafactoryArgs"].get("fp16"):
        yield Problem(
            "$.training.attention",
            f"{t['attention']} needs bf16 or fp16",
            "use attention: sdpa or enable bf16",
        )
    if t["saveStrategy"] == "no":
        yield Problem(
            "$.training.saveStrategy",
            "without checkpoints a preempted or restarted Job starts over",
            "use saveStrategy: steps",
            "warning",
        )


@check
def dataset_entries(spec: Spec, facts: Facts) -> Iterator[Problem]:
    alpaca_only = {"prompt", "query", "response", "history"}
    sharegpt_only = {"messages", "tools"}
    for name, entry in spec.data["data"]["register"].items():
        file = entry["file"]
        if file.startswith("/") or ".." in file.split("/"):
            # registered as it is, LLaMA-Factory would read it from outside the dataset directory
            yield Problem(
                json_path(["data", "register", name, "file"]),
                f"{file!r} is not inside the dataset directory",
                "give the file's path relative to data.dir, without `..`",
            )
        columns = set(entry.get("columns", {}))
        wrong = columns & (sharegpt_only if entry["format"] == "alpaca" else alpaca_only)
        for column in sorted(wrong):
            yield Problem(
                json_path(["data", "register", name, "columns", column]),
                f"column {column!r} does not apply to the {entry['format']} format",
                "remove it or change format",
            )
        if entry["format"] == "alpaca" and entry.get("tags"):
            yield Problem(
                json_path(["data", "register", name, "tags"]),
                "tags apply only to sharegpt data",
                "remove tags",
            )


# LLaMA-Factory's refusals with DeepSpeed (hparams/parser.py): (argument, stages it refuses, message)
DEEPSPEED_REFUSALS = [
    ("pure_bf16", ("zero3",), "`pure_bf16` is incompatible with DeepSpeed ZeRO-3"),
    ("use_unsloth", ("zero3",), "Unsloth is incompatible with DeepSpeed ZeRO-3"),
    ("pissa_init", ("zero3",), "PiSSA must be initialised with scripts/pissa_init.py under DeepSpeed ZeRO-3"),
    ("predict_with_generate", ("zero3",), "`predict_with_generate` is incompatible with DeepSpeed ZeRO-3"),
    ("use_galore", ("zero2", "zero3"), "GaLore is incompatible with DeepSpeed"),
    ("use_apollo", ("zero2", "zero3"), "APOLLO is incompatible with DeepSpeed"),
]


@check
def distributed(spec: Spec, facts: Facts) -> Iterator[Problem]:
    d = spec.data
    dist, extra = d["distributed"], d["llamafactoryArgs"]
    if dist["nodes"] > 1 and d["resources"]["gpus"] == 0:
        # accelerate falls back to gloo without CUDA: the pods train together, only slowly
        yield Problem(
            "$.resources.gpus",
            "several nodes without GPUs train on CPU over gloo: a rehearsal of the wiring, far slower than GPUs",
            "set resources.gpus for a real run",
            "warning",
        )
    if d["queuePriority"] and not d["queue"]:
        yield Problem(
            "$.queuePriority",
            "a priority class takes effect only in a Kueue queue",
            "set queue, or remove queuePriority",
        )
    stage = dist["deepspeed"]
    if stage != "none":
        for argument, stages, message in DEEPSPEED_REFUSALS:
            if extra.get(argument) and stage in stages:
                yield Problem(
                    json_path(["llamafactoryArgs", argument]),
                    f"{message}; LLaMA-Factory refuses it",
                    "remove it, or set distributed.deepspeed: none",
                )
        if facts.world_size == 1:
            yield Problem(
                "$.distributed.deepspeed",
                "ZeRO shards over the data-parallel GPUs; with one GPU it only adds overhead",
                severity="warning",
            )
    if extra.get("use_galore") and extra.get("galore_layerwise") and facts.world_size > 1:
        yield Problem(
            "$.llamafactoryArgs.galore_layerwise",
            "distributed training does not support layer-wise GaLore",
            "remove galore_layerwise",
        )
    if dist["engine"] in ENGINE_CRDS:
        crd, provider = ENGINE_CRDS[dist["engine"]]
        yield Problem(
            "$.distributed.engine",
            f"the {dist['engine']} engine creates {crd} objects: {provider} must be installed in the cluster",
            "lfk check verifies the CRD is there",
            "warning",
        )
    if dist["engine"] == "trainjob":
        yield Problem(
            "$.distributed.engine",
            "with trainjob the training runtime's pod template decides the security contexts, image pull secrets, "
            "priority class and affinity: a TrainJob cannot set them",
            "set them in the ClusterTrainingRuntime, or use engine job or jobset",
            "warning",
        )
    if dist["engine"] == "rayjob" and stage != "none":
        yield Problem(
            "$.distributed.deepspeed",
            "DeepSpeed is launched by torchrun, not by Ray",
            "use engine job, jobset, pytorchjob or trainjob",
        )
