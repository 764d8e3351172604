"""What the generator knows about popular models and GPUs, without reading any file or network.

Model architecture numbers come from the models' published config.json files; GPU memory from the vendors'
datasheets. Models not listed here are recognised by family from their name; their size can be given in the
spec (`model.parametersB`) or read from a local config.json by the deep checks.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    """Architecture facts used for the template and the VRAM estimate (from the models' config.json)."""

    parameters_b: float
    hidden_size: int
    num_layers: int
    vocab_size: int
    template: str
    intermediate_size: int = 0  # the MLP's width; 0: about 3.5 x hidden, as in SwiGLU models
    kv_ratio: float = 0.25  # key/value heads over attention heads (grouped-query attention)
    tied_embeddings: bool = False  # the output layer shares the input embeddings' weights

    @property
    def mlp_size(self) -> int:
        return self.intermediate_size or int(3.5 * self.hidden_size)

    @property
    def embedding_parameters(self) -> int:
        """Input embeddings and the output layer (once when they are tied): bitsandbytes keeps them 16-bit."""
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)


# keyed by the lower-cased last part of the hub id: the same name a person gives the folder on storage
KNOWN_MODELS: dict[str, ModelInfo] = {
    "llama-3.1-8b": ModelInfo(8.03, 4096, 32, 128256, "llama3", 14336, 8 / 32),
    "llama-3.1-8b-instruct": ModelInfo(8.03, 4096, 32, 128256, "llama3", 14336, 8 / 32),
    "llama-3.1-70b": ModelInfo(70.6, 8192, 80, 128256, "llama3", 28672, 8 / 64),
    "llama-3.1-70b-instruct": ModelInfo(70.6, 8192, 80, 128256, "llama3", 28672, 8 / 64),
    "llama-3.3-70b-instruct": ModelInfo(70.6, 8192, 80, 128256, "llama3", 28672, 8 / 64),
    "llama-3.2-1b": ModelInfo(1.24, 2048, 16, 128256, "llama3", 8192, 8 / 32, True),
    "llama-3.2-1b-instruct": ModelInfo(1.24, 2048, 16, 128256, "llama3", 8192, 8 / 32, True),
    "llama-3.2-3b": ModelInfo(3.21, 3072, 28, 128256, "llama3", 8192, 8 / 24, True),
    "llama-3.2-3b-instruct": ModelInfo(3.21, 3072, 28, 128256, "llama3", 8192, 8 / 24, True),
    "qwen2.5-0.5b-instruct": ModelInfo(0.49, 896, 24, 151936, "qwen", 4864, 2 / 14, True),
    "qwen2.5-1.5b-instruct": ModelInfo(1.54, 1536, 28, 151936, "qwen", 8960, 2 / 12, True),
    "qwen2.5-3b-instruct": ModelInfo(3.09, 2048, 36, 151936, "qwen", 11008, 2 / 16, True),
    "qwen2.5-7b": ModelInfo(7.62, 3584, 28, 152064, "qwen", 18944, 4 / 28),
    "qwen2.5-7b-instruct": ModelInfo(7.62, 3584, 28, 152064, "qwen", 18944, 4 / 28),
    "qwen2.5-14b-instruct": ModelInfo(14.7, 5120, 48, 152064, "qwen", 13824, 8 / 40),
    "qwen2.5-72b-instruct": ModelInfo(72.7, 8192, 80, 152064, "qwen", 29568, 8 / 64),
    "qwen3-8b": ModelInfo(8.19, 4096, 36, 151936, "qwen3", 12288, 8 / 32),
    "mistral-7b-v0.1": ModelInfo(7.24, 4096, 32, 32000, "mistral", 14336, 8 / 32),
    "mistral-7b-instruct-v0.2": ModelInfo(7.24, 4096, 32, 32000, "mistral", 14336, 8 / 32),
    "mistral-7b-instruct-v0.3": ModelInfo(7.25, 4096, 32, 32768, "mistral", 14336, 8 / 32),
    "phi-3-mini-4k-instruct": ModelInfo(3.82, 3072, 32, 32064, "phi", 8192, 1.0),
    "phi-3-mini-128k-instruct": ModelInfo(3.82, 3072, 32, 32064, "phi", 8192, 1.0),
    "gemma-2-9b-it": ModelInfo(9.24, 3584, 42, 256000, "gemma", 14336, 8 / 16, True),
}

# (pattern on the model's name, template): the first match wins, so the specific ones come first
FAMILY_TEMPLATES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"llama-?3"), "llama3"),
    (re.compile(r"llama-?2"), "llama2"),
    (re.compile(r"qwen-?3"), "qwen3"),
    (re.compile(r"qwen-?2"), "qwen"),
    (re.compile(r"mistral|ministral"), "mistral"),
    (re.compile(r"phi-?4"), "phi4"),
    (re.compile(r"phi-?3"), "phi"),
    (re.compile(r"gemma-?3"), "gemma3"),
    (re.compile(r"gemma"), "gemma"),
]

_SIZE_IN_NAME = re.compile(r"(?<![0-9.])(\d+(?:\.\d+)?)b(?![a-z])")


def model_key(path_or_id: str) -> str:
    return path_or_id.rstrip("/").rsplit("/", 1)[-1].lower()


def known_model(*names: str | None) -> ModelInfo | None:
    for name in names:
        if name and (info := KNOWN_MODELS.get(model_key(name))):
            return info
    return None


def family_template(*names: str | None) -> str | None:
    """The chat template of a model family recognised by name (hub id or folder name)."""
    for name in names:
        if not name:
            continue
        key = model_key(name)
        for pattern, template in FAMILY_TEMPLATES:
            if pattern.search(key):
                return template
    return None


def size_from_name(*names: str | None) -> float | None:
    """`Llama-3.1-8B-Instruct` -> 8.0: parameter count in billions when the name states it."""
    for name in names:
        if name and (m := _SIZE_IN_NAME.search(model_key(name))):
            return float(m.group(1))
    return None


def approximate_architecture(parameters_b: float, template: str = "") -> ModelInfo:
    """A decoder-only transformer has about 12·L·h² weights with L ≈ h/128; good enough for activations."""
    hidden = (parameters_b * 1e9 * 128 / 12) ** (1 / 3)
    hidden = int(round(hidden / 256) * 256) or 256
    return ModelInfo(parameters_b, hidden, max(1, math.ceil(hidden / 128)), 128000, template)


# GPU memory in GiB by the product label nvidia.com/gpu.product (GPU feature discovery's spelling)
KNOWN_GPUS: dict[str, float] = {
    "NVIDIA-B200": 180,
    "NVIDIA-H200": 141,
    "NVIDIA-H100-80GB-HBM3": 80,
    "NVIDIA-H100-PCIe": 80,
    "NVIDIA-H100-NVL": 94,
    "NVIDIA-A100-SXM4-80GB": 80,
    "NVIDIA-A100-80GB-PCIe": 80,
    "NVIDIA-A100-SXM4-40GB": 40,
    "NVIDIA-A100-PCIE-40GB": 40,
    "NVIDIA-L40S": 48,
    "NVIDIA-L40": 48,
    "NVIDIA-RTX-A6000": 48,
    "NVIDIA-L4": 24,
    "NVIDIA-A10G": 24,
    "NVIDIA-A10": 24,
    "NVIDIA-GeForce-RTX-4090": 24,
    "Tesla-V100-SXM2-32GB": 32,
    "Tesla-V100-SXM2-16GB": 16,
    "Tesla-T4": 16,
}

# Peak dense tensor TFLOPS for training's precision (BF16; FP16 where the GPU has no BF16), without sparsity,
# from the vendors' datasheets: the denominator of the training's MFU
PEAK_TFLOPS: dict[str, float] = {
    "NVIDIA-B200": 2250,
    "NVIDIA-H200": 989,
    "NVIDIA-H100-80GB-HBM3": 989,
    "NVIDIA-H100-PCIe": 756,
    "NVIDIA-H100-NVL": 835,
    "NVIDIA-A100-SXM4-80GB": 312,
    "NVIDIA-A100-80GB-PCIe": 312,
    "NVIDIA-A100-SXM4-40GB": 312,
    "NVIDIA-A100-PCIE-40GB": 312,
    "NVIDIA-L40S": 362,
    "NVIDIA-L40": 181,
    "NVIDIA-RTX-A6000": 155,
    "NVIDIA-L4": 121,
    "NVIDIA-A10": 125,
    "NVIDIA-GeForce-RTX-4090": 165,
    "Tesla-V100-SXM2-32GB": 125,
    "Tesla-V100-SXM2-16GB": 125,
    "Tesla-T4": 65,
}

# starts only at the first digit of a run: a long run of digits without "GB" is one linear scan, not quadratic
_MEMORY_IN_LABEL = re.compile(r"(?<!\d)(\d+)GB", re.IGNORECASE)


def gpu_memory_gib(product: str) -> float | None:
    if product in KNOWN_GPUS:
        return KNOWN_GPUS[product]
    lowered = {k.lower(): v for k, v in KNOWN_GPUS.items()}
    if product.lower() in lowered:
        return lowered[product.lower()]
    m = _MEMORY_IN_LABEL.search(product)
    return float(m.group(1)) if m else None


def peak_tflops(product: str) -> float | None:
    """The GPU's peak dense BF16 (or FP16) TFLOPS, when the product is one the catalog knows."""
    return next((v for k, v in PEAK_TFLOPS.items() if k.lower() == product.lower()), None)
