"""Rules on the training: the chat template, the evaluation gate, the learning rate and the VRAM estimate
against the GPU (with the advice that lowers it)."""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from .. import lfinfo
from ..components import is_adapter_method
from ..facts import Facts, infer_template, spec_media
from ..problems import Problem
from ..spec import Spec
from ..trainlog import LEARNING_RATE_ADVICE
from ..vram import gib_to_gb
from .registry import check


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
        # pre-training reads raw text without the template, which then shapes only how the result is served
        raw_text = spec.data["stage"]["type"] == "pt"
        yield Problem(
            "$.model.template",
            f"template {given!r} does not match the model family, which uses {expected!r}"
            + (": pre-training does not use it, but vLLM serves the result with it" if raw_text else ""),
            f"set template: {expected} (the same template must be used for training and serving)",
            "warning" if raw_text else "error",
        )


@check
def media_template(spec: Spec, facts: Facts) -> Iterator[Problem]:
    """Images, videos or audio in the data need a template whose plugin takes them (LLaMA-Factory stops
    otherwise: "This model does not support image input")."""
    media = spec_media(spec.data)
    takes = lfinfo.info().media_templates.get(facts.template or "", ())
    for medium, datasets in media.items():
        if medium not in takes:
            some = sorted(t for t, kinds in lfinfo.info().media_templates.items() if medium in kinds)[:6]
            yield Problem(
                "$.model.template",
                f"dataset {datasets[0]} has {medium}, which template {facts.template!r} does not take "
                f"(LLaMA-Factory stops on them)",
                f"train a multimodal model of the family with its template, e.g. {', '.join(some)}",
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
        f"{est.trainable_gb:.1f}, activations {est.activations_gb:.1f}, logits {est.logits_gb:.1f}, "
        + (f"the stage's other models and generation {est.stage_gb:.1f}, " if est.stage_gb else "")
        + "CUDA and "
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
    if d["method"]["type"] in ("lora", "oft", "full", "freeze"):
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
