"""`lfk validate --deep`: configs LLaMA-Factory itself rejects are caught and located in the spec."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from generator.checks.deep import deep_problems
from generator.cli import cli
from generator.core.spec import spec_from_text

BASE = """
name: deep
storage: {existingClaim: llm-storage}
model: {path: /storage/models/llama-3.1-8b-instruct}
data: {datasets: [qa_dataset]}
resources: {gpu: {memoryGiB: 80}}
"""


def problems(extra: str) -> list[tuple[str, str]]:
    return [(p.path, p.message) for p in deep_problems(spec_from_text(BASE + extra, "experiment.yaml"))]


@pytest.mark.parametrize(
    ("extra", "path", "message"),
    [
        (
            "llamafactoryArgs: {streaming: true}\n",
            "$.training.maxSteps",
            "Please specify `max_steps` in streaming mode.",
        ),
        (
            "llamafactoryArgs: {eval_strategy: steps}\n",
            "$.data.valSize",
            "Please make sure eval_dataset be provided or val_size >1e-6",
        ),
        (
            "method: {type: qlora, quantization: {bits: 4}}\nllamafactoryArgs: {pissa_init: true}\n",
            "$.llamafactoryArgs.pissa_init",
            "Please use scripts/pissa_init.py to initialize PiSSA for a quantized model.",
        ),
    ],
    ids=["streaming-without-max-steps", "evaluation-without-data", "pissa-on-a-quantised-base"],
)
def test_llamafactory_rejections_are_located_in_the_spec(extra: str, path: str, message: str) -> None:
    found = problems(extra)
    assert found == [(path, f"LLaMA-Factory rejects the training config: {message}")]


def test_the_examples_each_stage_media_settings_and_qlora_pass_the_real_parser(repo_root: Path) -> None:
    cases = repo_root / "tests" / "cases" / "valid"
    # (the import cases cover the reward model and SimPO)
    stages = [cases / name / "experiment.yaml" for name in ("vision-language", "dpo-after-sft", "kto-lora")]
    for spec in [*sorted(repo_root.glob("values/*/experiment.yaml")), *stages]:
        assert deep_problems(spec_from_text(spec.read_text(), str(spec))) == [], spec
    assert problems("method: {type: qlora, quantization: {bits: 8}}\n") == []


def test_imported_configs_pass_the_real_parser(repo_root: Path, tmp_path: Path) -> None:
    """lfk import of each config in tests/cases/import: the spec it writes renders a training config that
    LLaMA-Factory's own argument parser accepts."""
    for config in sorted((repo_root / "tests" / "cases" / "import").glob("*.yaml")):
        if config.stem == "lora_ppo":
            continue  # refused by lfk validate: LLaMA-Factory 0.9.5 cannot train PPO (test_stages shows it)
        folder = tmp_path / config.stem
        result = CliRunner().invoke(
            cli, ["import", str(config), "--name", "imported", "--output", str(folder)]
        )
        assert result.exit_code == 0, result.output
        spec = folder / "experiment.yaml"
        assert deep_problems(spec_from_text(spec.read_text(), str(spec))) == [], config


def test_a_different_image_version_is_a_warning() -> None:
    spec = spec_from_text(BASE + "images: {llamafactory: 'hiyouga/llamafactory:0.9.4'}\n", "experiment.yaml")
    [warning] = deep_problems(spec)
    assert warning.severity == "warning" and warning.path == "$.images.llamafactory"
    assert "installed llamafactory 0.9.5" in warning.message and "deploys 0.9.4" in warning.message


def test_cli_deep_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "experiment.yaml"
    # streaming without max_steps (tokenizing once is off: a streamed set cannot be saved)
    streamed = BASE.replace(
        "data: {datasets: [qa_dataset]}", "data: {datasets: [qa_dataset], tokenizeOnce: false}"
    )
    bad.write_text(streamed + "llamafactoryArgs: {streaming: true}\n")
    result = CliRunner().invoke(cli, ["validate", "--deep", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}::$.training.maxSteps: LLaMA-Factory rejects the training config" in result.output
