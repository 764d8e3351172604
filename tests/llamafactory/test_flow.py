"""The rendered experiment, run for real by the chart's scripts: train, preempted after the first checkpoint,
resumed to the planned step count; merged, verified and published; loaded and generating."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from generator import smoke, trainlog


@pytest.fixture(scope="module")
def trained(workspace: smoke.Workspace, run_log: Path) -> dict[str, Any]:
    first = smoke.train(workspace, run_log, preempt=True)
    steps_first = [e["current_steps"] for e in smoke.trainer_log(workspace)]
    # a second preemption in the middle of writing a checkpoint: the folder exists, trainer_state.json does not
    half_written = workspace.output_dir / f"checkpoint-{smoke.SAVE_STEPS + 2}"
    half_written.mkdir()
    (half_written / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    second = smoke.train(workspace, run_log)
    steps_all = [e["current_steps"] for e in smoke.trainer_log(workspace)]
    return {
        "first": first,
        "second": second,
        "before": steps_first,
        "after": steps_all[len(steps_first) :],
        "half": half_written,
    }


def test_the_first_run_is_killed_right_after_its_first_checkpoint(
    trained: dict[str, Any], workspace: smoke.Workspace
) -> None:
    assert trained["first"] == -9
    assert trained["before"] == list(range(1, smoke.SAVE_STEPS + 1))
    assert (workspace.output_dir / f"checkpoint-{smoke.SAVE_STEPS}" / "trainer_state.json").is_file()


def test_the_restarted_run_resumes_and_finishes_at_the_planned_step(
    trained: dict[str, Any], workspace: smoke.Workspace, run_log: Path
) -> None:
    assert trained["second"] == 0, run_log.read_text()[-3000:]
    log = run_log.read_text()
    assert f"removing incomplete {trained['half']}" in log, (
        "the half-written checkpoint must be cleared, or resume fails"
    )
    assert f"Resuming training from {workspace.output_dir}/checkpoint-{smoke.SAVE_STEPS}" in log
    assert trained["after"][0] == smoke.SAVE_STEPS + 1, "steps continue rather than restart"
    assert trained["after"][-1] == smoke.MAX_STEPS
    assert (workspace.output_dir / "adapter_model.safetensors").is_file()


def test_progress_parses_from_the_real_trainer_log(
    trained: dict[str, Any], workspace: smoke.Workspace
) -> None:
    text = (workspace.output_dir / "trainer_log.jsonl").read_text()
    progress = trainlog.parse(text)
    assert progress is not None and progress.finished
    assert progress.total_steps == smoke.MAX_STEPS and progress.percentage == 100
    assert progress.loss is not None or progress.losses
    assert progress.elapsed and progress.remaining
    broken = (
        text
        + json.dumps({**json.loads(text.splitlines()[-2]), "loss": float("nan"), "current_steps": 13})
        + "\n"
    )
    assert any("Loss = NaN" in p for p in trainlog.parse(broken).problems)


@pytest.fixture(scope="module")
def merged(trained: dict[str, Any], workspace: smoke.Workspace, run_log: Path) -> Path:
    assert smoke.merge(workspace, run_log) == 0, run_log.read_text()[-3000:]
    return workspace.merged_dir


def test_merge_is_published_only_after_verification(
    merged: Path, run_log: Path, workspace: smoke.Workspace
) -> None:
    assert merged.is_dir() and not Path(str(merged) + ".partial").exists()
    result = subprocess.run(
        [sys.executable, str(smoke.SCRIPTS / "verify_merge.py"), str(merged), "--base", str(workspace.base_model), "--dtype", "bfloat16", "--adapter", str(workspace.output_dir)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "merge: published" in run_log.read_text()


def test_merged_weights_have_the_requested_dtype_and_the_base_size(
    merged: Path, workspace: smoke.Workspace
) -> None:
    sys.path.insert(0, str(smoke.SCRIPTS))
    try:
        import verify_merge
    finally:
        sys.path.pop(0)
    files, problems = verify_merge.weight_files(str(merged))
    assert not problems
    parameters, by_dtype = verify_merge.count_parameters(files)
    base_parameters, _ = verify_merge.count_parameters(
        verify_merge.weight_files(str(workspace.base_model))[0]
    )
    assert set(by_dtype) == {"BF16"}, "not fp32-doubled"
    assert parameters == base_parameters
    assert sum(by_dtype.values()) == 2 * base_parameters


def test_rerunning_the_merge_over_a_complete_result_does_nothing(
    merged: Path, workspace: smoke.Workspace, run_log: Path
) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in merged.iterdir()}
    assert smoke.merge(workspace, run_log) == 0
    assert "is complete for adapter" in run_log.read_text().splitlines()[-1]
    assert {p.name: p.stat().st_mtime_ns for p in merged.iterdir()} == before


def test_verification_refuses_an_incomplete_or_doubled_model(
    merged: Path, workspace: smoke.Workspace, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(merged, broken)
    (broken / "generation_config.json").unlink()
    verify = [
        sys.executable,
        str(smoke.SCRIPTS / "verify_merge.py"),
        str(broken),
        "--base",
        str(workspace.base_model),
    ]
    result = subprocess.run(verify, capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "generation_config.json is missing" in result.stderr
    result = subprocess.run(
        [*verify[:3], "--base", str(workspace.base_model), "--dtype", "float32"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1 and "expected F32 only" in result.stderr


def test_the_merged_model_loads_generates_and_speaks_the_training_template(
    merged: Path, workspace: smoke.Workspace, tokenizer: Any
) -> None:
    text, model, merged_tokenizer = smoke.generate(merged)
    assert isinstance(text, str) and model.dtype.__str__() == "torch.bfloat16"
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    get_template_and_fix_tokenizer(tokenizer, DataArguments(template="llama3"))
    assert merged_tokenizer.chat_template == tokenizer.chat_template
    assert "<|start_header_id|>" in merged_tokenizer.chat_template
