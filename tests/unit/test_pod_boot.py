"""How containers start (files/boot.py): with no packages to install, it becomes the script, which gets its
arguments as they were given and whose exit code is the container's; a PIP_PACKAGES that is not a JSON list of
package names is refused (exit 1, the reason said) before anything is installed or run. (Installing real
packages needs an index: the node tier's pods do that.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.podfiles import scripts_folder

# arguments a shell would split, expand or run: they must reach the script unchanged
ODD_ARGS = ["--metric=rouge-l", "two words", "$(touch /tmp/lfk-boot-pwned)", "", "*", "ąę\n"]


@pytest.fixture()
def scripts(tmp_path: Path) -> Path:
    """A pod's /scripts: boot.py beside a Python and a shell script that record their arguments and exit 7."""
    folder = scripts_folder(tmp_path / "scripts", "boot.py")
    (folder / "show.py").write_text(
        "import json, os, sys\nopen(os.environ['RAN'], 'w').write(json.dumps(sys.argv[1:]))\nsys.exit(7)\n"
    )
    (folder / "show.sh").write_text(
        '#!/bin/bash\npython3 -c \'import json, os, sys; open(os.environ["RAN"], "w").write(json.dumps(sys.argv[1:]))\' "$@"\nexit 7\n'
    )
    return folder


def boot(
    scripts: Path, tmp_path: Path, argv: list[str], pip_packages: str | None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PIP_PACKAGES"}
    env["RAN"] = str(tmp_path / "ran.json")
    if pip_packages is not None:
        env["PIP_PACKAGES"] = pip_packages
    return subprocess.run(
        [sys.executable, str(scripts / "boot.py"), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "pip_packages", [None, "", "  ", "[]"], ids=["unset", "empty", "blank", "empty-list"]
)
@pytest.mark.parametrize("script", ["show.py", "show.sh"])
def test_without_packages_the_script_runs_with_its_arguments_and_its_exit_code(
    scripts: Path, tmp_path: Path, script: str, pip_packages: str | None
) -> None:
    result = boot(scripts, tmp_path, [script, *ODD_ARGS], pip_packages)
    assert result.returncode == 7, result.stderr
    assert (tmp_path / "ran.json").read_text() == json.dumps(ODD_ARGS)
    assert "pip install" not in result.stdout
    assert not Path("/tmp/lfk-boot-pwned").exists()


def test_a_script_given_by_its_path_runs_too(scripts: Path, tmp_path: Path) -> None:
    result = boot(scripts, tmp_path, [str(scripts / "show.py"), "x"], None)
    assert result.returncode == 7 and (tmp_path / "ran.json").read_text() == '["x"]'


@pytest.mark.parametrize(
    ("pip_packages", "reason"),
    [
        ("mlflow==2.1", "PIP_PACKAGES is not JSON"),
        ("--index-url=http://evil", "PIP_PACKAGES is not JSON"),
        ('{"mlflow": "2.1"}', "PIP_PACKAGES is not a JSON list of package names"),
        ('"mlflow"', "PIP_PACKAGES is not a JSON list of package names"),
        ('["mlflow", 3]', "PIP_PACKAGES entry 3 is not a package"),
        ('["mlflow", ""]', 'PIP_PACKAGES entry "" is not a package'),
        ('["mlflow\\nrm -rf /"]', 'PIP_PACKAGES entry "mlflow\\nrm -rf /" holds a control character'),
        ("[" + ", ".join(['"a"'] * 101) + "]", "PIP_PACKAGES names 101 packages; at most 100"),
    ],
)
def test_a_malformed_package_list_is_refused_and_the_script_never_runs(
    scripts: Path, tmp_path: Path, pip_packages: str, reason: str
) -> None:
    result = boot(scripts, tmp_path, ["show.py", "x"], pip_packages)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"boot: {reason}" in result.stderr and "show.py not started" in result.stderr
    assert not (tmp_path / "ran.json").exists()
    assert "pip install" not in result.stdout, "nothing was installed"


@pytest.mark.parametrize(
    ("argv", "error"),
    [([], "usage: boot.py SCRIPT [ARGS...]"), (["show.txt"], "boot.py starts .py and .sh scripts only")],
)
def test_no_script_or_one_of_another_kind_is_a_usage_error(
    scripts: Path, tmp_path: Path, argv: list[str], error: str
) -> None:
    result = boot(scripts, tmp_path, argv, None)
    assert result.returncode == 2 and error in result.stderr
