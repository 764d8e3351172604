#!/usr/bin/env python3
"""Before `make demo` or `make test` builds anything: what is left to build, the disk it needs at its peak
(figures measured on this project's machine), and the disk free where it goes. Stops at once, with the
figures, when a file system is short, instead of failing an hour later with "no space left on device".
Standard library only: it runs before .venv exists.

    hack/disk-check.py TARGET TOOL_FILE...     TARGET: demo or test; TOOL_FILE: the Go-built tools it needs
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

GB = 10**9
ROOT = Path(__file__).resolve().parent.parent
# measured here from empty caches (docs/testing.md): the peak each step reaches while it runs
VENV_LLAMAFACTORY_PEAK = 11 * GB  # pip holds the wheels until the install ends; 6.3 GB stay in .venv
GO_CACHES = 18 * GB  # every Go tool built once: the build cache 11 GB, the module cache 6 GB, Kueue 1 GB
# per image: buildah's layers, the OCI archive, containerd's copy (the archives are 6.3 and 7.0 GB)
IMAGES = {"llamafactory": 19 * GB, "vllm-cpu": 21 * GB, "pause": GB // 10}
DEBIAN_PACKAGES = 1 * GB  # runc, the CNI plugins, buildah, skopeo, Chromium
# the images each target runs
TARGETS = {"demo": ("llamafactory", "vllm-cpu", "pause"), "test": ("llamafactory", "vllm-cpu", "pause")}


@dataclass(frozen=True)
class Step:
    name: str
    where: Path  # the folder it writes into (its file system is the one that must have room)
    need: int  # bytes at its peak


def cache_dir() -> Path:
    base = os.environ.get("LFK_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llamafactory-k8s"


def go_env(name: str, default: Path) -> Path:
    try:
        out = subprocess.run(
            ["go", "env", name], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return default
    return Path(out.strip() or default)


def folder_size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file removed meanwhile
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def existing(path: Path) -> Path:
    """path, or the nearest folder above it that exists (where it will be created)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def archived(cache: Path, image: str) -> bool:
    """An archive of the image is there (build-images.sh names its newest in <name>.current). One of older
    inputs is rebuilt by build-images.sh, which checks the room for its archive itself."""
    try:
        newest = (cache / "images" / f"{image}.current").read_text(encoding="utf-8").strip()
    except OSError:
        return False
    return bool(newest) and Path(newest).is_file()


def steps_left(target: str, root: Path, cache: Path, tool_files: list[str]) -> list[Step]:
    """What `make TARGET` still has to build, each with the disk it needs at its peak."""
    left = []
    if not (root / ".venv" / ".stamp-llamafactory").is_file():
        left.append(Step("LLaMA-Factory and torch in .venv", root / ".venv", VENV_LLAMAFACTORY_PEAK))
    missing_tools = [t for t in tool_files if not (root / t).exists()]
    if missing_tools:
        go_cache = go_env("GOCACHE", Path.home() / ".cache" / "go-build")
        mod_cache = go_env("GOMODCACHE", Path.home() / "go" / "pkg" / "mod")
        filled = sum(folder_size(p) for p in (go_cache, mod_cache) if p.is_dir())
        left.append(
            Step(
                f"{len(missing_tools)} Go-built tools ({', '.join(Path(t).parts[1] for t in missing_tools[:4])}"
                f"{', ...' if len(missing_tools) > 4 else ''}) and Go's caches",
                go_cache,
                max(GB, GO_CACHES - filled),
            )
        )
    for image in TARGETS[target]:
        if not archived(cache, image):
            left.append(Step(f"the {image} image (built, archived, imported)", cache, IMAGES[image]))
    if target == "test" and not shutil.which("chromium"):
        left.append(Step("Debian packages (Chromium, buildah, runc)", Path("/usr"), DEBIAN_PACKAGES))
    return left


def shortfalls(left: list[Step]) -> list[tuple[str, int, int, list[Step]]]:
    """Per file system that lacks room: (its mount folder, bytes needed, bytes free, the steps)."""
    by_device: dict[int, list[Step]] = {}
    for step in left:
        by_device.setdefault(os.stat(existing(step.where)).st_dev, []).append(step)
    short = []
    for group in by_device.values():
        where = existing(group[0].where)
        free = shutil.disk_usage(where).free
        need = sum(s.need for s in group)
        if need > free:
            short.append((str(where), need, free, group))
    return short


def main(argv: list[str]) -> int:
    if len(argv) < 1 or argv[0] not in TARGETS:
        print(f"usage: disk-check.py {'|'.join(TARGETS)} TOOL_FILE...", file=sys.stderr)
        return 2
    target, tools = argv[0], argv[1:]
    left = steps_left(target, ROOT, cache_dir(), tools)
    free = shutil.disk_usage(existing(ROOT)).free
    if not left:
        print(f"disk: nothing left to build for make {target}; {free / GB:.0f} GB free here")
        return 0
    needs = ", ".join(f"{s.name} (about {s.need / GB:.0f} GB)" for s in left)
    print(f"disk: make {target} still builds {needs}")
    short = shortfalls(left)
    for where, need, available, _ in short:
        print(
            f"error: {where} has {available / GB:.1f} GB free, and what make {target} builds there needs about "
            f"{need / GB:.0f} GB at its peak: free {(need - available) / GB:.0f} GB or more, then run it again "
            "(README.md, Before you start)",
            file=sys.stderr,
        )
    return 1 if short else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
