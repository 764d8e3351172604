"""What `lfk validate`, `lfk render` and `lfk describe` import: nothing cluster-side (the Kubernetes client,
google-auth, requests, the operations room), so the commands that never talk to a cluster start fast. A
structural check in a fresh interpreter, not a timing; the same probe run on a cluster command proves it
sees such imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = str(ROOT / "values" / "tiny-cpu" / "experiment.yaml")
CLUSTER_SIDE = (
    "pykube",
    "google.auth",
    "requests",
    "urllib3",
    "kubernetes",
    "generator.ops",
    "generator.cluster",
)

# runs one lfk command in this interpreter, then prints the cluster-side modules it imported
PROBE = """
import json, sys
from generator.cli import cli
try:
    cli(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
prefixes = tuple(json.loads({prefixes!r}))
print("\\n" + json.dumps(sorted(m for m in sys.modules if m.startswith(prefixes) and
                                 (m in prefixes or m.startswith(tuple(p + "." for p in prefixes))))))
"""


def imported(*args: str, tmp: Path | None = None) -> list[str]:
    code = PROBE.format(prefixes=json.dumps(CLUSTER_SIDE))
    result = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    found: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


@pytest.mark.parametrize(
    "args",
    [
        ("validate", SPEC),
        ("validate", "--quiet", SPEC),
        ("render", "--stdout", SPEC),
        ("render", "--check", SPEC),
        ("describe", SPEC),
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_commands_without_a_cluster_import_nothing_cluster_side(args: tuple[str, ...]) -> None:
    assert imported(*args) == []


def test_the_probe_sees_a_cluster_commands_imports() -> None:
    found = imported("status", "--help")
    assert "pykube" in found and "generator.ops.kube" in found
