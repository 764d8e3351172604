"""A new experiment spec from the questions the usage guide asks: which model, which data format, which method,
which GPU. Pure: answers in, the spec's text out (validated by the caller before anything is written)."""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from . import catalog
from .rules.llamafactory import PLUS_IMAGE
from .storage import MODELS_DIR

MODELINE = "# yaml-language-server: $schema={schema}\n"
METHODS = ("lora", "qlora", "oft", "full", "freeze")
FORMATS = ("alpaca", "sharegpt")


@dataclass(frozen=True)
class Answers:
    name: str
    model: str  # a hub id (org/name) or a folder on the storage (/storage/models/...)
    data_format: str = "alpaca"
    dataset: str = "my_dataset"
    data_file: str = "my_dataset.json"
    method: str = "lora"
    gpu_product: str = "NVIDIA-A100-SXM4-80GB"
    gpus: int = 1
    namespace: str = "llm-training"
    storage: str = "nfs.example.internal:/exports/llm"  # server:/path, or the name of an existing claim


def model_block(model: str) -> dict[str, object]:
    """A hub id is downloaded into /storage/models/<its name> on first use; a storage path is used as it is."""
    if model.startswith("/"):
        return {"path": model}
    return {"path": f"{MODELS_DIR}/{catalog.model_key(model)}", "hub": {"id": model}}


def storage_block(storage: str) -> dict[str, object]:
    if ":" in storage:
        server, path = storage.split(":", 1)
        return {"nfs": {"server": server, "path": path}}
    return {"existingClaim": storage}


def method_block(method: str) -> dict[str, object]:
    if method == "qlora":
        return {"type": "qlora", "lora": {"rank": 8, "alpha": 16}, "quantization": {"bits": 4}}
    if method == "lora":
        return {"type": "lora", "lora": {"rank": 16, "alpha": 32}}
    return {"type": method}


def spec_text(answers: Answers, schema: str) -> str:
    """The spec as YAML: the editor's schema modeline, a comment on where each part comes from, the answers."""
    entry: dict[str, object] = {"file": answers.data_file, "format": answers.data_format}
    if answers.data_format == "sharegpt":
        entry["columns"] = {"messages": "conversations"}
    data = {
        "name": answers.name,
        "namespace": answers.namespace,
        "storage": storage_block(answers.storage),
        "model": model_block(answers.model),
        "data": {"datasets": [answers.dataset], "register": {answers.dataset: entry}},
        "method": method_block(answers.method),
        "resources": {"gpus": answers.gpus, "gpu": {"product": answers.gpu_product}},
    }
    if answers.method == "qlora":  # bitsandbytes: not in the official image, in the project's own
        data["images"] = {"llamafactory": PLUS_IMAGE}
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110)
    return (
        MODELINE.format(schema=schema)
        + f"# {answers.name}: made by `lfk new`; every key left out takes the default in the schema.\n"
        + "# Next: put the data file into the dataset directory (lfk data validate / sync), then lfk validate.\n"
        + body
    )
