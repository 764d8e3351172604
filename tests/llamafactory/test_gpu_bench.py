"""`make gpu-bench`'s CPU rehearsal (`--tiny`): the script that will spend the GPU time runs end to end here,
through the real LLaMA-Factory, so the device run cannot fail on a typo. Its figures are not judged (a CPU
says nothing about a GPU's speed): only that every run happened and was measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.llamafactory


def test_the_gpu_bench_rehearses_every_run_on_cpu(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "gpu-bench.py"), "--tiny", "--samples", "16", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"guide", "tuned", "merge"} <= set(results)
    for name in ("guide", "tuned"):
        assert results[name]["train_runtime"] > 0 and results[name]["steps"] > 0
        assert results[name]["first_losses"], name
    assert (tmp_path / "merged" / "config.json").is_file()
    table = result.stdout
    assert "CPU (rehearsal)" in table and "tuned / guide:" in table
    assert [
        line.split()[0]
        for line in table.splitlines()
        if line.startswith(("guide ", "tuned ")) and line.split()[1].isdigit()
    ] == [
        "guide",
        "tuned",
    ]
