"""The pre-commit hooks (.pre-commit-hooks.yaml) as another repository uses them, through the real pre-commit:
it clones this repository at a commit, pip-installs it into its own virtualenv (dependencies from PyPI) and runs
`lfk validate` and `lfk render --check` on the other repository's values/."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .test_package import EXAMPLE, working_tree

SPEC = f"values/{EXAMPLE.name}/experiment.yaml"


def git_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "LFK_HELM")}
    env.update(
        GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.com",
        GIT_CONFIG_GLOBAL=str(tmp_path / "gitconfig"), GIT_CONFIG_NOSYSTEM="1",
        PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"), XDG_CACHE_HOME=str(tmp_path / "cache"),
    )  # fmt: skip
    return env


def git(*args: str, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"git {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout.strip()


def pre_commit(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", *args], cwd=cwd, capture_output=True, text=True, env=env
    )


@pytest.mark.slow
def test_hooks_through_pre_commit(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.fail("git is missing")
    if importlib.util.find_spec("pre_commit") is None:
        pytest.fail("pre-commit is missing: run `make venv` (it is in the dev extra)")
    env = git_env(tmp_path)

    # the hook repository: this working tree, committed in a throwaway repository (pre-commit clones a rev)
    hooks = working_tree(tmp_path / "hooks")
    git("init", "--quiet", cwd=hooks, env=env)
    git("add", "--all", cwd=hooks, env=env)
    git("commit", "--quiet", "--no-verify", "-m", "hooks", cwd=hooks, env=env)
    rev = git("rev-parse", "HEAD", cwd=hooks, env=env)

    # another repository keeping one experiment, with the hooks in its config
    user = tmp_path / "user"
    shutil.copytree(EXAMPLE, user / "values" / EXAMPLE.name, ignore=shutil.ignore_patterns("*.png"))
    (user / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {hooks}\n    rev: {rev}\n    hooks:\n      - id: lfk-validate\n"
        "      - id: lfk-render-check\n",
        encoding="utf-8",
    )
    git("init", "--quiet", cwd=user, env=env)
    git("add", "--all", cwd=user, env=env)

    # first run: pre-commit builds the hooks' virtualenv (pip install of the package and its dependencies)
    result = pre_commit("run", "--all-files", cwd=user, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"lfk validate\.+Passed", result.stdout), result.stdout
    assert re.search(r"lfk render --check\.+Passed", result.stdout), result.stdout

    # a changed hyperparameter without `lfk render`: the values next to the spec are stale
    spec = user / SPEC
    original = spec.read_text(encoding="utf-8")
    assert "learningRate: 5.0e-5" in original
    spec.write_text(original.replace("learningRate: 5.0e-5", "learningRate: 1.0e-4"), encoding="utf-8")
    result = pre_commit("run", "--all-files", cwd=user, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"lfk validate\.+Passed", result.stdout), result.stdout
    assert re.search(r"lfk render --check\.+Failed", result.stdout), result.stdout
    assert f"{SPEC}: values are stale; run `lfk render {SPEC}`" in result.stdout

    # a values file edited by hand, the spec unchanged: the hook checks the spec of the file's folder
    spec.write_text(original, encoding="utf-8")
    train = user / "values" / EXAMPLE.name / "train.yaml"
    rendered = train.read_text(encoding="utf-8")
    assert "num_train_epochs: 3.0" in rendered
    train.write_text(rendered.replace("num_train_epochs: 3.0", "num_train_epochs: 4.0"), encoding="utf-8")
    result = pre_commit("run", "lfk-render-check", "--files", str(train.relative_to(user)), cwd=user, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{SPEC}: values are stale" in result.stdout
    train.write_text(rendered, encoding="utf-8")

    # a broken spec: the validate hook names the file and the JSON path
    spec.write_text(original.replace("rank: 16", "rank: sixteen"), encoding="utf-8")
    result = pre_commit("run", "lfk-validate", "--all-files", cwd=user, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{SPEC}::$.method.lora.rank: 'sixteen' is not of type 'integer'" in result.stdout
