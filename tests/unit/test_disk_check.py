"""hack/disk-check.py, which `make demo` and `make test` run before building: what is left to build is read
from the files the builds leave (the .venv stamp, the tools' files, the images' archives), and a file system
without room for it stops the build with the figures."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from generator.project import REPO_ROOT

SCRIPT = REPO_ROOT / "hack" / "disk-check.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("disk_check", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


disk = load()


def built(root: Path, cache: Path) -> list[str]:
    """root and cache as after a complete set-up; the tool files it has."""
    (root / ".venv").mkdir(parents=True)
    (root / ".venv" / ".stamp-llamafactory").touch()
    tools = [".tools/helm-v3.22.0/helm", ".tools/kube-v1.37.2/.complete"]
    for tool in tools:
        (root / tool).parent.mkdir(parents=True, exist_ok=True)
        (root / tool).touch()
    (cache / "images").mkdir(parents=True)
    for image in disk.TARGETS["demo"]:
        archive = cache / "images" / f"{image}-0123.tar"
        archive.touch()
        (cache / "images" / f"{image}.current").write_text(f"{archive}\n")
    return tools


def test_nothing_is_left_after_a_complete_set_up(tmp_path: Path) -> None:
    root, cache = tmp_path / "repo", tmp_path / "cache"
    tools = built(root, cache)
    assert disk.steps_left("demo", root, cache, tools) == []


def test_each_missing_piece_is_named_with_the_disk_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GOCACHE", "GOMODCACHE"):  # empty Go caches, not this machine's
        monkeypatch.setenv(name, str(tmp_path / name))
    root, cache = tmp_path / "repo", tmp_path / "cache"
    tools = built(root, cache)
    (root / ".venv" / ".stamp-llamafactory").unlink()
    (root / tools[1]).unlink()
    (cache / "images" / "vllm-cpu-0123.tar").unlink()  # named as current, but gone
    left = disk.steps_left("demo", root, cache, [*tools, ".tools/etcd-v3.6.16/.complete"])
    names = [s.name for s in left]
    assert names == [
        "LLaMA-Factory and torch in .venv",
        "2 Go-built tools (kube-v1.37.2, etcd-v3.6.16) and Go's caches",
        "the vllm-cpu image (built, archived, imported)",
    ]
    assert left[0].need == disk.VENV_LLAMAFACTORY_PEAK and left[2].need == disk.IMAGES["vllm-cpu"]
    assert left[0].where == root / ".venv" and left[2].where == cache
    assert left[1].need == disk.GO_CACHES and left[1].where == tmp_path / "GOCACHE"


def test_a_file_system_without_room_is_named_with_the_figures(tmp_path: Path) -> None:
    free = disk.shutil.disk_usage(tmp_path).free
    fits = disk.Step("small", tmp_path / "not-yet" / "there", 1)
    too_big = disk.Step("huge", tmp_path, free + 50 * disk.GB)
    assert disk.shortfalls([fits]) == []
    [(where, need, available, steps)] = disk.shortfalls([fits, too_big])
    assert where == str(tmp_path) and need == free + 50 * disk.GB + 1 and steps == [fits, too_big]
    assert abs(available - free) < disk.GB  # the same file system, read a moment later


def test_the_script_stops_make_when_short_and_says_what_to_free(tmp_path: Path) -> None:
    """Run as make runs it, with a cache on a file system smaller than one image (a cache folder that does
    not exist yet is checked on the file system it will be created in)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LFK_CACHE_DIR": "/dev/shm/lfk-disk-check-test"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "demo"], env=env, capture_output=True, text=True, timeout=60
    )
    shm_free = disk.shutil.disk_usage("/dev/shm").free
    if shm_free > sum(disk.IMAGES.values()):
        pytest.skip("/dev/shm here is larger than the images")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the vllm-cpu image (built, archived, imported) (about 21 GB)" in result.stdout
    assert f"error: /dev/shm has {shm_free / disk.GB:.1f} GB free" in result.stderr
    assert "(README.md, Before you start)" in result.stderr


def test_usage() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "everything"], capture_output=True, text=True)
    assert result.returncode == 2 and "usage: disk-check.py demo|test" in result.stderr
