"""`lfk validate --deep`: configs LLaMA-Factory itself rejects are caught and located in the spec."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from generator.checks.deep import Checker, deep_problems
from generator.cli import cli
from generator.core.spec import spec_from_text

BASE = """
name: deep
storage: {existingClaim: llm-storage}
model: {path: /storage/models/llama-3.1-8b-instruct}
data: {datasets: [qa_dataset]}
resources: {gpu: {memoryGiB: 80}}
"""


@pytest.fixture(scope="module")
def checker() -> Iterator[Checker]:
    """One LLaMA-Factory child for the module's specs, as `lfk validate --deep` uses one for all of its own."""
    with Checker() as shared:
        yield shared


def problems(extra: str, checker: Checker | None = None) -> list[tuple[str, str]]:
    spec = spec_from_text(BASE + extra, "experiment.yaml")
    return [(p.path, p.message) for p in deep_problems(spec, checker=checker)]


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
def test_llamafactory_rejections_are_located_in_the_spec(
    extra: str, path: str, message: str, checker: Checker
) -> None:
    found = problems(extra, checker)
    assert found == [(path, f"LLaMA-Factory rejects the training config: {message}")]


def test_the_examples_each_stage_media_settings_and_qlora_pass_the_real_parser(
    repo_root: Path, checker: Checker
) -> None:
    cases = repo_root / "tests" / "cases" / "valid"
    # (the import cases cover the reward model and SimPO)
    stages = [cases / name / "experiment.yaml" for name in ("vision-language", "dpo-after-sft", "kto-lora")]
    for spec in [*sorted(repo_root.glob("values/*/experiment.yaml")), *stages]:
        assert deep_problems(spec_from_text(spec.read_text(), str(spec)), checker=checker) == [], spec
    assert problems("method: {type: qlora, quantization: {bits: 8}}\n", checker) == []


def test_imported_configs_pass_the_real_parser(repo_root: Path, tmp_path: Path, checker: Checker) -> None:
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
        assert deep_problems(spec_from_text(spec.read_text(), str(spec)), checker=checker) == [], config


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


def test_one_child_answers_many_specs_as_a_child_each_would(checker: Checker) -> None:
    """A rejected config between two accepted ones: the shared child's answers are those of a fresh child each
    (`lfk validate --deep` of several specs in one call, and alone), and a rejection leaves nothing behind."""
    extras = ["", "llamafactoryArgs: {streaming: true}\n", "training: {learningRate: 1.0e-4}\n"]
    assert [problems(e, checker) for e in extras] == [problems(e) for e in extras]
    assert problems(extras[1], checker) == [
        (
            "$.training.maxSteps",
            "LLaMA-Factory rejects the training config: Please specify `max_steps` in streaming mode.",
        )
    ]


def test_a_child_that_dies_is_reported_with_its_last_words() -> None:
    with Checker() as dying:
        dying.ask({"train": None, "merge": None, "eval": None})
        assert dying.process is not None
        dying.process.kill()
        dying.process.wait()
        with pytest.raises(RuntimeError, match="the LLaMA-Factory check did not run"):
            dying.ask({"train": None, "merge": None, "eval": None})


def test_validate_deep_of_several_specs_starts_one_llamafactory(repo_root: Path) -> None:
    """Every example through `lfk validate --deep` at once: valid, and one child process for all of them."""
    specs = sorted(str(p) for p in repo_root.glob("values/*/experiment.yaml"))
    script = (
        "import subprocess, sys\n"
        "started = []\n"
        "real = subprocess.Popen\n"
        "def popen(args, *a, **k):\n"
        "    started.append(args)\n"
        "    return real(args, *a, **k)\n"
        "subprocess.Popen = popen\n"
        "from generator.cli import main\n"
        "sys.argv = ['lfk', 'validate', '--deep', '-q', *sys.argv[1:]]\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    print('children', sum('generator.checks.deep' in a for a in started), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *specs], cwd=repo_root, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.splitlines()[-1] == "children 1", result.stderr
