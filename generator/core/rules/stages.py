"""Rules on the training stage: what LLaMA-Factory refuses at start-up for each stage (the reward model PPO
needs and its kind, DPO's loss options, PiSSA, the SFT-only options), what a stage's result is for (a reward
model scores answers: it is not served, and its gate reads its value head), and what a restarted Job of a
stage does where LLaMA-Factory cannot resume it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..components import is_lora_method
from ..contract import LLAMAFACTORY_VERSION
from ..facts import Facts, uses_reference_model
from ..problems import Problem
from ..spec import Spec
from .registry import check

# LLaMA-Factory refuses these (true) for every stage but sft
SFT_ONLY_ARGS = ("predict_with_generate", "neat_packing", "train_on_prompt", "mask_history")
STAGE_SECTIONS = ("dpo", "kto", "ppo")
# stages the deployed LLaMA-Factory cannot train at all, with the reason found by running it (the llamafactory
# test tier runs the rendered config and expects this failure, so the entry goes when a version fixes it)
UNTRAINABLE = {
    "0.9.5": {
        "ppo": "LLaMA-Factory 0.9.5 cannot train PPO: its PPO trainer requires trl>=0.8.6,<=0.9.6 and stops on "
        "the image's trl 0.24, while the rest of LLaMA-Factory 0.9.5 needs trl>=0.18 (with trl 0.9.6 it does "
        "not start: KTO's trainer imports prepare_deepspeed from trl)"
    }
}


@check
def stage_settings(spec: Spec, facts: Facts) -> Iterator[Problem]:
    d = spec.data
    stage = d["stage"]["type"]
    raw = spec.raw.get("stage")
    given: dict[str, Any] = raw if isinstance(raw, dict) else {}  # what the spec wrote, before defaults
    for section in STAGE_SECTIONS:
        if section != stage and section in given:
            yield Problem(
                f"$.stage.{section}",
                f"settings of stage {section} in a stage {stage} experiment: they are not used",
                f"remove stage.{section}, or set stage.type: {section}",
                "warning",
            )
    if stage == "dpo":
        dpo = d["stage"]["dpo"]
        if dpo["loss"] != "sigmoid" and dpo["labelSmoothing"] > 1e-6:
            yield Problem(
                "$.stage.dpo.labelSmoothing",
                f"label smoothing is only valid for the sigmoid loss, not {dpo['loss']} (LLaMA-Factory refuses it)",
                "set labelSmoothing: 0, or loss: sigmoid",
            )
        if dpo["loss"] != "simpo" and "simpoGamma" in given.get("dpo", {}):
            yield Problem(
                "$.stage.dpo.simpoGamma",
                f"simpoGamma is SimPO's margin; loss {dpo['loss']} does not use it",
                "remove it, or set loss: simpo",
                "warning",
            )
    upstream = next((u for u in spec.upstreams if u.use == "adapter"), None)
    if upstream and uses_reference_model(stage, d["stage"]["dpo"]["loss"]):
        yield Problem(
            "$.model.from.use",
            f"the reference model of stage {stage} is the base model with the adapter off, not {upstream.name}'s "
            "model: LLaMA-Factory turns off the adapter it trains further, the one it starts from included",
            f"use: merged, to compare with {upstream.name}'s model",
            "warning",
        )
    if reason := UNTRAINABLE.get(LLAMAFACTORY_VERSION, {}).get(stage):
        yield Problem(
            "$.stage.type", reason, "train PPO with another LLaMA-Factory version; dpo, kto and rm run here"
        )
    if stage == "ppo":
        reward = d["stage"]["ppo"]["rewardModel"]
        if reward["type"] == "lora" and not is_lora_method(d["method"]["type"]):
            yield Problem(
                "$.stage.ppo.rewardModel.type",
                f"a LoRA reward model is loaded as a second adapter on the policy's base model, which needs "
                f"method lora or qlora, not {d['method']['type']} (LLaMA-Factory refuses it)",
                "set rewardModel.type: full with a complete (merged) reward model, or train the policy with LoRA",
            )


@check
def stage_arguments(spec: Spec, facts: Facts) -> Iterator[Problem]:
    d = spec.data
    stage = d["stage"]["type"]
    args = d["llamafactoryArgs"]
    if stage != "sft":
        for key in SFT_ONLY_ARGS:
            if args.get(key):
                yield Problem(
                    f"$.llamafactoryArgs.{key}",
                    f"{key} is for supervised fine-tuning only; LLaMA-Factory refuses it at stage {stage}",
                    f"remove {key}",
                )
    if stage in ("rm", "ppo") and args.get("load_best_model_at_end"):
        yield Problem(
            "$.llamafactoryArgs.load_best_model_at_end",
            f"stage {stage} cannot load the best model at the end (LLaMA-Factory refuses it)",
            "remove load_best_model_at_end",
        )
    loss = d["stage"]["dpo"]["loss"]
    if args.get("pissa_init") and uses_reference_model(stage, loss):
        yield Problem(
            "$.llamafactoryArgs.pissa_init",
            f"PiSSA cannot initialise the adapter of a stage {stage} training"
            + (" with a reference model" if stage == "dpo" else "")
            + " (LLaMA-Factory refuses it)",
            "remove pissa_init" + (", or use loss orpo or simpo" if stage == "dpo" else ""),
        )


@check
def stage_result(spec: Spec, facts: Facts) -> Iterator[Problem]:
    d = spec.data
    stage = d["stage"]["type"]
    metric = d.get("evaluate", {}).get("metric")
    if stage == "rm" and metric and metric != "pairwise-accuracy":
        yield Problem(
            "$.evaluate.metric",
            f"{metric} scores a model's answers or likelihoods; a reward model scores answers instead",
            "use metric: pairwise-accuracy (the default of stage rm), or leave it out",
        )
    if stage != "rm" and metric == "pairwise-accuracy":
        yield Problem(
            "$.evaluate.metric",
            f"pairwise-accuracy reads a reward model's value head, which a stage {stage} model has not",
            "use preference-accuracy to score pairs by the model's likelihoods",
        )
    restarts_from_zero = stage == "ppo" or (stage == "rm" and d["method"]["type"] in ("full", "freeze"))
    if restarts_from_zero:
        what = "PPO" if stage == "ppo" else f"a {d['method']['type']} reward model"
        yield Problem(
            "$.stage.type",
            f"LLaMA-Factory cannot resume {what} from a checkpoint: a preempted or restarted training starts "
            "again from its first step",
            "keep the training short, or on nodes that are not preempted",
            "warning",
        )
