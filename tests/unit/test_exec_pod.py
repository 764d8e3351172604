"""`lfk exec`'s one-off pod starts as the chart's pods do: files/boot.py (the one place that installs the
values' pip packages) runs the pod's own lfk-exec.sh, which becomes the command with its arguments as given
and exits with its code. The pod's shape from the real chart is the chart tier's (tests/chart/test_oneoff.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from generator.ops import oneoff
from generator.project import CHART_FILES

JOB = {
    "metadata": {"namespace": "ns"},
    "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {
        "containers": [{"name": "train", "image": "i", "command": ["python3", "/scripts/boot.py", "train.sh"],
                        "volumeMounts": [{"name": "config", "mountPath": "/config"},
                                         {"name": "scripts", "mountPath": "/scripts"}]}],
        "volumes": [
            {"name": "config", "configMap": {"name": "r-train-config", "items": [{"key": "train.yaml", "path": "train.yaml"}]}},
            {"name": "scripts", "configMap": {"name": "r-train-config", "items": [{"key": "boot.py", "path": "boot.py"}]}},
        ],
    }}},
}  # fmt: skip
CONFIG_MAP = {"metadata": {"name": "r-train-config"}, "data": {"train.yaml": "x: 1\n", "boot.py": "# boot\n"}}


def test_the_command_starts_through_boot_py_with_the_pods_own_script() -> None:
    pod, config = oneoff.one_off(JOB, CONFIG_MAP, "r-exec-1", ["ls", "-l"], interactive=False)
    [container] = pod["spec"]["containers"]
    assert container["command"] == ["python3", "/scripts/boot.py", oneoff.EXEC_SCRIPT, "ls", "-l"]
    scripts = next(v for v in pod["spec"]["volumes"] if v["name"] == "scripts")
    assert {"key": oneoff.EXEC_SCRIPT, "path": oneoff.EXEC_SCRIPT} in scripts["configMap"]["items"]
    assert config["data"][oneoff.EXEC_SCRIPT] == oneoff.EXEC_SCRIPT_TEXT
    assert config["data"]["train.yaml"] == "x: 1\n"
    # the pod has no other copy of the pip step
    assert not any("pip" in part for part in container["command"])


def test_boot_py_then_the_script_become_the_command_with_its_arguments_and_exit_code(tmp_path: Path) -> None:
    for script in CHART_FILES.iterdir():
        if script.is_file():  # not the __pycache__ that importing the scripts leaves
            shutil.copy(script, tmp_path)
    (tmp_path / oneoff.EXEC_SCRIPT).write_text(oneoff.EXEC_SCRIPT_TEXT)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "boot.py"), oneoff.EXEC_SCRIPT,
         "sh", "-c", 'printf "%s|%s" "$0" "$1"; exit 7', "one $(two)", "three"],
        env={**os.environ, "PIP_PACKAGES": "[]"}, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (7, "one $(two)|three")
