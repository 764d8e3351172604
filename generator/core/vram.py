"""GPU memory estimate for one training pod.

Baseline: LLaMA-Factory's table of GB per billion parameters by method (weights, gradients and optimiser
states). Refined by the batch: activations kept for the backward pass (one hidden state per layer with
gradient checkpointing, about 34 bytes per token and hidden unit per layer without it, flash/SDPA attention)
and the fp32 logits of the loss, which dominate for large vocabularies. DeepSpeed ZeRO shards the
states over the data-parallel GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import ModelInfo

GIB = 1024**3
# CUDA context, NCCL buffers, allocator fragmentation
OVERHEAD_GB = 1.5


@dataclass(frozen=True)
class VramEstimate:
    states_gb: float  # weights + gradients + optimiser states
    activations_gb: float
    logits_gb: float
    overhead_gb: float
    basis: str  # how the states were counted, for messages

    @property
    def total_gb(self) -> float:
        return self.states_gb + self.activations_gb + self.logits_gb + self.overhead_gb


def state_bytes_per_parameter(
    method: str, bits: int | None, half_precision: bool, pure_bf16: bool
) -> tuple[float, str]:
    """LLaMA-Factory's rule of thumb: GB per billion parameters for the weights, gradients and optimiser."""
    if method == "full":
        return (
            (8.0, "full, pure bf16: 8 GB per B")
            if pure_bf16
            else (18.0, "full, mixed precision: 18 GB per B")
        )
    if method == "qlora":
        b = bits or 4
        return b / 8, f"QLoRA {b}-bit: {b / 8:g} GB per B"
    weight = 2.0 if half_precision else 4.0
    return weight, f"{method}, {'16' if half_precision else '32'}-bit base: {weight:g} GB per B"


def estimate(
    model: ModelInfo,
    *,
    method: str,
    bits: int | None,
    batch_size: int,
    cutoff_len: int,
    gradient_checkpointing: bool,
    half_precision: bool,
    pure_bf16: bool = False,
    zero_stage: int = 0,
    data_parallel: int = 1,
) -> VramEstimate:
    per_param, basis = state_bytes_per_parameter(method, bits, half_precision, pure_bf16)
    states = per_param * model.parameters_b
    if zero_stage >= 3 and data_parallel > 1:
        # ZeRO-3 shards everything: weights, gradients, optimiser states
        states = states / data_parallel
        basis += f", ZeRO-3 over {data_parallel} GPUs"
    elif zero_stage == 2 and data_parallel > 1 and method == "full":
        # mixed precision Adam: 2 bytes weights + 2 gradients + 12 fp32 master/moments (+2 buffers);
        # ZeRO-2 keeps the weights whole and shards the rest (adapters' states are too small to matter)
        weights = 2.0 * model.parameters_b
        states = weights + (states - weights) / data_parallel
        basis += f", ZeRO-2 over {data_parallel} GPUs"
    act_bytes = 2.0 if half_precision else 4.0
    tokens = batch_size * cutoff_len
    per_layer = 17.0 * act_bytes * tokens * model.hidden_size  # 34 bytes per token x hidden in 16-bit
    if gradient_checkpointing:
        activations = act_bytes * tokens * model.hidden_size * model.num_layers + per_layer
    else:
        activations = per_layer * model.num_layers
    logits = 6.0 * tokens * model.vocab_size  # bf16 logits + their fp32 copy for the loss
    return VramEstimate(states, activations / 1e9, logits / 1e9, OVERHEAD_GB, basis)


def gib_to_gb(gib: float) -> float:
    return gib * GIB / 1e9
