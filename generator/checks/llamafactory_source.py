"""LLaMA-Factory's source package, which holds its bundled demo datasets (core/bundled.py): downloaded once
by pip into the per-user cache."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..core.cache import cache_dir
from ..core.lfinfo import SNAPSHOT_VERSION


def source_package(version: str = SNAPSHOT_VERSION, cache: Path | None = None) -> Path:
    """The llamafactory source package of version, from the cache folder, else downloaded there by pip from the
    package index pip is set up for (about 5 MB); RuntimeError with pip's words when it cannot be had."""
    folder = cache or cache_dir() / "llamafactory-source"
    wanted = folder / f"llamafactory-{version}.tar.gz"
    if wanted.is_file():
        return wanted
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
         "--dest", str(folder), f"llamafactory=={version}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0 or not wanted.is_file():
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"cannot download llamafactory {version}'s source package with pip: {tail}")
    return wanted
