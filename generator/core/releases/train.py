"""The train release: the Job's placement and engine, its hooks (tokenize, download), and the complete
LLaMA-Factory training config (llamafactory-cli train /config/train.yaml)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from ..facts import Facts
from .common import common, media_args, workload
from .yamltext import Bare, Block

DEEPSPEED_DIR = Path(__file__).resolve().parent.parent / "data" / "deepspeed"


@functools.cache
def _deepspeed_text(stage: str) -> str:
    return (DEEPSPEED_DIR / f"{stage}.json").read_text(encoding="utf-8")


def deepspeed_config(stage: str) -> dict[str, Any]:
    """The project's DeepSpeed config of a ZeRO stage (zero2, zero3)."""
    config: dict[str, Any] = json.loads(_deepspeed_text(stage))
    return config


def values(spec: dict[str, Any], facts: Facts) -> Block:
    resources, dist = spec["resources"], spec["distributed"]
    train = Block(("enabled", True)).extend(workload(
        spec, spec["images"]["llamafactory"], resources["gpus"], resources["cpu"], resources["memory"],
        resources.get("shmSize"),
    ))  # fmt: skip
    nccl = dist["nccl"]
    train.add("distributed", Block(
        ("nodes", dist["nodes"]),
        ("engine", dist["engine"]),
        ("masterPort", dist["masterPort"]),
        ("maxRestarts", dist["maxRestarts"]),
        ("rendezvousTimeout", dist["rendezvousTimeout"]),
        ("nccl", {"debug": nccl["debug"], "socketIfname": nccl["socketIfname"], "ibDisable": nccl["ibDisable"]}),
    ))  # fmt: skip
    if dist["deepspeed"] != "none":
        train.comment(
            f"DeepSpeed {dist['deepspeed'].upper()} (written by this project), mounted at /config/deepspeed.json"
        )
        train.add("deepspeed", deepspeed_config(dist["deepspeed"]))
    if spec["queue"]:
        train.add("queue", spec["queue"])
        if spec["queuePriority"]:
            train.add("queuePriority", spec["queuePriority"])
    if resources["tolerations"]:
        train.comment("the GPU-less preflight may run anywhere, and on the nodes the spec tolerates too")
        train.add("preflight", Block(("tolerations", resources["tolerations"])))
    data = spec["data"]
    if data["tokenizeOnce"]:
        train.comment(
            "the data tokenized once, without a GPU, before training; trainings of the same data load the set"
        )
        tokenize = Block(("enabled", True), ("resources", {
            "requests": {"cpu": "1", "memory": "4Gi"},
            "limits": {"cpu": str(data["preprocessingWorkers"]), "memory": "16Gi"},
        }))  # fmt: skip
        if resources["tolerations"]:
            tokenize.add("tolerations", resources["tolerations"])
        train.add("tokenize", tokenize)
    if spec["images"]["pipPackages"]:
        train.add("pipPackages", spec["images"]["pipPackages"])
    hub = spec["model"].get("hub")
    if hub is not None:
        train.add("download", Block(
            ("enabled", True), ("repoId", hub["id"]), ("revision", hub["revision"]), ("source", hub["source"]),
        ))  # fmt: skip
    train.comment("the complete LLaMA-Factory training config (llamafactory-cli train /config/train.yaml)")
    train.add("config", config(spec, facts))
    return common(spec, facts).add("train", train)


def config(spec: dict[str, Any], facts: Facts) -> Block:
    method, t, dist, data = spec["method"], spec["training"], spec["distributed"], spec["data"]
    adapter = method["type"] in ("lora", "qlora")
    c = Block().heading("model")
    c.add("model_name_or_path", facts.base_model).add("template", facts.template)
    c.add("trust_remote_code", spec["model"]["trustRemoteCode"])
    if facts.start_adapter:
        c.comment(
            "the adapter of the experiment this one starts from (model.from), loaded and trained further"
        )
        c.add("adapter_name_or_path", facts.start_adapter)
    c.heading("method")
    # one of the schema's stage names, written bare as LLaMA-Factory's examples write it
    stage = spec["stage"]["type"]
    c.add("stage", Bare(stage)).add("do_train", True)
    c.add("finetuning_type", "lora" if adapter else method["type"])
    if adapter:
        lora = method["lora"]
        c.add("lora_rank", lora["rank"]).add("lora_alpha", lora.get("alpha", 2 * lora["rank"]))
        c.add("lora_dropout", lora["dropout"]).add("lora_target", lora["target"])
    if method["type"] == "qlora":
        c.add("quantization_bit", method["quantization"]["bits"])
        c.add("quantization_method", method["quantization"]["method"])
    if method["type"] == "oft":
        oft = method["oft"]
        c.add("oft_block_size", oft["blockSize"]).add("oft_rank", oft["rank"]).add(
            "oft_target", oft["target"]
        )
    if method["type"] == "freeze":
        c.add("freeze_trainable_layers", method["freeze"]["trainableLayers"])
    c.extend(_stage_args(spec))
    c.heading("dataset")
    c.add("dataset_dir", data["dir"]).add("dataset", ",".join(data["datasets"])).add(
        "cutoff_len", data["cutoffLen"]
    )
    if "maxSamples" in data:
        c.add("max_samples", data["maxSamples"])
    if "valSize" in data:
        c.add("val_size", data["valSize"])
    c.add("preprocessing_num_workers", data["preprocessingWorkers"])
    c.extend(media_args(spec))
    c.heading("training")
    c.add("per_device_train_batch_size", t["batchSize"]).add(
        "gradient_accumulation_steps", t["gradientAccumulation"]
    )
    c.add("learning_rate", float(t["learningRate"])).add("num_train_epochs", float(t["epochs"]))
    if "maxSteps" in t:
        c.add("max_steps", t["maxSteps"])
    c.add("lr_scheduler_type", t["scheduler"]).add("warmup_ratio", float(t["warmupRatio"]))
    c.add("max_grad_norm", float(t["maxGradNorm"])).add("bf16", t["bf16"])
    c.add("disable_gradient_checkpointing", not t["gradientCheckpointing"])
    c.add("flash_attn", t["attention"]).add("seed", t["seed"])
    if dist["deepspeed"] != "none":
        c.add("deepspeed", Bare("/config/deepspeed.json"))
    if facts.world_size > 1:
        c.add("ddp_timeout", dist["ddpTimeout"])
    if dist["engine"] == "rayjob":
        c.add("ray_num_workers", facts.world_size)
    c.heading(
        "output: one directory per run id; never overwritten, so a restarted Job resumes from its checkpoints"
    )
    c.add("output_dir", facts.output_dir)
    if stage == "ppo":
        c.comment(
            "LLaMA-Factory cannot resume PPO (it stops on a checkpoint to resume from): a restart trains anew"
        )
        c.add("overwrite_output_dir", True)
    else:
        c.add("overwrite_output_dir", False)
    c.comment("as in the guide: the run's TensorBoard logs beside its checkpoints")
    c.add("logging_dir", facts.output_dir + "/logs").add("logging_steps", t["loggingSteps"])
    c.add("save_strategy", t["saveStrategy"])
    if t["saveStrategy"] == "steps":
        c.add("save_steps", t["saveSteps"])
    c.add("save_total_limit", t["saveTotalLimit"]).add("plot_loss", True)
    c.comment(
        "the tokens each step saw: the trainer then logs its throughput (tokens/s) for lfk status and lfk report"
    )
    c.add("include_num_input_tokens_seen", True)
    c.heading("tracking")
    mlflow = spec["tracking"].get("mlflow")
    if mlflow is not None:
        c.add("report_to", Bare("mlflow")).add(
            "run_name", mlflow.get("runName", f"{facts.name}-{facts.run_id}")
        )
    else:
        c.add("report_to", Bare("none"))
    if spec["llamafactoryArgs"]:
        c.heading("passed through from the spec's llamafactoryArgs")
        for key, value in sorted(spec["llamafactoryArgs"].items(), key=lambda item: item[0].lower()):
            c.add(key, value)
    return c


def _stage_args(spec: dict[str, Any]) -> Block:
    """The arguments of a preference or reinforcement stage (dpo, kto, ppo); none for the others."""
    stage = spec["stage"]["type"]
    args = Block()
    if stage == "dpo":
        p = spec["stage"]["dpo"]
        args.heading("preference tuning on pairs")
        args.add("pref_loss", p["loss"]).add("pref_beta", float(p["beta"])).add("pref_ftx", float(p["ftx"]))
        if p["loss"] == "sigmoid":
            args.add("dpo_label_smoothing", float(p["labelSmoothing"]))
        if p["loss"] == "simpo":
            args.add("simpo_gamma", float(p["simpoGamma"]))
    elif stage == "kto":
        p = spec["stage"]["kto"]
        args.heading("KTO on answers tagged desirable or undesirable")
        args.add("pref_beta", float(p["beta"])).add("pref_ftx", float(p["ftx"]))
        args.add("kto_chosen_weight", float(p["desirableWeight"]))
        args.add("kto_rejected_weight", float(p["undesirableWeight"]))
    elif stage == "ppo":
        p = spec["stage"]["ppo"]
        args.heading("PPO against the reward model")
        args.add("reward_model", p["rewardModel"]["path"]).add("reward_model_type", p["rewardModel"]["type"])
        args.add("ppo_epochs", p["epochs"]).add("ppo_target", float(p["target"]))
        args.add("ppo_buffer_size", p["bufferSize"]).add("ppo_score_norm", p["scoreNorm"])
        args.add("ppo_whiten_rewards", p["whitenRewards"]).add("max_new_tokens", p["maxNewTokens"])
    return args
