#!/usr/bin/env python3
"""Write generator/data/llamafactory-<version>.json from the installed llamafactory package.

The light path of `lfk` (validate, render) must not import torch, so it reads this snapshot: template names,
the model -> template table behind LLaMA-Factory's web UI, and every legal config key. Run it after changing
the pinned llamafactory version; `tests/llamafactory/test_lfinfo.py` fails while the snapshot is stale.

    .venv/bin/python hack/snapshot-llamafactory.py [--check]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DISABLE_VERSION_CHECK", "1")

from generator.core.lfinfo import live_snapshot, snapshot_path  # noqa: E402


def main() -> int:
    snapshot = live_snapshot()
    path = snapshot_path(snapshot["version"])
    text = json.dumps(snapshot, indent=1, sort_keys=True) + "\n"
    if "--check" in sys.argv:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            print(f"{path} is stale: run hack/snapshot-llamafactory.py", file=sys.stderr)
            return 1
        print(f"{path} matches the installed llamafactory {snapshot['version']}")
        return 0
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    print(
        f"wrote {path}: {len(snapshot['templates'])} templates, {len(snapshot['model_templates'])} models, "
        f"{len(snapshot['arguments'])} arguments"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
