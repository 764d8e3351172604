"""What every pod script shares (files/podlib.py): the contract as the pods read it, a file written whole or not
at all, a bounded read of a file someone else wrote, a safetensors header; and that podlib and boot.py stay
within the oldest Python of the pods' images (3.9)."""

from __future__ import annotations

import ast
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.podfiles import FILES, load, write_safetensors


@pytest.fixture(scope="module")
def podlib() -> ModuleType:
    return load("podlib")


def test_the_pods_read_the_contract_file_the_chart_ships(podlib: ModuleType) -> None:
    contract = json.loads((FILES / "contract.json").read_text())
    assert contract == podlib.CONTRACT
    assert contract["exitCodes"] == podlib.EXIT
    assert contract["storage"]["output"] == podlib.OUTPUT_ROOT
    assert contract["files"]["tokenizedMarker"] == podlib.TOKENIZED_MARKER
    assert (
        contract["merge"]["minSizeRatio"],
        contract["merge"]["maxSizeRatio"],
    ) == (podlib.MIN_SIZE_RATIO, podlib.MAX_SIZE_RATIO)
    assert contract["ports"]["vllm"] == podlib.VLLM_PORT


def test_the_shell_scripts_read_a_contract_value_by_its_dotted_key() -> None:
    def value(key: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, str(FILES / "podlib.py"), key]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)

    assert value("exitCodes.gpuOutOfMemory").stdout == "4\n"
    assert value("storage.output").stdout == "/storage/output\n"
    assert value("vllm.loraRanks").stdout.startswith("[1, 8, 16")
    missing = value("exitCodes.nope")
    assert missing.returncode == 2 and missing.stdout == ""
    assert "exitCodes.nope is not in contract.json" in missing.stderr


def test_atomic_write_replaces_the_file_whole_and_leaves_nothing_beside_it(
    podlib: ModuleType, tmp_path: Path
) -> None:
    target = tmp_path / "new" / "scores.json"
    podlib.atomic_write(target, "first\n")
    podlib.atomic_write(target, b"second\n")
    assert target.read_text() == "second\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644, "other pods read it"
    assert os.listdir(target.parent) == ["scores.json"]


def test_atomic_write_that_fails_keeps_the_old_file_and_no_partial_one(
    podlib: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "status.json"
    target.write_text("old")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(podlib.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        podlib.atomic_write(target, "new" * 1000)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["status.json"]


def test_atomic_write_onto_a_folder_fails_and_leaves_no_temporary_file(
    podlib: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "taken" / "inside").mkdir(parents=True)
    with pytest.raises(OSError):
        podlib.atomic_write(tmp_path / "taken", "x")
    assert sorted(os.listdir(tmp_path)) == ["taken"]


def test_atomic_write_replaces_a_planted_link_instead_of_writing_through_it(
    podlib: ModuleType, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "entry.json").symlink_to(outside)
    podlib.atomic_write(registry / "entry.json", "{}")
    assert outside.read_text() == "not yours"
    assert not (registry / "entry.json").is_symlink() and (registry / "entry.json").read_text() == "{}"


def test_read_regular_reads_only_a_regular_file_of_bounded_size(podlib: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "ok.json").write_text("{}")
    assert podlib.read_regular(tmp_path / "ok.json", 10) == b"{}"
    (tmp_path / "big.json").write_text("x" * 11)
    with pytest.raises(ValueError, match="11 bytes: an entry has at most 10"):
        podlib.read_regular(tmp_path / "big.json", 10, "an entry")
    (tmp_path / "link.json").symlink_to(tmp_path / "ok.json")
    os.mkfifo(tmp_path / "fifo.json")  # opened, it would block the reader
    for name in ("link.json", "fifo.json"):
        with pytest.raises(ValueError, match="not a regular file"):
            podlib.read_regular(tmp_path / name, 10)
    with pytest.raises(FileNotFoundError):
        podlib.read_regular(tmp_path / "gone.json", 10)


def test_a_safetensors_header_is_read_without_the_weights_and_a_broken_one_refused(
    podlib: ModuleType, tmp_path: Path
) -> None:
    path = write_safetensors(tmp_path / "w.safetensors", {"a": ("BF16", [2, 3])})
    assert podlib.safetensors_header(path) == {
        "a": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]}
    }
    broken = {
        "short": b"\x01\x02",
        "huge": (200 << 20).to_bytes(8, "little") + b"{}",
        "list": (2).to_bytes(8, "little") + b"[]",
        "garbage": (4).to_bytes(8, "little") + b"\xff\xfe{x",
    }
    for name, data in broken.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError):
            podlib.safetensors_header(tmp_path / name)


@pytest.mark.parametrize("name", ["podlib.py", "boot.py"])
def test_podlib_and_boot_parse_as_python_3_9(name: str) -> None:
    """Every image runs them; the oldest has Python 3.9 (no `match`, no parenthesised context managers)."""
    ast.parse((FILES / name).read_text(), feature_version=(3, 9))
