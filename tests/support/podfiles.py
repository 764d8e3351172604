"""The pods' scripts (charts/llama-factory/files/) on this machine: imported as the pods import them, copied
into a folder standing in for the pods' /scripts, and the small real files they read (safetensors weights,
model folders) made on the spot."""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

FILES = Path(__file__).resolve().parents[2] / "charts" / "llama-factory" / "files"
# bytes per element of the safetensors dtypes the tests use
ELEMENT_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "I64": 8}


def load(name: str) -> ModuleType:
    """A pod script as a module, run anew; the scripts beside it importable, as they are in the pod's
    /scripts."""
    if str(FILES) not in sys.path:
        sys.path.insert(0, str(FILES))
    spec = importlib.util.spec_from_file_location(name, FILES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scripts_folder(dest: Path, *names: str) -> Path:
    """dest holding the named scripts and what every script needs beside it (podlib.py, contract.json): a
    pod's /scripts. Returns dest."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in {*names, "podlib.py", "contract.json"}:
        shutil.copyfile(FILES / name, dest / name)
    return dest


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> Path:
    """A .safetensors file in the format's own layout (8-byte little-endian header length, JSON header, the
    tensors' bytes, here zeros): name -> (dtype, shape)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = ELEMENT_BYTES[dtype]
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * offset)
    return path


def model_folder(folder: Path, tensors: dict[str, tuple[str, list[int]]]) -> Path:
    """A Hugging Face model folder: config, generation config, tokenizer files and one safetensors file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "generation_config.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text("{}")
    (folder / "tokenizer.json").write_text("{}")
    write_safetensors(folder / "model.safetensors", tensors)
    return folder


def ready_training(folder: Path) -> dict[str, Any]:
    """A training config LLaMA-Factory accepts, its model folder and registered dataset made in folder (a
    model whose files are placeholders: the preflight and the argument parse read no weights)."""
    model, data = folder / "model", folder / "data"
    model.mkdir()
    data.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "tokenizer_config.json").write_text("{}")
    (model / "tokenizer.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"\0" * 16)
    (data / "qa.json").write_text('[{"instruction": "q", "output": "a"}]')
    (data / "dataset_info.json").write_text('{"qa": {"file_name": "qa.json"}}')
    return {
        "model_name_or_path": str(model), "stage": "sft", "do_train": True, "finetuning_type": "lora",
        "dataset": "qa", "dataset_dir": str(data), "template": "llama3",
        "output_dir": str(folder / "output"), "report_to": "none",
    }  # fmt: skip
