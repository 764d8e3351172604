#!/usr/bin/env python3
"""Write generator/data/llamafactory-<version>.json from the installed llamafactory package, and (--bundled)
generator/data/llamafactory-<version>-datasets.json from its source package's data/dataset_info.json.

The light path of `lfk` (validate, render) must not import torch, so it reads this snapshot: template names,
the model -> template table behind LLaMA-Factory's web UI, and every legal config key. Run it after changing
the pinned llamafactory version; `tests/llamafactory/test_lfinfo.py` fails while the snapshot is stale.

    .venv/bin/python hack/snapshot-llamafactory.py [--check]
    .venv/bin/python hack/snapshot-llamafactory.py --bundled [--check]   (pip downloads the source package)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DISABLE_VERSION_CHECK", "1")

from generator.checks import llamafactory_source  # noqa: E402
from generator.core import bundled  # noqa: E402
from generator.core.lfinfo import SNAPSHOT_VERSION, live_snapshot, snapshot_path  # noqa: E402


def main() -> int:
    if "--bundled" in sys.argv:
        sdist = llamafactory_source.source_package(SNAPSHOT_VERSION)
        snapshot: dict[str, object] = {
            "version": SNAPSHOT_VERSION, "datasets": bundled.from_source_package(sdist),
        }  # fmt: skip
        path = bundled.snapshot_path(SNAPSHOT_VERSION)
    else:
        snapshot = live_snapshot()
        path = snapshot_path(str(snapshot["version"]))
    text = json.dumps(snapshot, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if "--check" in sys.argv:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            print(f"{path} is stale: run hack/snapshot-llamafactory.py", file=sys.stderr)
            return 1
        source = "source package" if "--bundled" in sys.argv else "installed package"
        print(f"{path} matches llamafactory {snapshot['version']}'s {source}")
        return 0
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
