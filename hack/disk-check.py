#!/usr/bin/env python3
"""Before `make demo` or `make test` builds anything: what is left to build, the disk it needs at its peak
(figures measured on this project's machine), the disk free where it goes, and whether the set-up's two lanes
fit. Stops at once, with the figures, when a file system cannot even hold what the builds leave behind, instead
of failing an hour later with "no space left on device". The images build in one lane beside the venv and the
Go tools in the other, which is quicker, but their peaks can meet: where the two lanes' peaks together do not
fit, the set-up builds one step after the other (about 19 minutes longer from empty caches), and where even that
does not fit it warns and goes on (a peak is an estimate: buildah's layers and Go's work folders are freed as the
step ends, and a machine with room for what stays may well get through). Standard library only: it runs before
.venv exists.

    hack/disk-check.py TARGET TOOL_FILE...        the figures; exit 1 when what stays does not fit
    hack/disk-check.py lanes TARGET TOOL_FILE...  prints 2 (two lanes fit) or 1 (one step after the other)

TARGET: demo or test; TOOL_FILE: the Go-built tools it needs. LFK_ONE_LANE=1 builds one step after the other
whatever the figures say (a disk that other work fills meanwhile, say).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

GB = 10**9
ROOT = Path(__file__).resolve().parent.parent
MB = 10**6
# measured here from empty caches (docs/testing.md): the peak each step reaches while it runs, and what stays
VENV_DEV = 1 * GB  # the generator and the test tools (make demo needs no more)
# the locked packages a few at a time (hack/pip-stepwise.py): at most a 0.5 GB wheel beside what is installed
VENV_LLAMAFACTORY_PEAK = 7 * GB
VENV_LLAMAFACTORY_STAYS = 6600 * MB
# Go's caches (hack/build-tools.sh keeps its own, under the images' cache) at their fullest. They hold one family
# of tools at a time: helm's 7.6 GB, the controllers' 7.5, Kubernetes' 4.9; LFK_KEEP_GO_CACHES=1 keeps every
# tool's: the demo's 9.7 GB, make test's 21.5 GB
GO_CACHES_ONE_FAMILY = 8 * GB
GO_CACHES_KEPT = {"demo": 10 * GB, "test": 22 * GB}
GO_TOOL_STAYS = 80 * MB  # .tools holds 1.5 GB for all 19 tools
# per image at its peak: buildah's layers and the copy of a layer buildah commits, then the archive (zstd layers)
# beside skopeo's temporary layout, then the archive and its layers' blobs in containerd while it unpacks them;
# what stays: the archive and containerd's unpacked copy
IMAGES = {"llamafactory": 13 * GB, "vllm-cpu": 14 * GB, "pause": GB // 10}
IMAGE_STAYS = {"llamafactory": 9200 * MB, "vllm-cpu": 10100 * MB, "pause": 1 * MB}
DEBIAN_PACKAGES = 1 * GB  # runc, the CNI plugins, buildah, skopeo, Chromium
# the images each target runs
TARGETS = {"demo": ("llamafactory", "vllm-cpu", "pause"), "test": ("llamafactory", "vllm-cpu", "pause")}


@dataclass(frozen=True)
class Step:
    name: str
    where: Path  # the folder it writes into (its file system is the one that must have room)
    need: int  # bytes at its peak
    stays: int  # bytes still there when it has ended
    lane: str = "tools"  # the set-up's lane it builds in: "tools" or "images"


def cache_dir() -> Path:
    base = os.environ.get("LFK_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llamafactory-k8s"


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
    venv = root / ".venv"
    if not (venv / ".stamp-dev").is_file():
        left.append(Step("the generator and the test tools in .venv", venv, VENV_DEV, VENV_DEV))
    if target == "test" and not (venv / ".stamp-llamafactory").is_file():
        left.append(
            Step("LLaMA-Factory and torch in .venv", venv, VENV_LLAMAFACTORY_PEAK, VENV_LLAMAFACTORY_STAYS)
        )
    missing_tools = [t for t in tool_files if not (root / t).exists()]
    if missing_tools:
        go_caches = cache / "go"
        filled = folder_size(go_caches) if go_caches.is_dir() else 0
        dropped = os.environ.get("LFK_KEEP_GO_CACHES") != "1"
        caches_left = max(0, (GO_CACHES_ONE_FAMILY if dropped else GO_CACHES_KEPT[target]) - filled)
        tools = GO_TOOL_STAYS * len(missing_tools)
        left.append(
            Step(
                f"{len(missing_tools)} Go-built tools ({', '.join(Path(t).parts[1] for t in missing_tools[:4])}"
                f"{', ...' if len(missing_tools) > 4 else ''}) and Go's caches"
                f"{' (one family of tools at a time)' if dropped else ''}",
                go_caches,
                max(GB, caches_left + tools),
                tools if dropped else caches_left + tools,
            )
        )
    for image in TARGETS[target]:
        if not archived(cache, image):
            left.append(
                Step(
                    f"the {image} image (built, archived, imported)",
                    cache,
                    IMAGES[image],
                    IMAGE_STAYS[image],
                    "images",
                )
            )
    if target == "test" and not shutil.which("chromium"):
        left.append(
            Step("Debian packages (Chromium, buildah, runc)", Path("/usr"), DEBIAN_PACKAGES, DEBIAN_PACKAGES)
        )
    return left


@dataclass(frozen=True)
class Room:
    """One file system the steps write to: its mount folder, bytes free, and what the steps need there."""

    where: str
    free: int
    steps: list[Step]

    def lane(self, name: str) -> list[Step]:
        return [s for s in self.steps if s.lane == name]

    @property
    def peak_two_lanes(self) -> int:
        """Each lane's own peak, as if the two met (they may)."""
        return one_after_the_other(self.lane("tools")) + one_after_the_other(self.lane("images"))

    @property
    def peak_one_lane(self) -> int:
        """The tools' lane, then the images (Go's caches are gone by then)."""
        return one_after_the_other(self.lane("tools") + self.lane("images"))

    @property
    def stays(self) -> int:
        return sum(s.stays for s in self.steps)


def one_after_the_other(steps: list[Step]) -> int:
    """The peak of steps built in this order: what the earlier ones left, and this one's own peak."""
    peak = held = 0
    for step in steps:
        peak = max(peak, held + step.need)
        held += step.stays
    return peak


def rooms(left: list[Step]) -> list[Room]:
    """The steps grouped by the file system they write to, each with its free bytes."""
    by_device: dict[int, list[Step]] = {}
    for step in left:
        by_device.setdefault(os.stat(existing(step.where)).st_dev, []).append(step)
    out = []
    for group in by_device.values():
        where = existing(group[0].where)
        out.append(Room(str(where), shutil.disk_usage(where).free, group))
    return out


def one_lane_asked() -> bool:
    return os.environ.get("LFK_ONE_LANE") == "1"


def lanes(rooms_left: list[Room]) -> int:
    """2 where both lanes' peaks fit every file system together (or LFK_ONE_LANE=1 asks for one), else 1."""
    if one_lane_asked():
        return 1
    return 2 if all(room.peak_two_lanes <= room.free for room in rooms_left) else 1


def report(target: str, rooms_left: list[Room]) -> bool:
    """Print each file system's figures and the set-up's layout; False when what stays does not fit."""
    fits = True
    layout = lanes(rooms_left)
    for room in rooms_left:
        peak = room.peak_two_lanes if layout == 2 else room.peak_one_lane
        figures = (
            f"{room.where} has {room.free / GB:.1f} GB free, and what make {target} builds there needs about "
            f"{peak / GB:.1f} GB at its peak ({'two lanes' if layout == 2 else 'one step after the other'}), "
            f"{room.stays / GB:.1f} GB of which stay"
        )
        if room.stays > room.free:
            fits = False
            print(
                f"error: {figures}: free {(room.stays - room.free) / GB:.1f} GB or more (better "
                f"{(peak - room.free) / GB:.1f}), then run it again (README.md, Before you start)",
                file=sys.stderr,
            )
        elif peak > room.free:
            print(f"warning: {figures}: it may run short at the peak; going on", file=sys.stderr)
        else:
            print(f"disk: {figures}")
    if layout == 1 and one_lane_asked():
        print("disk: one step after the other, as LFK_ONE_LANE=1 asks")
    elif layout == 1:
        short = [r for r in rooms_left if r.peak_two_lanes > r.free]
        print(
            "disk: the images build after the other steps, not beside them (about 19 minutes longer from empty "
            "caches): the two lanes' peaks together need about "
            + ", ".join(f"{r.peak_two_lanes / GB:.1f} GB in {r.where}" for r in short)
        )
    return fits


def main(argv: list[str]) -> int:
    asks_lanes = bool(argv) and argv[0] == "lanes"
    if asks_lanes:
        argv = argv[1:]
    if len(argv) < 1 or argv[0] not in TARGETS:
        print(f"usage: disk-check.py [lanes] {'|'.join(TARGETS)} TOOL_FILE...", file=sys.stderr)
        return 2
    target, tools = argv[0], argv[1:]
    left = steps_left(target, ROOT, cache_dir(), tools)
    if asks_lanes:
        print(lanes(rooms(left)))
        return 0
    free = shutil.disk_usage(existing(ROOT)).free
    if not left:
        print(f"disk: nothing left to build for make {target}; {free / GB:.0f} GB free here")
        return 0
    needs = ", ".join(f"{s.name} (about {s.need / GB:.0f} GB)" for s in left)
    print(f"disk: make {target} still builds {needs}")
    return 0 if report(target, rooms(left)) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
