"""hack/pip-stepwise.py and the lock it writes (requirements/llamafactory.txt), from which `make llamafactory`
installs a few packages at a time: the lock must carry every package pyproject's dev and llamafactory extras
name, at the version pyproject pins, and the batches must install each locked package exactly once."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

from generator.project import REPO_ROOT

SCRIPT = REPO_ROOT / "hack" / "pip-stepwise.py"
LOCK = REPO_ROOT / "requirements" / "llamafactory.txt"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pip_stepwise", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stepwise = load()


def normal(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    pins = stepwise.read_lock(LOCK)
    names = [normal(pin.split("==")[0]) for pin in pins]
    assert len(names) == len(set(names)), "a package is locked twice"
    assert all(pin.count("==") == 1 for pin in pins)
    return {normal(pin.split("==")[0]): pin.split("==")[1] for pin in pins}


def test_the_lock_pins_what_pyproject_pins_and_names_every_requirement() -> None:
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    lock = locked()
    for requirement in extras["dev"] + extras["llamafactory"]:
        name = normal(re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0])
        assert name in lock, f"{requirement} (pyproject.toml) is missing from {LOCK.name}: run make lock"
        if "==" in requirement:
            assert lock[name] == requirement.split("==")[1], f"{requirement}: the lock has {lock[name]}"
    assert "llamafactory-k8s" not in lock  # the project itself goes in by the last, editable install


def test_large_wheels_go_alone_and_every_pin_exactly_once() -> None:
    pins = stepwise.read_lock(LOCK)
    groups = stepwise.batches(pins)
    flat = [pin for group in groups for pin in group]
    assert sorted(flat) == sorted(pins)
    torch_stack = [g for g in groups if g[0].lower().startswith(("torch==", "nvidia-", "triton=="))]
    assert len(torch_stack) >= 3 and all(len(g) == 1 for g in torch_stack)
    assert max(len(g) for g in groups) == stepwise.BATCH


def test_read_lock_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text("# header\n\nrich==15.0.0  # why\ntorch==2.11.0\n", encoding="utf-8")
    assert stepwise.read_lock(lock) == ["rich==15.0.0", "torch==2.11.0"]
    assert stepwise.batches(["rich==15.0.0", "torch==2.11.0", "nvidia-nccl-cu13==2.28.9"]) == [
        ["torch==2.11.0"],
        ["nvidia-nccl-cu13==2.28.9"],
        ["rich==15.0.0"],
    ]


def test_usage() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "upgrade"], capture_output=True, text=True)
    assert result.returncode == 2 and "pip-stepwise.py install LOCK" in result.stderr
