"""Build steps pyproject.toml cannot declare: the wheel carries what `lfk` reads besides its code.

generator/project.py finds the chart, the spec schema and hack/versions.env in the checkout it runs from.
Installed from a wheel (`pip install .`, as pre-commit installs a hook repository) there is no checkout, so
the build copies them into the package as generator/_bundle/<their repository path>. An sdist carries them at
its root, so a wheel built from the sdist gets the same copies. Editable installs run from the checkout and
copy nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
# repository paths the package reads at run time: the whole chart, so `lfk install` works from a wheel too
BUNDLED = ["charts/llama-factory", "schemas/experiment.schema.json", "hack/versions.env"]
BUNDLE_DIR = Path("generator") / "_bundle"
# not part of the chart that runs: helm-unittest's suites and snapshots (as in the chart's .helmignore), caches
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.tmp", ".DS_Store")


def _copy(relative: str, target_root: Path) -> None:
    source = ROOT / relative
    if not source.exists():
        raise FileNotFoundError(f"{relative} is missing: the package cannot be built without it")
    target = target_root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, ignore=_chart_ignore if relative.startswith("charts/") else SKIPPED)
    else:
        shutil.copy2(source, target)


def _chart_ignore(directory: str, names: list[str]) -> set[str]:
    ignored = set(SKIPPED(directory, names))
    if Path(directory).name == "llama-factory" and Path(directory).parent.name == "charts":
        ignored.add("tests")  # the chart root's tests/ is helm-unittest's; templates/tests/ stays
    return ignored


class BuildPyWithBundle(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        bundle = Path(self.build_lib) / BUNDLE_DIR
        shutil.rmtree(bundle, ignore_errors=True)  # nothing left over from an earlier build
        for relative in BUNDLED:
            _copy(relative, bundle)


class SdistWithBundle(sdist):
    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        for relative in BUNDLED:
            target = Path(base_dir) / relative
            if target.is_dir():
                shutil.rmtree(target)
            _copy(relative, Path(base_dir))


setup(cmdclass={"build_py": BuildPyWithBundle, "sdist": SdistWithBundle})
