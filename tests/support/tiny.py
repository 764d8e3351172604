"""The storage of the tiny examples (values/tiny-cpu and those beside it): the tiny model made on the spot
(a Qwen2-VL-shaped one for a qwen2_vl template) and the example's data folder, its datasets registered as `lfk
data sync` registers them. Used by `make demo` and the node tier.

    python -m tests.support.tiny STORAGE_ROOT             the model made here (torch and transformers in .venv)
    python -m tests.support.tiny --in-pod STORAGE_ROOT    the model made by `lfk exec` in a pod of the
                                                          example's training image (make demo: its .venv has
                                                          no LLaMA-Factory and no torch)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from generator.checks import datasets
from generator.core.contract import STORAGE_ROOT
from generator.core.spec import load_spec
from generator.core.storage import local
from generator.project import REPO_ROOT

from . import tinymodel

SPEC = REPO_ROOT / "values" / "tiny-cpu" / "experiment.yaml"
# vLLM's CPU attention wants a head size it has kernels for: 64 (hidden 128, 2 heads)
HIDDEN_SIZE, HEADS = 128, 2


def prepare(storage_root: Path, spec_path: Path = SPEC, in_pod: bool = False) -> Path:
    """Model and data of an example on the storage (its data from its own data/ folder; the model only when it
    is not there yet, and never for an example that starts from another's result); the model dir. With in_pod,
    the model is made in a one-off pod of the example's training image (`lfk exec`, the cluster up)."""
    spec = load_spec(spec_path)
    model = local(storage_root, spec.data["model"]["path"])
    data_dir = local(storage_root, spec.data["data"]["dir"])
    data_dir.mkdir(parents=True, exist_ok=True)
    # the whole data/ folder: the datasets and the media they name (images/...)
    shutil.copytree(spec_path.parent / "data", data_dir, dirs_exist_ok=True)
    rows: list[dict[str, Any]] = []
    rows_files = []
    for name, entry in spec.data["data"]["register"].items():
        rows_files.append(data_dir / entry["file"])
        rows += json.loads(rows_files[-1].read_text(encoding="utf-8"))
        datasets.register(data_dir, name, datasets.spec_entry(entry))
    vision = spec.data["model"].get("template") == "qwen2_vl"
    if vision and in_pod:
        raise ValueError(f"{spec_path}: a vision model is made here only, not in a pod")
    make_model = not spec.upstreams and not (model / "config.json").is_file()
    if make_model and not in_pod:
        if vision:
            tinymodel.build_vision_model(model, tinymodel.corpus(rows))
        else:
            tinymodel.build_model(model, tinymodel.corpus(rows), hidden_size=HIDDEN_SIZE, heads=HEADS)
    if make_model and in_pod:
        model.parent.mkdir(parents=True, exist_ok=True)  # made writable below: the pod writes the model there
    for path in [storage_root, *storage_root.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)  # the pods run as uid 1000, this as root
    if make_model and in_pod:
        make_model_in_pod(storage_root, spec_path, model, rows_files)
    return model


SCRIPT_ON_STORAGE = ".tinymodel.py"  # tinymodel.py, where the one-off pod finds it


def make_model_in_pod(storage_root: Path, spec_path: Path, model: Path, rows_files: list[Path]) -> None:
    """tinymodel.py, copied onto the storage, run by `lfk exec` in a pod of the example's training image (uid
    1000, the storage at /storage): the same model as tinymodel.build_model here."""

    def in_pod(path: Path) -> str:
        return f"{STORAGE_ROOT}/{path.relative_to(storage_root)}"

    shutil.copy(Path(tinymodel.__file__), storage_root / SCRIPT_ON_STORAGE)  # readable by all, as copied
    lfk = Path(sys.executable).parent / "lfk"
    command = [
        "python", in_pod(storage_root / SCRIPT_ON_STORAGE), "--hidden-size", str(HIDDEN_SIZE),
        "--heads", str(HEADS), in_pod(model), *map(in_pod, rows_files),
    ]  # fmt: skip
    try:
        subprocess.run([str(lfk), "exec", str(spec_path), "--", *command], check=True)
    finally:
        (storage_root / SCRIPT_ON_STORAGE).unlink(missing_ok=True)


if __name__ == "__main__":
    pod = sys.argv[1:2] == ["--in-pod"]
    print(f"tiny model in {prepare(Path(sys.argv[-1]), in_pod=pod)}")
