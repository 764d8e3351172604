"""A model's chat template from its own files: config.json, tokenizer_config.json and chat_template.jinja,
read from a local folder (the storage) or from the Hugging Face cache (works offline, HF_HUB_OFFLINE=1).

The chat template a model ships is the most direct evidence; the architecture (model_type, vocabulary size)
and the name recorded in config.json come next.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import catalog

# markers of the chat formats in a model's own chat template, most specific first
CHAT_MARKERS: list[tuple[str, str]] = [
    ("<|start_header_id|>", "llama3"),
    ("<start_of_turn>", "gemma"),
    ("<|user|>", "phi"),
    ("[INST]", "mistral"),
]
MODEL_TYPES = {
    "qwen2": "qwen",
    "qwen3": "qwen3",
    "mistral": "mistral",
    "phi3": "phi",
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma3",
}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def template_from_files(config: dict[str, Any], chat_template: str | None) -> str | None:
    model_type = str(config.get("model_type", ""))
    if chat_template:
        if "<|im_start|>" in chat_template:
            return "qwen3" if model_type == "qwen3" else "qwen"
        for marker, template in CHAT_MARKERS:
            if marker in chat_template:
                if template == "mistral" and model_type == "llama":
                    return "llama2"
                return template
    if model_type == "llama":
        vocab = int(config.get("vocab_size", 0))
        return "llama3" if vocab >= 128000 else "llama2" if vocab == 32000 else None
    if model_type in MODEL_TYPES:
        return MODEL_TYPES[model_type]
    return catalog.family_template(str(config.get("_name_or_path", "")))


def _chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8", errors="replace")
    tokenizer_config = _read_json(folder / "tokenizer_config.json") or {}
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
        return " ".join(str(t.get("template", "")) for t in template if isinstance(t, dict))
    return template if isinstance(template, str) else None


def template_from_model_dir(folder: Path) -> str | None:
    """The template of a model in Hugging Face format on a readable folder; None when it cannot tell."""
    config = _read_json(folder / "config.json")
    if config is None:
        return None
    return template_from_files(config, _chat_template(folder))


def template_from_hub_cache(repo_id: str, revision: str = "main") -> str | None:
    """The same, from the files of a hub model already in the local Hugging Face cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found: dict[str, Path] = {}
    for name in ("config.json", "tokenizer_config.json", "chat_template.jinja"):
        path = try_to_load_from_cache(repo_id, name, revision=revision)
        if isinstance(path, str):
            found[name] = Path(path)
    if "config.json" not in found:
        return None
    folder_like = {name: path for name, path in found.items()}
    config = _read_json(folder_like["config.json"]) or {}
    chat = None
    if "chat_template.jinja" in folder_like:
        chat = folder_like["chat_template.jinja"].read_text(encoding="utf-8", errors="replace")
    elif "tokenizer_config.json" in folder_like:
        value = (_read_json(folder_like["tokenizer_config.json"]) or {}).get("chat_template")
        chat = value if isinstance(value, str) else None
    return template_from_files(config, chat)
