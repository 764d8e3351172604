"""The evaluation gate's scores that need no generated answer, from the model's own likelihoods on held-out
data, tokenized by LLaMA-Factory exactly as its training tokenizes it (its template, cutoff and masks):

- preference-accuracy (DPO, ORPO, SimPO, KTO): on pairs of a chosen and a rejected answer, the share (0-100)
  where the model gives the chosen answer the higher likelihood (the sum of its tokens' log-probabilities
  given the prompt);
- perplexity (pre-training): exp of the mean negative log-likelihood of every token of the held-out text,
  packed into blocks as pre-training packs it (lower is better);
- pairwise-accuracy (a reward model): the share of pairs whose chosen answer its value head scores higher, the
  score read at each sequence's last token as LLaMA-Factory's reward trainer reads it. A model without a
  trained value head has no such score: its reference is chance, 50.

A prediction config of the gate (model, its adapter, template, dataset, cutoff, samples, batch size) gives
the model and the data. Imported by eval_gate.py in the LLaMA-Factory image (torch, transformers,
llamafactory).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from typing import Any

# the gate's metrics of this kind, and the LLaMA-Factory preprocessing each reads its data with
STAGE_OF = {"preference-accuracy": "rm", "perplexity": "pt", "pairwise-accuracy": "rm"}
IGNORE_INDEX = -100  # LLaMA-Factory's label of the tokens a loss leaves out (the prompt)


def load(config: dict[str, Any], metric: str) -> tuple[Any, Any]:
    """The model (with its adapter, for inference) and the evaluation set, by LLaMA-Factory's own loaders."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_model, load_tokenizer

    args = {
        key: config[key]
        for key in (
            "model_name_or_path",
            "adapter_name_or_path",
            "template",
            "trust_remote_code",
            "dataset_dir",
        )
        if config.get(key) is not None
    }
    args.update(
        stage=STAGE_OF[metric],
        do_train=True,  # LLaMA-Factory loads `dataset` for training only: the held-out set is read as one
        finetuning_type="lora",
        dataset=config["eval_dataset"],
        cutoff_len=config.get("cutoff_len", 1024),
        max_samples=config.get("max_samples"),
        preprocessing_num_workers=config.get("preprocessing_num_workers"),
        report_to="none",
        bf16=bool(config.get("bf16")),
    )
    with tempfile.TemporaryDirectory() as scratch:
        args["output_dir"] = scratch
        model_args, data_args, training_args, finetuning_args, _ = get_train_args(args)
        module = load_tokenizer(model_args)
        template = get_template_and_fix_tokenizer(module["tokenizer"], data_args)
        data = get_dataset(template, model_args, data_args, training_args, STAGE_OF[metric], **module)
        model = load_model(
            module["tokenizer"],
            model_args,
            finetuning_args,
            is_trainable=False,
            add_valuehead=metric == "pairwise-accuracy",
        )
    return model, data["train_dataset"]


def padded(model: Any, rows: list[list[int]], pad: int = 0) -> tuple[Any, Any]:
    """Sequences of several lengths as one batch on the model's device: (ids padded on the right, mask)."""
    import torch

    device = next(model.parameters()).device
    width = max(len(row) for row in rows)
    ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows], device=device)
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows], device=device)
    return ids, mask


def sequence_log_likelihoods(model: Any, input_ids: list[list[int]], labels: list[list[int]]) -> list[float]:
    """Each sequence's sum of log-probabilities of its labelled tokens (the answer, not the prompt)."""
    import torch

    ids, mask = padded(model, input_ids)
    target, _ = padded(model, labels, IGNORE_INDEX)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
    shifted = target[:, 1:]
    counted = shifted != IGNORE_INDEX
    picked = log_probs.gather(-1, shifted.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return [float(v) for v in (picked * counted).sum(-1)]


def share_preferred(
    dataset: Any, batch_size: int, score: Callable[[Any, str], list[float]]
) -> tuple[float, int]:
    """(share of pairs whose chosen answer scores higher than the rejected one, 0-100; pairs scored); score
    gives a batch's chosen or rejected side its scores."""
    wins = total = 0
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        chosen, rejected = score(rows, "chosen"), score(rows, "rejected")
        wins += sum(c > r for c, r in zip(chosen, rejected, strict=True))
        total += len(chosen)
    if not total:
        raise ValueError("the held-out set gave no pair to score")
    return 100.0 * wins / total, total


def preference_accuracy(model: Any, dataset: Any, batch_size: int) -> tuple[float, int]:
    """Pairs whose chosen answer the model finds the more likely (the sum of its tokens' log-probabilities)."""
    return share_preferred(
        dataset,
        batch_size,
        lambda rows, side: sequence_log_likelihoods(model, rows[f"{side}_input_ids"], rows[f"{side}_labels"]),
    )


def scores(model: Any, input_ids: list[list[int]]) -> list[float]:
    """A reward model's score of each sequence: its value head at the sequence's last token."""
    import torch

    ids, mask = padded(model, input_ids)
    with torch.no_grad():
        _, _, values = model(input_ids=ids, attention_mask=mask, return_dict=True, use_cache=False)
    return [float(v) for v in values.gather(-1, mask.sum(-1, keepdim=True) - 1).squeeze(-1)]


def pairwise_accuracy(model: Any, dataset: Any, batch_size: int) -> tuple[float, int]:
    """Pairs whose chosen answer a reward model's value head scores higher."""
    return share_preferred(dataset, batch_size, lambda rows, side: scores(model, rows[f"{side}_input_ids"]))


def perplexity(model: Any, dataset: Any, batch_size: int) -> tuple[float, int]:
    """(exp of the mean negative log-likelihood per token; tokens scored)."""
    nll = 0.0
    tokens = 0
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        labels = [[IGNORE_INDEX, *row[1:]] for row in rows["input_ids"]]  # every token after the first
        nll -= sum(sequence_log_likelihoods(model, rows["input_ids"], labels))
        tokens += sum(len(row) - 1 for row in rows["input_ids"])
    if not tokens:
        raise ValueError("the held-out set gave no text to score")
    return math.exp(nll / tokens), tokens


def score(config: dict[str, Any], metric: str) -> dict[str, float]:
    """The gate's scores of one model: the metric, what it was computed over, and the seconds it took."""
    start = time.monotonic()
    model, dataset = load(config, metric)
    batch = int(config.get("per_device_eval_batch_size", 8))
    if metric in ("preference-accuracy", "pairwise-accuracy"):
        rank = preference_accuracy if metric == "preference-accuracy" else pairwise_accuracy
        value, count = rank(model, dataset, batch)
        return {metric: round(value, 2), "pairs": count, "seconds": round(time.monotonic() - start, 1)}
    value, count = perplexity(model, dataset, batch)
    return {metric: round(value, 3), "tokens": count, "seconds": round(time.monotonic() - start, 1)}
