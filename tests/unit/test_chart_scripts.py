"""The Python the chart's pods run (charts/llama-factory/files/), on real files: the model download's lock,
so that one pod per node does not download the same model at once. (The llamafactory tier runs train.sh,
preflight.py, merge.sh and verify_merge.py for real.)"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

FILES = Path(__file__).resolve().parents[2] / "charts" / "llama-factory" / "files"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, FILES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def download(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = load("download")
    monkeypatch.setattr(module, "POLL_SECONDS", 0.05)
    return module


def test_a_complete_model_is_left_alone(
    download: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    monkeypatch.setattr(download, "download", lambda *a: pytest.fail("must not download"))
    assert download.main("org/model", "main", str(model)) == 0
    assert not (tmp_path / "model.download.lock").exists()


def test_a_model_downloaded_once_serves_the_same_revision_and_refuses_another(
    download: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model"

    def fetch(repo_id: str, revision: str, local_dir: str, **_: object) -> None:
        Path(local_dir, "config.json").write_text("{}")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fetch)
    assert download.main("org/model", "v1", str(model)) == 0
    assert (model / ".lfk-download.json").is_file()
    monkeypatch.setattr(download, "download", lambda *a: pytest.fail("must not download again"))
    assert download.main("org/model", "v1", str(model)) == 0, (
        "another experiment on the same model: nothing to do"
    )
    assert download.main("org/model", "v2", str(model)) == 3, (
        "another revision into the same folder is refused"
    )


def test_a_second_pod_waits_for_the_first_ones_download(
    download: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model"
    (tmp_path / "model.download.lock").mkdir()  # another pod holds the lock

    def finish() -> None:
        time.sleep(0.3)
        model.mkdir()
        (model / "config.json").write_text("{}")

    monkeypatch.setattr(download, "download", lambda *a: pytest.fail("only the lock holder downloads"))
    threading.Thread(target=finish).start()
    assert download.main("org/model", "main", str(model)) == 0


def test_the_lock_holder_downloads_and_releases_the_lock(
    download: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model"
    calls = []
    monkeypatch.setattr(download, "download", lambda *a: calls.append(a) or 0)
    assert download.main("org/model", "main", str(model)) == 0
    assert calls == [("org/model", "main", str(model))]
    assert not (tmp_path / "model.download.lock").exists()


def test_a_stale_lock_is_taken_over(
    download: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / "model.download.lock"
    lock.mkdir()
    old = time.time() - download.STALE_LOCK_SECONDS - 5
    os.utime(lock, (old, old))
    calls = []
    monkeypatch.setattr(download, "download", lambda *a: calls.append(a) or 0)
    assert download.main("org/model", "main", str(tmp_path / "model")) == 0
    assert len(calls) == 1


def fake_trainer(tmp_path: Path, output: str, code: int) -> dict[str, str]:
    """A stand-in `llamafactory-cli` on PATH (and a preflight that passes): train.sh's own logic runs for real."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "llamafactory-cli").write_text(f"#!/bin/bash\nprintf '%s\\n' {output!r}\nexit {code}\n")
    (bin_dir / "llamafactory-cli").chmod(0o755)
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "train.sh").write_text((FILES / "train.sh").read_text())
    (scripts / "preflight.py").write_text("import sys\nsys.exit(0)\n")
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "TRAIN_CONFIG": str(tmp_path / "train.yaml"),
    }


@pytest.mark.parametrize(
    ("output", "code", "expected"),
    [
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", 1, 4),
        ("RuntimeError: something else broke", 1, 1),
        ("{'train_loss': 1.2}", 0, 0),
    ],
)
def test_train_sh_turns_cuda_out_of_memory_into_exit_4(
    tmp_path: Path, output: str, code: int, expected: int
) -> None:
    import subprocess

    env = fake_trainer(tmp_path, output, code)
    result = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "train.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == expected, result.stdout + result.stderr
    assert output in result.stdout, "the trainer's output still reaches the pod's log"
    if expected == 4:
        assert "the GPU ran out of memory" in result.stderr
