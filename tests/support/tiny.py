"""The storage of the tiny examples (values/tiny-cpu and those beside it): the tiny model made on the spot
(a Qwen2-VL-shaped one for a qwen2_vl template) and the example's data folder, its datasets registered as `lfk
data sync` registers them. Used by `make demo` and the node tier.

    python -m tests.support.tiny STORAGE_ROOT
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from generator.checks import datasets
from generator.core.spec import load_spec
from generator.core.storage import local
from generator.project import REPO_ROOT

from . import tinymodel

SPEC = REPO_ROOT / "values" / "tiny-cpu" / "experiment.yaml"
# vLLM's CPU attention wants a head size it has kernels for: 64 (hidden 128, 2 heads)
HIDDEN_SIZE, HEADS = 128, 2


def prepare(storage_root: Path, spec_path: Path = SPEC) -> Path:
    """Model and data of an example on the storage (its data from its own data/ folder; the model only when it
    is not there yet, and never for an example that starts from another's result); the model dir."""
    spec = load_spec(spec_path)
    model = local(storage_root, spec.data["model"]["path"])
    data_dir = local(storage_root, spec.data["data"]["dir"])
    data_dir.mkdir(parents=True, exist_ok=True)
    # the whole data/ folder: the datasets and the media they name (images/...)
    shutil.copytree(spec_path.parent / "data", data_dir, dirs_exist_ok=True)
    rows: list[dict[str, Any]] = []
    for name, entry in spec.data["data"]["register"].items():
        rows += json.loads((data_dir / entry["file"]).read_text(encoding="utf-8"))
        datasets.register(data_dir, name, datasets.spec_entry(entry))
    if not spec.upstreams and not (model / "config.json").is_file():
        if spec.data["model"].get("template") == "qwen2_vl":
            tinymodel.build_vision_model(model, tinymodel.corpus(rows))
        else:
            tinymodel.build_model(model, tinymodel.corpus(rows), hidden_size=HIDDEN_SIZE, heads=HEADS)
    for path in [storage_root, *storage_root.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)  # the pods run as uid 1000, this as root
    return model


if __name__ == "__main__":
    print(f"tiny model in {prepare(Path(sys.argv[1]))}")
