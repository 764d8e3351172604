"""Cross-field rules of the evaluation gate and of tokenizing once (core.rules, core.rules_llamafactory)."""

from __future__ import annotations

from pathlib import Path

import yaml

from generator.core.rules import validate
from generator.core.spec import spec_from_text

BASE = """
name: demo
storage: {existingClaim: llm-storage}
model: {path: /storage/models/llama-3.2-1b-instruct}
data: {datasets: [qa_dataset]}
resources: {gpu: {product: NVIDIA-A100-SXM4-80GB}}
"""


def problems(extra: str, tmp_path: Path) -> list[str]:
    document = {**yaml.safe_load(BASE), **yaml.safe_load(extra)}
    spec = spec_from_text(yaml.safe_dump(document), str(tmp_path / "experiment.yaml"))
    return [f"{p.path} {p.severity}: {p.message}" for p in validate(spec)]


def test_a_held_out_set_before_serving_raises_nothing(tmp_path: Path) -> None:
    assert problems("evaluate: {dataset: qa_holdout}\n", tmp_path) == []


def test_scoring_the_training_data_or_serving_nothing_is_warned_about(tmp_path: Path) -> None:
    found = problems("evaluate: {dataset: qa_dataset}\nserve: {enabled: false}\n", tmp_path)
    assert found == [
        "$.evaluate.dataset warning: qa_dataset is also a training dataset: its scores overstate what the tuned "
        "model learned",
        "$.evaluate warning: nothing is served: the gate only scores the models (lfk status and lfk report show "
        "the scores)",
    ]


def test_streaming_rules_out_tokenizing_once_unless_it_is_turned_off(tmp_path: Path) -> None:
    assert [p for p in problems("llamafactoryArgs: {streaming: true}\n", tmp_path) if "streamed" in p]
    off = "data: {datasets: [qa_dataset], tokenizeOnce: false}\nllamafactoryArgs: {streaming: true}\n"
    assert not [p for p in problems(off, tmp_path) if "streamed" in p]
