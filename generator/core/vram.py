"""GPU memory of one training process, part by part, from the model's shape and the spec's settings.

- weights: the base model at its real precision per module. QLoRA quantises the decoder's linear layers
  (NF4 with double-quantised constants: about 4.13 bits a weight), while bitsandbytes keeps the embeddings,
  the output layer and the norms in 16 bits (over 1 B parameters for Llama-3 models).
- trainable: what is trained, in fp32 (LLaMA-Factory upcasts trainable weights), with its gradient and
  AdamW's two moments: 16 bytes a parameter. LoRA's parameters follow the rank and the target modules;
  full fine-tuning follows LLaMA-Factory's own table (8 bytes a parameter in pure bf16, 18 with AMP).
- activations: what the backward pass needs. With gradient checkpointing, each layer's input and one
  layer's activations at a time (recomputed); without, every layer's. QLoRA dequantises one layer's weights
  at a time on top. All for batch x cutoff tokens: a batch padded to cutoff_len is the worst case.
- logits: batch x cutoff x vocabulary, in bf16 plus the fp32 log-probabilities the loss keeps for backward;
  with a 128k-152k vocabulary this is gigabytes.
- overhead: the CUDA context, cuBLAS and NCCL workspaces, outside PyTorch's allocator.
- reserve: what PyTorch's caching allocator holds beyond its tensors (fragmentation).

- the stage's parts: DPO, KTO and reward-model examples are two sequences each (chosen and rejected, or an
  answer and its KL pair), which doubles activations and logits; a reference model (DPO but ORPO/SimPO, KTO,
  PPO) is the same weights with the adapter off for LoRA/QLoRA, and a second 16-bit copy otherwise (as
  LLaMA-Factory's create_ref_model loads it); PPO adds a full reward model's 16-bit copy (a LoRA one is an
  adapter on the policy's base) and the KV cache of its generated answers, and trains on prompt + answer.

DeepSpeed ZeRO-3 shards weights, trainable states and the extra models over the data-parallel GPUs; ZeRO-2
the trainable states.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .catalog import ModelInfo

GIB = 1024**3
OVERHEAD_GB = 1.5  # CUDA context (~0.5-1 GB with PyTorch), cuBLAS workspaces, NCCL buffers
RESERVE = 0.10  # the caching allocator's fragmentation, a fraction of what the tensors take
TRAINABLE_BYTES = 16.0  # fp32 weight + fp32 gradient + AdamW's two fp32 moments
LOGIT_BYTES = 6.0  # bf16 logits + fp32 log-probabilities kept for backward
NF4_BITS = 4.127  # 4-bit weights + double-quantised block constants (blocks of 64)
PAIRED_STAGES = ("dpo", "kto", "rm")  # two sequences an example
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class VramEstimate:
    weights_gb: float
    trainable_gb: float
    activations_gb: float
    logits_gb: float
    overhead_gb: float
    reserve_gb: float
    basis: str  # how the weights and trainable states were counted, for messages
    # the stage's own parts (0 for supervised fine-tuning): a frozen reference model's copy, PPO's full reward
    # model, and the KV cache of PPO's generation
    reference_gb: float = 0.0
    reward_gb: float = 0.0
    generation_gb: float = 0.0

    @property
    def total_gb(self) -> float:
        return (
            self.weights_gb
            + self.trainable_gb
            + self.activations_gb
            + self.logits_gb
            + self.overhead_gb
            + self.reserve_gb
            + self.stage_gb
        )

    @property
    def stage_gb(self) -> float:
        return self.reference_gb + self.reward_gb + self.generation_gb

    @property
    def states_gb(self) -> float:
        """Weights and trainable states: what ZeRO shards."""
        return self.weights_gb + self.trainable_gb

    def parts(self) -> dict[str, float]:
        """Every part in GB, rounded for people (and JSON)."""
        stage_parts = ("reference_gb", "reward_gb", "generation_gb")
        return {
            k: round(v, 2)
            for k, v in asdict(self).items()
            if k != "basis" and (k not in stage_parts or v > 0)  # a stage's parts only where it has them
        } | {"total_gb": round(self.total_gb, 2)}


def module_shapes(model: ModelInfo) -> dict[str, tuple[int, int]]:
    """(inputs, outputs) of each linear module of one decoder layer (Llama-style; Phi-3's fused ones too)."""
    h, i, kv = model.hidden_size, model.mlp_size, int(model.hidden_size * model.kv_ratio)
    return {
        "q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
        "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h),
        "qkv_proj": (h, h + 2 * kv), "gate_up_proj": (h, 2 * i),
    }  # fmt: skip


def targeted_modules(model: ModelInfo, target: str) -> list[tuple[int, int]]:
    """(inputs, outputs) of the modules of one layer that `target` names (`all`, or a comma-separated list)."""
    shapes = module_shapes(model)
    names = LORA_TARGETS if target.strip() == "all" else [t.strip() for t in target.split(",") if t.strip()]
    return [shapes[n] for n in names if n in shapes]


def lora_parameters(model: ModelInfo, rank: int, target: str) -> int:
    """A and B of every targeted module in every layer: rank x (inputs + outputs) each."""
    per_layer = sum(rank * (inputs + outputs) for inputs, outputs in targeted_modules(model, target))
    return per_layer * model.num_layers


def oft_parameters(model: ModelInfo, block_size: int, rank: int, target: str) -> int:
    """OFT's rotations of every targeted module in every layer: blocks over the module's inputs, each a
    skew-symmetric block_size x block_size matrix stored as its block_size x (block_size - 1) / 2 entries (rank,
    when set, is the number of blocks instead)."""
    per_layer = 0
    for inputs, _ in targeted_modules(model, target):
        size = max(1, inputs // rank) if rank > 0 else block_size
        per_layer += (inputs // size) * size * (size - 1) // 2
    return per_layer * model.num_layers


def layer_linear_parameters(model: ModelInfo) -> int:
    shapes = module_shapes(model)
    return sum(a * b for n, (a, b) in shapes.items() if n in LORA_TARGETS)


def weight_bytes(model: ModelInfo, method: str, bits: int | None, half_precision: bool) -> tuple[float, str]:
    """The base model in bytes, and how it was counted."""
    total = model.parameters_b * 1e9
    if method == "qlora":
        bits = bits or 4
        sixteen_bit = model.embedding_parameters
        per_weight = NF4_BITS / 8 if bits == 4 else bits / 8 + 0.01
        quantised = max(0.0, total - sixteen_bit) * per_weight
        return (
            quantised + 2.0 * sixteen_bit,
            f"QLoRA {bits}-bit linear layers, 16-bit embeddings and output layer",
        )
    width = 2.0 if half_precision or method == "full" else 4.0
    return width * total, f"{'16' if width == 2 else '32'}-bit base"


def trainable_bytes(
    model: ModelInfo,
    method: str,
    lora_rank: int,
    lora_target: str,
    trainable_layers: int,
    pure_bf16: bool,
    oft: tuple[int, int, str] = (32, 0, "all"),
) -> tuple[float, str]:
    total = model.parameters_b * 1e9
    if method == "full":
        # LLaMA-Factory's table: 8 bytes a parameter in pure bf16, 18 with AMP; the 16-bit weights are counted apart
        per_parameter = 8.0 if pure_bf16 else 18.0
        return (per_parameter - 2.0) * total, f"full fine-tuning, {per_parameter:g} bytes a parameter"
    if method == "freeze":
        share = min(1.0, trainable_layers / model.num_layers)
        return TRAINABLE_BYTES * total * share, f"the last {trainable_layers} layers trained"
    if method == "oft":
        block_size, rank, target = oft
        count = oft_parameters(model, block_size, rank, target)
        shape = f"{rank} blocks" if rank > 0 else f"blocks of {block_size}"
        return TRAINABLE_BYTES * count, f"OFT, {shape} on {target}: {count / 1e6:.0f} M parameters"
    count = lora_parameters(model, lora_rank, lora_target)
    return TRAINABLE_BYTES * count, f"LoRA rank {lora_rank} on {lora_target}: {count / 1e6:.0f} M parameters"


def estimate(
    model: ModelInfo,
    *,
    method: str,
    bits: int | None,
    batch_size: int,
    cutoff_len: int,
    gradient_checkpointing: bool,
    half_precision: bool,
    lora_rank: int = 16,
    lora_target: str = "all",
    trainable_layers: int = 2,
    oft_block_size: int = 32,
    oft_rank: int = 0,
    oft_target: str = "all",
    pure_bf16: bool = False,
    zero_stage: int = 0,
    data_parallel: int = 1,
    stage: str = "sft",
    reference_copy: bool = False,
    reward_copy: bool = False,
    new_tokens: int = 0,
) -> VramEstimate:
    """reference_copy: a frozen reference model is loaded apart (see the module's notes); reward_copy: PPO's
    full reward model; new_tokens: the length of PPO's generated answers."""
    weights, how = weight_bytes(model, method, bits, half_precision)
    trainable, trained = trainable_bytes(
        model,
        method,
        lora_rank,
        lora_target,
        trainable_layers,
        pure_bf16,
        (oft_block_size, oft_rank, oft_target),
    )
    basis = f"{how}; {trained}"
    if zero_stage >= 3 and data_parallel > 1:
        weights, trainable = weights / data_parallel, trainable / data_parallel
        basis += f"; ZeRO-3 over {data_parallel} GPUs"
    elif zero_stage == 2 and data_parallel > 1:
        trainable /= data_parallel
        basis += f"; ZeRO-2 over {data_parallel} GPUs"
    copy = 2.0 * model.parameters_b * 1e9  # a frozen 16-bit model beside the trained one
    reference = copy if reference_copy else 0.0
    reward = copy if reward_copy else 0.0
    if zero_stage >= 3 and data_parallel > 1:
        reference, reward = reference / data_parallel, reward / data_parallel
    sequences = 2 if stage in PAIRED_STAGES else 1
    length = cutoff_len + (new_tokens if stage == "ppo" else 0)
    if sequences > 1:
        basis += f"; {stage}: two sequences an example"
    if reference:
        basis += "; a second 16-bit copy as the reference model"
    if reward:
        basis += "; a full 16-bit reward model"
    act = 2.0 if half_precision else 4.0
    tokens = batch_size * length * sequences
    # one layer's saved tensors, in 16 bits: attention (norm, q, k, v, output) and the SwiGLU MLP (norm, gate,
    # up, their product), with LoRA's dropout masks: about 16 x hidden + 8 x MLP width bytes a token
    one_layer = act / 2 * tokens * (16 * model.hidden_size + 8 * model.mlp_size)
    if gradient_checkpointing:
        activations = act * tokens * model.hidden_size * model.num_layers + one_layer
    else:
        activations = one_layer * model.num_layers
    if method == "qlora":
        activations += 2.0 * layer_linear_parameters(model)  # one layer dequantised for its matmuls
    logits = LOGIT_BYTES * tokens * model.vocab_size
    # PPO generates with the KV cache: keys and values of every layer for each prompt + answer, in 16 bits
    kv_width = int(model.hidden_size * model.kv_ratio)
    generation = 2 * 2.0 * model.num_layers * kv_width * batch_size * length if stage == "ppo" else 0.0
    tensors = weights + trainable + activations + logits + reference + reward + generation
    return VramEstimate(
        weights / 1e9,
        trainable / 1e9,
        activations / 1e9,
        logits / 1e9,
        OVERHEAD_GB,
        RESERVE * tensors / 1e9,
        basis,
        reference / 1e9,
        reward / 1e9,
        generation / 1e9,
    )


def gib_to_gb(gib: float) -> float:
    return gib * GIB / 1e9
