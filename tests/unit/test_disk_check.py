"""hack/disk-check.py, which `make demo` and `make test` run before building: what is left to build is read
from the files the builds leave (the .venv stamp, the tools' files, the images' archives), and a file system
without room for what the builds leave stops the build with the figures; where the set-up's two lanes' peaks
do not fit together, the images build after the rest; where even that peak does not fit, a warning and the
build goes on."""

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
    (root / ".venv" / ".stamp-dev").touch()
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
    assert disk.steps_left("test", root, cache, tools) == []


def test_each_missing_piece_is_named_with_the_disk_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LFK_KEEP_GO_CACHES", raising=False)
    root, cache = tmp_path / "repo", tmp_path / "cache"
    tools = built(root, cache)
    (root / ".venv" / ".stamp-llamafactory").unlink()
    (root / tools[1]).unlink()
    (cache / "images" / "vllm-cpu-0123.tar").unlink()  # named as current, but gone
    left = disk.steps_left("test", root, cache, [*tools, ".tools/etcd-v3.6.16/.complete"])
    assert [s.name for s in left] == [
        "LLaMA-Factory and torch in .venv",
        "2 Go-built tools (kube-v1.37.2, etcd-v3.6.16) and Go's caches (one family of tools at a time)",
        "the vllm-cpu image (built, archived, imported)",
    ]
    assert left[0].need == disk.VENV_LLAMAFACTORY_PEAK and left[2].need == disk.IMAGES["vllm-cpu"]
    assert left[0].stays == disk.VENV_LLAMAFACTORY_STAYS and left[2].stays == disk.IMAGE_STAYS["vllm-cpu"]
    assert left[0].where == root / ".venv" and left[2].where == cache
    # the project's own Go caches, empty: one family's fill them, then go before the next family's
    assert left[1].where == cache / "go"
    assert left[1].need == disk.GO_CACHES_ONE_FAMILY + 2 * disk.GO_TOOL_STAYS
    assert left[1].stays == 2 * disk.GO_TOOL_STAYS
    assert all(s.stays <= s.need for s in left)


def test_the_demo_needs_no_llamafactory_and_keeps_every_tools_go_caches_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """make demo's .venv has the generator only, and Go's caches hold one family of tools at a time, gone once
    the tools are built: at its peak they count, afterwards only the tools stay. LFK_KEEP_GO_CACHES=1 keeps
    every tool's."""
    monkeypatch.delenv("LFK_KEEP_GO_CACHES", raising=False)
    root = tmp_path / "repo"
    (root / ".venv").mkdir(parents=True)
    tools = [".tools/helm-v3.22.0/helm"]
    left = disk.steps_left("demo", root, tmp_path / "cache", tools)
    assert [s.name for s in left][:2] == [
        "the generator and the test tools in .venv",
        "1 Go-built tools (helm-v3.22.0) and Go's caches (one family of tools at a time)",
    ]
    venv, go = left[:2]
    assert venv.need == venv.stays == disk.VENV_DEV
    assert go.need == disk.GO_CACHES_ONE_FAMILY + disk.GO_TOOL_STAYS and go.stays == disk.GO_TOOL_STAYS
    monkeypatch.setenv("LFK_KEEP_GO_CACHES", "1")
    kept = disk.steps_left("demo", root, tmp_path / "cache", tools)[1]
    assert kept.name.endswith("Go's caches") and kept.stays == kept.need
    assert kept.need == disk.GO_CACHES_KEPT["demo"] + disk.GO_TOOL_STAYS


def test_filled_go_caches_leave_only_the_tools_to_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LFK_KEEP_GO_CACHES", "1")  # kept: what is already in them is not counted again
    root, cache = tmp_path / "repo", tmp_path / "cache"
    tools = built(root, cache)
    (cache / "go" / "build").mkdir(parents=True)
    (cache / "go" / "build" / "filled").write_bytes(b"x" * 1000)
    # the caches already hold everything the builds fill them with
    monkeypatch.setattr(disk, "GO_CACHES_KEPT", {"demo": 1000, "test": 1000})
    (root / tools[0]).unlink()
    [go] = disk.steps_left("test", root, cache, tools)
    assert go.need == disk.GB and go.stays == disk.GO_TOOL_STAYS


def test_steps_are_grouped_by_the_file_system_they_write_to(tmp_path: Path) -> None:
    free = disk.shutil.disk_usage(tmp_path).free
    later = disk.Step("small", tmp_path / "not-yet" / "there", 1, 1)
    big = disk.Step("huge", tmp_path, free + 50 * disk.GB, 2)
    [room] = disk.rooms([later, big])
    assert room.where == str(tmp_path) and room.steps == [later, big]
    assert room.peak_two_lanes == free + 50 * disk.GB + 1 and room.stays == 3
    assert abs(room.free - free) < disk.GB  # the same file system, read a moment later


def test_room_for_what_stays_but_not_the_peak_warns_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An images' cache on a file system whose free space holds the vllm-cpu archive but not the image's build
    (as if it were that large): a warning, exit 0."""
    root, cache = tmp_path / "repo", tmp_path / "cache"
    built(root, cache)
    (cache / "images" / "vllm-cpu-0123.tar").unlink()
    monkeypatch.setattr(disk, "ROOT", root)
    monkeypatch.setenv("LFK_CACHE_DIR", str(cache))
    monkeypatch.delenv("LFK_ONE_LANE", raising=False)
    free = disk.shutil.disk_usage(tmp_path).free
    monkeypatch.setitem(disk.IMAGE_STAYS, "vllm-cpu", free - 3 * disk.GB)
    monkeypatch.setitem(disk.IMAGES, "vllm-cpu", free + 5 * disk.GB)
    assert disk.main(["demo"]) == 0
    out, err = capsys.readouterr()
    assert f"warning: {cache} has " in err and "it may run short at the peak; going on" in err
    assert "error:" not in err
    assert "the images build after the other steps" in out  # two lanes do not fit either


def lanes_of(tmp_path: Path, free: float) -> disk.Room:
    """A file system with FREE GB and make test's steps in GB: the tools' lane (.venv, Go's caches) and the
    images' lane."""
    steps = [
        disk.Step("venv", tmp_path, 7 * disk.GB, 6 * disk.GB),
        disk.Step("go", tmp_path, 6 * disk.GB, 1 * disk.GB),
        disk.Step("llamafactory", tmp_path, 13 * disk.GB, 9 * disk.GB, "images"),
        disk.Step("vllm-cpu", tmp_path, 14 * disk.GB, 10 * disk.GB, "images"),
    ]
    return disk.Room(str(tmp_path), int(free * disk.GB), steps)


def test_each_lane_peaks_with_what_its_earlier_steps_left(tmp_path: Path) -> None:
    room = lanes_of(tmp_path, 100)
    # tools: .venv's 6 beside Go's 6; images: the llamafactory image's 9 beside vllm-cpu's 14
    assert room.peak_two_lanes == (12 + 23) * disk.GB
    # one after the other: the images after the tools lane, whose 7 stay
    assert room.peak_one_lane == (7 + 9 + 14) * disk.GB
    assert room.stays == 26 * disk.GB


@pytest.mark.parametrize(("free", "lanes"), [(35, 2), (34.9, 1), (30, 1), (20, 1)])
def test_the_images_build_after_the_rest_when_both_lanes_peaks_do_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free: float, lanes: int
) -> None:
    monkeypatch.delenv("LFK_ONE_LANE", raising=False)
    assert disk.lanes([lanes_of(tmp_path, free)]) == lanes
    monkeypatch.setenv("LFK_ONE_LANE", "1")
    assert disk.lanes([lanes_of(tmp_path, free)]) == 1


def test_the_report_says_which_layout_and_its_peak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LFK_ONE_LANE", raising=False)
    assert disk.report("test", [lanes_of(tmp_path, 40)]) is True
    out, err = capsys.readouterr()
    assert "needs about 35.0 GB at its peak (two lanes), 26.0 GB of which stay" in out and not err
    assert disk.report("test", [lanes_of(tmp_path, 32)]) is True
    out, err = capsys.readouterr()
    assert "needs about 30.0 GB at its peak (one step after the other)" in out and not err
    assert "the images build after the other steps, not beside them" in out
    assert f"about 35.0 GB in {tmp_path}" in out
    assert disk.report("test", [lanes_of(tmp_path, 28)]) is True  # what stays fits, the peak may not
    out, err = capsys.readouterr()
    assert "warning:" in err and "30.0 GB at its peak (one step after the other)" in err
    assert disk.report("test", [lanes_of(tmp_path, 25)]) is False
    assert "error:" in capsys.readouterr().err


def test_lanes_prints_the_count_make_reads(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LFK_CACHE_DIR": str(tmp_path / "c"),
        "LFK_ONE_LANE": "1",
    }
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "lanes", "test"], env=env, capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "1\n", "")


def test_no_room_for_what_stays_stops_make_and_says_what_to_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An images' cache on a file system that cannot hold the vllm-cpu archive (as if it were larger than the
    free space there)."""
    root, cache = tmp_path / "repo", tmp_path / "cache"
    built(root, cache)
    (cache / "images" / "vllm-cpu-0123.tar").unlink()
    monkeypatch.setattr(disk, "ROOT", root)
    monkeypatch.setenv("LFK_CACHE_DIR", str(cache))
    free = disk.shutil.disk_usage(tmp_path).free
    monkeypatch.setitem(disk.IMAGE_STAYS, "vllm-cpu", free + 3 * disk.GB)
    monkeypatch.setitem(disk.IMAGES, "vllm-cpu", free + 5 * disk.GB)
    assert disk.main(["demo"]) == 1
    out, err = capsys.readouterr()
    assert "the vllm-cpu image (built, archived, imported)" in out
    assert f"error: {cache} has " in err and "GB of which stay: free " in err
    short = float(err.split("GB of which stay: free ")[1].split(" GB")[0])
    assert 2.5 < short < 3.5  # the archive less the free space, read a moment apart
    assert "(README.md, Before you start)" in err


def test_usage() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "everything"], capture_output=True, text=True)
    assert result.returncode == 2 and "usage: disk-check.py [lanes] demo|test" in result.stderr
