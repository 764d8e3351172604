"""The Makefile's set-up lanes and phony targets: each name has a rule, and `make demo` / `make test` still
reach the steps they are for (make -n prints a recipe without running it, but runs the sub-makes the lanes
start, with -n passed on)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")


def rules() -> set[str]:
    return {m for line in MAKEFILE.splitlines() for m in re.findall(r"^([a-zA-Z][\w-]*)\s*:(?!=)", line)}


def test_every_phony_name_has_a_rule():
    phony = {name for line in re.findall(r"^\.PHONY:(.*)$", MAKEFILE, re.M) for name in line.split()}
    assert not phony - rules(), f"phony targets without a rule: {sorted(phony - rules())}"


@pytest.mark.parametrize(
    ("goal", "steps"),
    [
        ("demo", ["hack/build-images.sh", "hack/demo.py specs", "hack/demo.py cluster"]),
        ("test", ["hack/build-images.sh", "install-debs.sh browser", "hack/test-tiers.sh"]),
    ],
)
def test_goal_reaches_its_steps(goal, steps):
    run = subprocess.run(
        ["make", "-n", "--no-print-directory", goal], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    for step in steps:
        assert step in run.stdout, f"make -n {goal} no longer runs {step}:\n{run.stdout}"


def test_one_lane_builds_the_images_once_gos_caches_are_gone():
    """LFK_ONE_LANE=1 (or a disk too small for both lanes' peaks, hack/disk-check.py lanes): the images build
    after the other steps, not beside them."""
    run = subprocess.run(
        ["make", "-n", "--no-print-directory", "test"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LFK_ONE_LANE": "1"},
    )
    assert run.returncode == 0, run.stderr
    steps = [line for line in run.stdout.splitlines() if not line.startswith("lanes=")]
    order = [
        i
        for i, line in enumerate(steps)
        if "build-tools.sh drop-go-caches" in line or "build-images.sh" in line
    ]
    assert [("images" if "build-images" in steps[i] else "drop") for i in order] == ["drop", "images"]
