"""Readiness checks shared by `lfk check` (reading the storage through a local mount) and the pods' own
preflight (preflight.py), so both judge a model folder, dataset_info.json and a run's checkpoints alike.
Standard library only: it runs in any image.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

DATASET_INFO = "dataset_info.json"
CHECKPOINT = re.compile(r"checkpoint-\d+")


class NotReady(ValueError):
    """A file the run needs exists but cannot be used; the message names it."""


def missing_model_files(folder: str) -> list[str]:
    """What a Hugging Face model folder lacks to load: config, tokenizer config, a tokenizer, weights."""
    files = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    missing = [name for name in ("config.json", "tokenizer_config.json") if name not in files]
    if not {"tokenizer.json", "tokenizer.model"} & files:
        missing.append("tokenizer.json or tokenizer.model")
    if not any(name.endswith((".safetensors", ".bin")) for name in files):
        missing.append("weights (*.safetensors)")
    return missing


def read_dataset_info(dataset_dir: str) -> dict[str, Any]:
    """The dataset entries of DIR/dataset_info.json; {} when there is none yet."""
    path = os.path.join(dataset_dir, DATASET_INFO)
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise NotReady(f"cannot read {path}: {exc}") from None
    if not isinstance(info, dict):
        raise NotReady(f"{path}: expected an object of dataset entries")
    return info


def dataset_problem(dataset_dir: str, info: dict[str, Any], name: str) -> str | None:
    """Why LLaMA-Factory cannot load dataset NAME: not registered, or its file missing; None when it can."""
    entry = info.get(name)
    if entry is None:
        return f"not registered in {os.path.join(dataset_dir, DATASET_INFO)}"
    file_name = entry.get("file_name")
    if file_name and not os.path.exists(os.path.join(dataset_dir, file_name)):
        return f"{os.path.join(dataset_dir, file_name)} not found"
    return None


def incomplete_checkpoints(output_dir: str) -> list[str]:
    """checkpoint-N folders without trainer_state.json, which the trainer writes last: what a pod killed while
    saving leaves behind. Resuming picks the highest N and fails on it ("Can't find a valid checkpoint")."""
    if not os.path.isdir(output_dir):
        return []
    return [
        os.path.join(output_dir, name)
        for name in sorted(os.listdir(output_dir))
        if CHECKPOINT.fullmatch(name)
        and not os.path.isfile(os.path.join(output_dir, name, "trainer_state.json"))
    ]
