"""The small spec the rule tests start from, and a spec made of it with a few sections replaced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from generator.core.spec import Spec, spec_from_text

BASE = """
name: demo
storage: {existingClaim: llm-storage}
model: {path: /storage/models/llama-3.2-1b-instruct}
data: {datasets: [qa_dataset]}
resources: {gpu: {product: NVIDIA-A100-SXM4-80GB}}
"""


def spec_with(extra: dict[str, Any] | str, source: Path | str = "experiment.yaml") -> Spec:
    """BASE with the top-level sections of `extra` (a mapping or YAML text) replacing its own."""
    replaced = yaml.safe_load(extra) if isinstance(extra, str) else extra
    return spec_from_text(yaml.safe_dump({**yaml.safe_load(BASE), **replaced}), str(source))
