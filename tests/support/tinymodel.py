"""A tiny Llama-architecture model with random weights and a tokenizer that speaks the llama3 template,
made on the spot from a few sentences: nothing is downloaded. LLaMA-Factory trains and exports it, vLLM on
CPU serves it, transformers loads it.

    python -m tests.support.tinymodel [--hidden-size N --heads N] OUT_DIR [ROWS_FILE...]

Needs torch, transformers and tokenizers only (no project code): it also runs alone, as a file, in a pod of
the llamafactory image (tests/support/tiny.py, make demo).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|pad|>",
]
# ChatML, another family's chat template than the tiny model's llama3: what a server with the wrong tokenizer or
# --chat-template would format chats with
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
FILLER = "The quick brown fox jumps over the lazy dog. 0123456789 user assistant system"


def byte_level_bpe(corpus: list[str], special_tokens: list[str]) -> Any:
    """A byte-level BPE tokenizer of 400 tokens learnt from the corpus, the special tokens first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=special_tokens, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(corpus, trainer)
    return core


def build_tokenizer(corpus: list[str]) -> Any:
    """A byte-level BPE tokenizer with the llama3 template's special tokens (eos = <|eot_id|>)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=byte_level_bpe(corpus, SPECIAL_TOKENS),
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|pad|>",
    )


def build_model(directory: Path, corpus: list[str], hidden_size: int = 64, heads: int = 4) -> None:
    """A 2-layer Llama with random weights, saved in bfloat16 next to its tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer: Any = build_tokenizer(corpus)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model: Any = LlamaForCausalLM(config)
    model = model.to(torch.bfloat16)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


# Qwen2-VL's chat and vision tokens, which LLaMA-Factory's qwen2_vl template and plugin look up
VL_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
    "<|video_pad|>",
]  # fmt: skip


def build_vision_model(directory: Path, corpus: list[str]) -> None:
    """A Qwen2-VL shaped model with random weights (2 text layers, 1 vision block, ~0.2 M parameters), its
    byte-level BPE tokenizer with Qwen2-VL's special tokens, and its processor (images scaled to at most
    112 x 112 pixels): what LLaMA-Factory's qwen2_vl template and plugin need to train on images."""
    import torch
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer: Any = PreTrainedTokenizerFast(
        tokenizer_object=byte_level_bpe(corpus, VL_SPECIAL_TOKENS),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in VL_SPECIAL_TOKENS}
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 512,
            "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]},
        },
        vision_config={
            "depth": 1, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "patch_size": 14,
            "spatial_merge_size": 2, "temporal_patch_size": 2, "in_chans": 3, "mlp_ratio": 2,
        },
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )  # fmt: skip
    torch.manual_seed(0)
    model: Any = Qwen2VLForConditionalGeneration(config)
    model.save_pretrained(directory, safe_serialization=True)
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112),
        video_processor=Qwen2VLVideoProcessor(),
        tokenizer=tokenizer,
    )
    processor.save_pretrained(directory)


def texts_of(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Every string of alpaca rows and ShareGPT conversations: what the tokenizer learns its merges from."""
    texts: list[str] = []
    for row in rows:
        for value in row.values():
            if isinstance(value, str):
                texts.append(value)
            elif isinstance(value, list):
                texts += [m.get("value") or m.get("content") or "" for m in value if isinstance(m, dict)]
    return texts


def corpus(rows: Iterable[dict[str, Any]]) -> list[str]:
    return texts_of(rows) * 3 + [FILLER]


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="tinymodel")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "rows_files", nargs="*", type=Path, help="alpaca or ShareGPT rows (JSON) to learn from"
    )
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for name in args.rows_files:
        rows += json.loads(name.read_text(encoding="utf-8"))
    build_model(args.out, corpus(rows), hidden_size=args.hidden_size, heads=args.heads)
    print(f"tiny model in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
