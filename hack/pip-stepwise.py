#!/usr/bin/env python3
"""Install a locked set of packages into the running interpreter a few at a time, so the disk holds at most a
few downloaded wheels beside what is installed. A plain `pip install` keeps every wheel it downloaded until the
whole install ends: for LLaMA-Factory and torch's stack that is about 5 GB of wheels on top of 6.3 GB installed
(and this package index serves no separate metadata, so even pip's dry run downloads them all).

    python hack/pip-stepwise.py install LOCK            each name==version of LOCK, with --no-deps
    python hack/pip-stepwise.py lock LOCK REQUIREMENT...  write LOCK: what pip resolves for REQUIREMENT...

After `install`, a plain `pip install` of the project's extras adds the project itself and checks the whole
(it downloads only what a stale lock lacks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PIP = [sys.executable, "-m", "pip", "install", "--quiet", "--no-cache-dir", "--disable-pip-version-check"]
# wheels of hundreds of MB each: installed one at a time; the others (none over 70 MB) in batches
LARGE = ("torch", "nvidia-", "triton", "cuda-")
BATCH = 25


def batches(pins: list[str]) -> list[list[str]]:
    """The pins in install order: each large wheel alone, the others BATCH at a time."""
    large = [p for p in pins if p.lower().startswith(LARGE)]
    small = [p for p in pins if p not in large]
    return [[p] for p in large] + [small[i : i + BATCH] for i in range(0, len(small), BATCH)]


def read_lock(lock: Path) -> list[str]:
    lines = (line.split("#")[0].strip() for line in lock.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def install(lock: Path) -> None:
    groups = batches(read_lock(lock))
    for number, group in enumerate(groups, 1):
        print(f"  [{number}/{len(groups)}] {' '.join(group) if len(group) < 4 else f'{len(group)} packages'}")
        sys.stdout.flush()
        subprocess.run([*PIP, "--no-deps", *group], check=True)


def write_lock(lock: Path, requirements: list[str]) -> None:
    """Resolve requirements as if nothing were installed (pip's dry run) and write name==version of each
    package from an index; a local folder (the editable project) is left to the last plain install."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        subprocess.run(
            [*PIP, "--dry-run", "--ignore-installed", "--report", str(report), *requirements], check=True
        )
        items = json.loads(report.read_text(encoding="utf-8"))["install"]
    pins = sorted(
        f"{item['metadata']['name']}=={item['metadata']['version']}"
        for item in items
        if "dir_info" not in item["download_info"]
    )
    header = (
        f"# written by `make lock` (hack/pip-stepwise.py lock) from: {' '.join(requirements)}\n"
        f"# for Python {sys.version_info.major}.{sys.version_info.minor} on {sys.platform}; "
        "`make llamafactory` installs these a few at a time\n"
    )
    partial = lock.with_name(f".{lock.name}.partial")
    partial.write_text(header + "".join(f"{pin}\n" for pin in pins), encoding="utf-8")
    os.replace(partial, lock)  # atomic: a failed resolve leaves the old lock
    print(f"{lock}: {len(pins)} packages")


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "install":
        install(Path(argv[1]))
    elif len(argv) >= 3 and argv[0] == "lock":
        write_lock(Path(argv[1]), argv[2:])
    else:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except subprocess.CalledProcessError as error:
        sys.exit(error.returncode)
