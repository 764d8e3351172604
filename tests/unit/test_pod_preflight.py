"""The training's preflight (files/preflight.py), run for real on files made here: a ready config passes
LLaMA-Factory's own argument parse (the llamafactory package of this environment, the image's version); a
missing model file, an adapter or reward model another run has not written yet, an unregistered or missing
dataset, an absent package, an unreachable MLflow server or arguments LLaMA-Factory refuses exit with the
contract's configError, naming the item and its fix; a checkpoint a kill left half-written is removed on the GPU run only. In this process: LLaMA-Factory is
imported once for all of them."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.podfiles import FILES, load, ready_training

EXIT = json.loads((FILES / "contract.json").read_text())["exitCodes"]


@pytest.fixture()
def ready(tmp_path: Path) -> dict[str, Any]:
    return ready_training(tmp_path)


def preflight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: dict[str, Any], *flags: str
) -> tuple[int, str]:
    """preflight.py CONFIG FLAGS in this process (a fresh copy of the module each time): (exit code, what it
    printed on stdout and stderr)."""
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    # what the check sets for LLaMA-Factory is put back after the test
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("DISABLE_VERSION_CHECK", "1")
    monkeypatch.delenv("NODE_RANK", raising=False)
    monkeypatch.delenv("PET_NODE_RANK", raising=False)
    monkeypatch.setattr(sys, "argv", ["preflight.py", str(tmp_path / "train.yaml"), *flags])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = load("preflight").main()
    return code, out.getvalue() + err.getvalue()


def needs_llamafactory() -> None:
    """The argument parse is LLaMA-Factory's own: skipped only where the package is not installed."""
    pytest.importorskip("llamafactory", reason="the llamafactory package (make venv) parses the arguments")


def test_a_ready_config_passes_llamafactorys_own_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ready: dict[str, Any]
) -> None:
    needs_llamafactory()
    code, out = preflight(tmp_path, monkeypatch, ready, "--cpu")
    assert code == EXIT["ok"], out
    assert "✓ base model:" in out and "✓ dataset qa: registered (alpaca)" in out
    assert "✓ LLaMA-Factory arguments: accepted" in out


def test_arguments_llamafactory_refuses_are_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ready: dict[str, Any]
) -> None:
    needs_llamafactory()
    code, out = preflight(tmp_path, monkeypatch, {**ready, "predict_with_generate": True}, "--cpu")
    assert code == EXIT["configError"] == 3, out
    assert "✗ LLaMA-Factory arguments:" in out and "(fix: run `lfk validate --deep` on the spec)" in out


def test_a_model_folder_without_weights_or_tokenizer_is_named_and_nothing_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ready: dict[str, Any]
) -> None:
    model = Path(ready["model_name_or_path"])
    (model / "model.safetensors").unlink()
    (model / "tokenizer.json").unlink()
    code, out = preflight(tmp_path, monkeypatch, ready, "--cpu")
    assert code == EXIT["configError"], out
    assert f"✗ base model: {model}: missing tokenizer.json or tokenizer.model, weights (*.safetensors)" in out
    assert "LLaMA-Factory arguments" not in out, "the parse reads the model's files: it waits for them"


def test_an_adapter_or_reward_model_another_run_has_not_written_yet_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ready: dict[str, Any]
) -> None:
    """A spec that starts from another experiment's adapter (model.from, use: adapter) or names its reward
    model: the folder is there once that run finished; before, the pod stops with the fix."""
    adapter = tmp_path / "output" / "sft" / "1a2b3c4d"
    code, out = preflight(tmp_path, monkeypatch, {**ready, "adapter_name_or_path": str(adapter)}, "--cpu")
    assert code == EXIT["configError"], out
    assert f"✗ adapter: {adapter}: no adapter_config.json or config.json (fix: finish the run of the" in out
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    code, out = preflight(
        tmp_path,
        monkeypatch,
        {**ready, "adapter_name_or_path": str(adapter), "reward_model": str(tmp_path / "rm")},
    )
    assert f"✓ adapter: {adapter}: present" in out
    assert f"✗ reward model: {tmp_path / 'rm'}: no adapter_config.json or config.json" in out


def test_a_hub_model_is_loaded_at_start_and_not_looked_for_on_the_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ready: dict[str, Any]
) -> None:
    config = {**ready, "model_name_or_path": "org/model", "dataset": "missing"}
    code, out = preflight(tmp_path, monkeypatch, config, "--cpu")
    assert "✓ base model: org/model comes from the hub at load time" in out
    assert code == EXIT["configError"], "the dataset still fails"


def test_an_unregistered_dataset_and_a_missing_dataset_file_are_named_with_their_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ready: dict[str, Any]
) -> None:
    data = Path(ready["dataset_dir"])
    (data / "dataset_info.json").write_text(
        '{"qa": {"file_name": "qa.json"}, "chat": {"file_name": "chat.json"}}'
    )
    code, out = preflight(tmp_path, monkeypatch, {**ready, "dataset": "qa, chat, other"}, "--cpu")
    assert code == EXIT["configError"], out
    assert "✓ dataset qa" in out
    assert f"✗ dataset chat: {data / 'chat.json'} not found (fix: copy the file there)" in out
    assert f"✗ dataset other: not registered in {data / 'dataset_info.json'}" in out
    assert f"(fix: lfk data register {data} other FILE)" in out
    assert "preflight: 2 problem(s): dataset chat, dataset other" in out


def test_an_unreadable_dataset_info_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ready: dict[str, Any]
) -> None:
    (Path(ready["dataset_dir"]) / "dataset_info.json").write_text("[1, 2]")
    code, out = preflight(tmp_path, monkeypatch, ready, "--cpu")
    assert code == EXIT["configError"]
    assert "✗ datasets:" in out and "expected an object of dataset entries" in out


def test_a_quantization_package_the_image_lacks_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ready: dict[str, Any]
) -> None:
    absent = [m for m in ("bitsandbytes", "hqq", "eetq") if importlib.util.find_spec(m) is None]
    if not absent:
        pytest.skip("every quantization package is installed here: none to find missing")
    config = {**ready, "quantization_bit": 4, "quantization_method": absent[0]}
    code, out = preflight(tmp_path, monkeypatch, config, "--cpu")
    assert code == EXIT["configError"], out
    assert f"✗ {absent[0]} package: this image has no {absent[0]}, which QLoRA with {absent[0]} needs" in out


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def mlflow_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_mlflow_server_is_asked_only_when_told_and_a_silent_one_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ready: dict[str, Any], mlflow_server: str
) -> None:
    pytest.importorskip("mlflow", reason="reporting to MLflow needs the package (the llamafactory extra)")
    config = {**ready, "report_to": "mlflow", "model_name_or_path": str(tmp_path / "none")}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    _, out = preflight(tmp_path, monkeypatch, config, "--cpu", "--check-mlflow-server")
    assert f"✓ MLflow server: {mlflow_server} answers" in out
    closed = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    silent = f"http://127.0.0.1:{closed.server_address[1]}"
    closed.server_close()  # nothing listens there any more
    monkeypatch.setenv("MLFLOW_TRACKING_URI", silent)
    code, out = preflight(tmp_path, monkeypatch, config, "--cpu")
    assert "MLflow server" not in out, "not asked without --check-mlflow-server"
    code, out = preflight(tmp_path, monkeypatch, config, "--cpu", "--check-mlflow-server")
    assert code == EXIT["configError"]
    assert f"✗ MLflow server: {silent} does not answer" in out


@pytest.mark.parametrize("cpu", [False, True], ids=["gpu-run", "cpu-hook"])
def test_a_half_written_checkpoint_is_removed_by_the_training_pod_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ready: dict[str, Any], cpu: bool
) -> None:
    output = Path(ready["output_dir"])
    for step, complete in ((10, True), (20, False)):
        (output / f"checkpoint-{step}").mkdir(parents=True)
        if complete:
            (output / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    Path(ready["model_name_or_path"], "config.json").unlink()  # fails fast, after the clean-up
    code, out = preflight(tmp_path, monkeypatch, ready, *(["--cpu"] if cpu else []))
    assert code == EXIT["configError"]
    assert (output / "checkpoint-10").is_dir(), "a complete checkpoint is kept"
    assert (output / "checkpoint-20").exists() == cpu, "the GPU-less hook never removes anything"
    assert ("removing incomplete" in out) != cpu
