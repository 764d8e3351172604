"""The merge's check before a merged model is published (files/verify_merge.py) and merge.sh's publishing, on
small real safetensors files: a model of the base's size at the wanted dtype passes; one too small, too large,
in the wrong dtype, unreadable or missing a file fails, saying why; a failed check publishes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.podfiles import FILES, load, model_folder, scripts_folder

# the base model: 1,000 parameters in float32 (a checkpoint as published); merged at bfloat16 it holds 2,000 bytes
BASE = {"layer.weight": ("F32", [10, 90]), "layer.bias": ("F32", [100])}


def merged(folder: Path, parameters: int = 1000, dtype: str = "BF16") -> Path:
    """A merged model of `parameters` parameters in dtype (the base's 1,000 when it is complete)."""
    return model_folder(folder, {"layer.weight": (dtype, [parameters - 100]), "layer.bias": (dtype, [100])})


def verify_cli(folder: Path, base: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """verify_merge.py as merge.sh runs it."""
    command = [
        sys.executable,
        str(FILES / "verify_merge.py"),
        str(folder),
        "--base",
        str(base),
        "--dtype",
        "bfloat16",
    ]
    return subprocess.run([*command, *extra], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture()
def base(tmp_path: Path) -> Path:
    return model_folder(tmp_path / "base", BASE)


def test_a_merge_of_the_base_models_size_at_the_wanted_dtype_passes(tmp_path: Path, base: Path) -> None:
    result = verify_cli(merged(tmp_path / "merged"), base)
    assert result.returncode == 0, result.stderr
    assert "is complete" in result.stdout


@pytest.mark.parametrize(
    ("parameters", "ratio"),
    [(850, "0.85x"), (1150, "1.15x")],
    ids=["too-small", "too-large"],
)
def test_a_merge_off_the_contracts_size_ratios_fails_with_its_size(
    tmp_path: Path, base: Path, parameters: int, ratio: str
) -> None:
    """No ratio given: the bounds are the contract's (merge.minSizeRatio, merge.maxSizeRatio)."""
    contract = json.loads((FILES / "contract.json").read_text())["merge"]
    result = verify_cli(merged(tmp_path / "merged", parameters), base)
    assert result.returncode == 1
    assert f"{ratio} the base model's" in result.stderr
    assert f"accepted {contract['minSizeRatio']}-{contract['maxSizeRatio']}x" in result.stderr


def test_the_size_ratios_given_on_the_command_line_win(tmp_path: Path, base: Path) -> None:
    folder = merged(tmp_path / "merged", 850)
    assert verify_cli(folder, base, "--min-ratio", "0.8").returncode == 0
    assert verify_cli(folder, base, "--max-ratio", "0.95").returncode == 1


def test_a_merge_left_in_float32_fails_on_its_dtype_and_its_doubled_size(tmp_path: Path, base: Path) -> None:
    result = verify_cli(merged(tmp_path / "merged", dtype="F32"), base)
    assert result.returncode == 1
    assert "tensors in F32, expected BF16 only (set infer_dtype: bfloat16)" in result.stderr
    assert "2.00x the base model's" in result.stderr


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("generation_config.json", "generation_config.json is missing"),
        ("tokenizer.json", "no tokenizer.json or tokenizer.model"),
        ("model.safetensors", "no model.safetensors and no model.safetensors.index.json"),
    ],
)
def test_a_merge_missing_a_file_fails_naming_it(
    tmp_path: Path, base: Path, damage: str, problem: str
) -> None:
    folder = merged(tmp_path / "merged")
    (folder / damage).unlink()
    result = verify_cli(folder, base)
    assert result.returncode == 1
    assert f"  - {problem}" in result.stderr


def test_a_sharded_merge_missing_a_shard_named_by_its_index_fails(tmp_path: Path, base: Path) -> None:
    folder = merged(tmp_path / "merged")
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    weight_map = {
        "layer.weight": "model-00001-of-00002.safetensors",
        "layer.bias": "model-00002-of-00002.safetensors",
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    result = verify_cli(folder, base)
    assert result.returncode == 1
    assert (
        "shard model-00002-of-00002.safetensors named in model.safetensors.index.json is missing"
        in result.stderr
    )


def test_no_merged_folder_and_unreadable_weights_are_problems_not_crashes(tmp_path: Path, base: Path) -> None:
    verify = load("verify_merge").verify
    assert verify(str(tmp_path / "nowhere"), str(base), "bfloat16", 0.9, 1.1, None) == [
        f"{tmp_path / 'nowhere'} does not exist"
    ]
    folder = merged(tmp_path / "merged")
    (folder / "model.safetensors").write_bytes(b"\x10\0\0")  # cut short while copied
    [problem] = verify(str(folder), str(base), "bfloat16", 0.9, 1.1, None)
    assert problem.startswith("unreadable weights: model.safetensors")
    header = json.dumps({"w": {"dtype": "BF16"}}).encode()  # a tensor without its shape
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    [problem] = verify(str(folder), str(base), "bfloat16", 0.9, 1.1, None)
    assert "tensor w has no dtype and shape" in problem


def test_the_merge_record_names_the_adapter_merged(tmp_path: Path, base: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    folder = merged(tmp_path / "merged")
    assert verify_cli(folder, base, "--adapter", str(adapter)).returncode == 1, "no record yet"
    assert verify_cli(folder, base, "--adapter", str(adapter), "--record").returncode == 0
    assert json.loads((folder / ".lfk-merge.json").read_text())["adapter"] == str(adapter)
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == [".lfk-merge.json"], "no temp file"
    assert verify_cli(folder, base, "--adapter", str(adapter)).returncode == 0
    (adapter / "adapter_config.json").write_text('{"r": 16}')  # retrained: the merge is of another adapter
    result = verify_cli(folder, base, "--adapter", str(adapter))
    assert result.returncode == 1
    assert f".lfk-merge.json does not record a merge of {adapter}" in result.stderr


# ------------------------------------------------------------------------------------------------ merge.sh
def run_merge(tmp_path: Path, base: Path, export_from: Path | None) -> subprocess.CompletedProcess[str]:
    """merge.sh from a copy of the pods' /scripts; the export (export_in_process.py) stands in by copying a
    prepared model into the export folder it is given (merge.sh's own staging, checking and publishing run for
    real)."""
    scripts = scripts_folder(tmp_path / "scripts", "merge.sh", "verify_merge.py")
    (scripts / "export_in_process.py").write_text(
        "import os, shutil, sys\nshutil.copytree(os.environ['EXPORT_FROM'], sys.argv[2])\n"
    )
    env = {
        **os.environ,
        "MERGE_CONFIG": str(tmp_path / "merge.yaml"),
        "EXPORT_DIR": str(tmp_path / "models" / "merged" / "demo"),
        "ADAPTER_DIR": str(tmp_path / "adapter"),
        "BASE_MODEL_DIR": str(base),
        "MERGE_DTYPE": "bfloat16",
        "EXPORT_FROM": str(export_from or tmp_path / "none"),
    }
    return subprocess.run(
        ["bash", str(scripts / "merge.sh")], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_merge_sh_without_the_trained_adapter_fails_at_once_as_a_config_error(
    tmp_path: Path, base: Path
) -> None:
    result = run_merge(tmp_path, base, None)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "adapter_config.json not found: has the train Job of this run completed?" in result.stderr


def test_merge_sh_publishes_a_verified_merge_once_and_never_a_wrong_sized_one(
    tmp_path: Path, base: Path
) -> None:
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text('{"r": 8}')
    target = tmp_path / "models" / "merged" / "demo"
    too_small = merged(tmp_path / "export-small", 500)
    result = run_merge(tmp_path, base, too_small)
    assert result.returncode == 1
    assert "0.50x the base model's" in result.stderr
    assert not target.exists(), "a merge that failed its check is never published"
    result = run_merge(tmp_path, base, merged(tmp_path / "export-good"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"merge: published {target}" in result.stdout
    assert (target / "model.safetensors").is_file() and not Path(f"{target}.partial").exists()
    result = run_merge(tmp_path, base, too_small)  # a rerun over the complete result
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing to do" in result.stdout
