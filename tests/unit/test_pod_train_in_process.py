"""The one-process training (files/train_in_process.py) with its real preflight and LLaMA-Factory's argument
parse, the trainer itself (run_exp) and the prompt record replaced by recorders: the preflight comes first and
a config error stops it before the trainer; the trainer gets the config and the tokenized set as
`llamafactory-cli train` would, in an environment the preflight's parse left as it found it; the record
follows a finished training, and a record that fails does not fail the run. The llamafactory tier runs it
whole on a real model (train.sh)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.podfiles import load, ready_training

pytest.importorskip("llamafactory", reason="the preflight parses with LLaMA-Factory (make venv installs it)")


class Trainer:
    """Stands in for LLaMA-Factory's run_exp: what it was started with, and an exception to raise."""

    def __init__(self, raises: Exception | None = None):
        self.calls: list[dict[str, Any]] = []
        self.raises = raises

    def run_exp(self) -> None:
        names = ("CUDA_VISIBLE_DEVICES", "DISABLE_VERSION_CHECK")
        self.calls.append({"argv": list(sys.argv[1:]), "env": {n: os.environ.get(n) for n in names}})
        if self.raises:
            raise self.raises


def start(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    config: dict[str, Any],
    trainer: Trainer,
    record: Any = None,
) -> tuple[int, str, list[str]]:
    """train_in_process.py CONFIG in this process: (exit code, what it printed, the record's writes)."""
    config_file = tmp_path / "train.yaml"
    config_file.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("DISABLE_VERSION_CHECK", raising=False)
    monkeypatch.delenv("NODE_RANK", raising=False)
    monkeypatch.setattr(sys, "argv", ["train_in_process.py", str(config_file)])
    monkeypatch.setitem(
        sys.modules, "llamafactory.train.tuner", types.SimpleNamespace(run_exp=trainer.run_exp)
    )
    module = load("train_in_process")
    writes: list[str] = []

    def write(config_path: str, output_dir: str | None, conversations_from: str | None) -> int:
        writes.append(config_path)
        if isinstance(record, Exception):
            raise record
        return 0 if record is None else int(record)

    monkeypatch.setattr(module.prompt_parity, "write", write)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = module.main([str(config_file)])
    return code, out.getvalue(), writes


def test_a_ready_config_is_checked_trained_as_the_cli_would_and_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = Trainer()
    code, out, writes = start(tmp_path, monkeypatch, ready_training(tmp_path), trainer)
    config_file = str(tmp_path / "train.yaml")
    assert code == 0, out
    assert out.index("✓ LLaMA-Factory arguments: accepted") < out.index("starting: llamafactory-cli train")
    assert f"starting: llamafactory-cli train {config_file} (in the preflight's process)" in out
    assert "no tokenized set" not in out, "no TOKENIZED_ROOT: the trainer tokenizes, nothing to say"
    # the parse set CUDA_VISIBLE_DEVICES and DISABLE_VERSION_CHECK for itself; the trainer sees the pod's own
    assert trainer.calls == [{"argv": [config_file], "env": {"CUDA_VISIBLE_DEVICES": "", "DISABLE_VERSION_CHECK": None}}]  # fmt: skip
    assert writes == [config_file], "the prompt record, after the training"


@pytest.mark.parametrize("tokenized", [True, False])
def test_the_trainer_gets_the_tokenized_set_only_when_it_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenized: bool
) -> None:
    config = ready_training(tmp_path)
    root = tmp_path / "tokenized"
    target = root / load("tokenize_once").key(config)
    if tokenized:
        target.mkdir(parents=True)
    monkeypatch.setenv("TOKENIZED_ROOT", str(root))
    trainer = Trainer()
    code, out, _ = start(tmp_path, monkeypatch, config, trainer)
    assert code == 0, out
    expected = [f"tokenized_path={target}"] if tokenized else []
    assert trainer.calls[0]["argv"] == [str(tmp_path / "train.yaml"), *expected]
    assert (f"no tokenized set at {target}; the trainer tokenizes the data itself" in out) is not tokenized


def test_a_config_error_stops_before_the_trainer_with_the_contracts_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = ready_training(tmp_path)
    (Path(config["model_name_or_path"]) / "model.safetensors").unlink()
    trainer = Trainer()
    code, out, writes = start(tmp_path, monkeypatch, config, trainer)
    assert code == 3, "configError: the Job's podFailurePolicy fails it at once"
    assert "✗ base model:" in out and "starting:" not in out
    assert trainer.calls == [] and writes == []


def test_a_failed_training_fails_as_the_trainer_did_and_records_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = Trainer(raises=RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    with pytest.raises(RuntimeError, match="CUDA out of memory"):  # exit 1 with the traceback train.sh reads
        start(tmp_path, monkeypatch, ready_training(tmp_path), trainer)
    assert len(trainer.calls) == 1


@pytest.mark.parametrize("record", [OSError("read-only file system"), 2], ids=["raises", "exit 2"])
def test_a_record_that_cannot_be_written_is_said_and_the_run_still_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: Any
) -> None:
    code, out, writes = start(tmp_path, monkeypatch, ready_training(tmp_path), Trainer(), record)
    assert code == 0 and len(writes) == 1
    assert "train: the prompt parity record was not written; helm test of the served model will say so" in out
    if isinstance(record, Exception):
        assert "prompt parity: OSError: read-only file system" in out
