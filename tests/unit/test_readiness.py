"""Each checklist item on real files and a real HTTP server on 127.0.0.1. (The Secrets and GPU-node items
need the API server: the cluster tier covers them; the merged model item, the llamafactory tier.)"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from generator.core.facts import derive
from generator.core.spec import spec_from_text
from generator.ops import cluster_readiness, readiness
from tests.support import fakeserver
from tests.support.specs import spec_with

SPEC = """
name: check
storage: {existingClaim: llm-storage}
model: {path: /storage/models/llama-3.2-3b-instruct, template: llama3}
data: {datasets: [qa, chat]}
resources: {gpu: {memoryGiB: 80}}
tracking: {mlflow: {trackingUri: "http://127.0.0.1:PORT"}}
"""


@pytest.fixture()
def storage(tmp_path: Path) -> Path:
    model = tmp_path / "models" / "llama-3.2-3b-instruct"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 128256}))
    (model / "tokenizer_config.json").write_text("{}")
    (model / "tokenizer.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"\0" * 16)
    data = tmp_path / "data"
    data.mkdir()
    (data / "qa.json").write_text(json.dumps([{"instruction": "q", "input": "", "output": "a"}]))
    (data / "dataset_info.json").write_text(json.dumps({"qa": {"file_name": "qa.json"}}))
    return tmp_path


class Handler(BaseHTTPRequestHandler):
    models = ["check"]

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/health":
            body = b"OK"
        elif self.path == "/v1/models":
            body = json.dumps(
                {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}
            ).encode()
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    thread.join()


def spec(server_url: str = "http://127.0.0.1:9", extra: str = ""):  # type: ignore[no-untyped-def]
    port = server_url.rsplit(":", 1)[1]
    return spec_from_text(SPEC.replace("PORT", port) + extra, "experiment.yaml")


def test_base_model_present_missing_or_to_be_downloaded(storage: Path) -> None:
    assert readiness.base_model(spec(), storage).ok is True
    (storage / "models" / "llama-3.2-3b-instruct" / "model.safetensors").unlink()
    missing = readiness.base_model(spec(), storage)
    assert (
        missing.ok is False
        and "missing weights" in missing.detail
        and "huggingface-cli download" in missing.fix
    )
    assert readiness.base_model(spec(), None).ok is None
    to_download = SPEC.replace("PORT", "9").replace(
        "llama-3.2-3b-instruct, template: llama3}",
        "new-model, template: llama3, hub: {id: meta-llama/Llama-3.2-3B-Instruct}}",
    )
    item = readiness.base_model(spec_from_text(to_download, "e.yaml"), storage)
    assert item.ok is True and "downloads meta-llama/Llama-3.2-3B-Instruct first" in item.detail


def test_datasets_registered_valid_or_not(storage: Path) -> None:
    items = readiness.dataset_items(spec(), storage)
    assert [(i.name, i.ok) for i in items] == [("dataset qa", True), ("dataset chat", False)]
    assert "lfk data register /storage/data chat FILE" in items[1].fix
    (storage / "data" / "qa.json").write_text(json.dumps([{"instruction": "q", "input": "", "output": None}]))
    assert readiness.dataset_items(spec(), storage)[0].ok is False


def test_template_matches_the_models_own_files(storage: Path) -> None:
    facts = derive(spec())
    assert readiness.template(spec(), facts, storage).ok is True
    folder = storage / "models" / "llama-3.2-3b-instruct"
    (folder / "chat_template.jinja").write_text("{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}")
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    wrong = readiness.template(spec(), facts, storage)
    assert wrong.ok is False and wrong.fix == "set model.template: qwen"


def test_vram_item_follows_the_estimate() -> None:
    assert readiness.vram(spec(), derive(spec())).ok is True
    too_big = spec_from_text(
        SPEC.replace("PORT", "9").replace("memoryGiB: 80", "memoryGiB: 16")
        + "method: {type: full}\ntraining: {learningRate: 1.0e-5}\n",
        "e.yaml",
    )
    item = readiness.vram(too_big, derive(too_big))
    assert item.ok is False and "qlora" in item.fix


def test_mlflow_reachable_or_not(server: str) -> None:
    assert readiness.mlflow(spec(server)).ok is True
    down = readiness.mlflow(spec("http://127.0.0.1:9"), timeout=2)
    assert down.ok is False and "127.0.0.1:9" in down.detail
    inside = spec_from_text(
        SPEC.replace("http://127.0.0.1:PORT", "http://mlflow.mlops.svc.cluster.local:5000"), "e.yaml"
    )
    assert readiness.mlflow(inside).ok is None


def test_referenced_secrets_are_collected_with_their_keys() -> None:
    seed = spec_from_text(
        (Path(__file__).resolve().parents[2] / "values/llama31-qa/experiment.yaml").read_text(), "e.yaml"
    )
    assert cluster_readiness.referenced_secrets(seed) == {
        "hf-token": {"token"},
        "mlflow-credentials": {"username", "password"},
        "vllm-api-key": {"token"},
    }
    assert cluster_readiness.secrets(seed, derive(seed), None).ok is None


def test_served_model_is_asked_for_its_name(server: str) -> None:
    facts = derive(spec())
    assert readiness.served_model(facts, server, None).ok is True
    Handler.models = ["something-else"]
    try:
        wrong = readiness.served_model(facts, server, None)
    finally:
        Handler.models = ["check"]
    assert wrong.ok is False and "not 'check'" in wrong.detail
    assert readiness.served_model(facts, None, None).ok is None


def test_served_prompts_are_compared_with_the_record_beside_the_served_model(tmp_path: Path) -> None:
    """lfk check --after: the record read from the storage, the prompts asked of a stand-in vLLM; a server that
    builds another prompt fails the item with the token named, one without /tokenize is not checked."""
    facts = derive(spec())
    record_dir = tmp_path / facts.serve_model.removeprefix("/storage/")
    record_dir.mkdir(parents=True)
    conversation = {"name": "hi", "messages": [{"role": "user", "content": "Hi"}], "promptIds": [0, 5, 6],
                    "promptPieces": ["<s>", "user", "Hi"]}  # fmt: skip
    record = {
        "template": "llama3",
        "stopTokenIds": [7],
        "stopTokens": ["</s>"],
        "conversations": [conversation],
    }
    missing = readiness.served_prompts(facts, tmp_path, "http://127.0.0.1:9", None)
    assert missing.ok is False and "lfk-prompt-parity.json" in missing.detail
    (record_dir / "lfk-prompt-parity.json").write_text(json.dumps(record))
    handlers: fakeserver.Handlers = {
        "/tokenize": lambda body: {"tokens": [0, 5, 6]},
        "/v1/completions": lambda body: {"choices": [{"finish_reason": "stop"}]},
    }
    with fakeserver.serve(handlers) as (url, _):
        assert readiness.served_prompts(facts, tmp_path, url, None).ok is True
        handlers["/tokenize"] = lambda body: {"tokens": [0, 9, 6]}
        handlers["/detokenize"] = lambda body: {"prompt": "assistant"}
        wrong = readiness.served_prompts(facts, tmp_path, url, None)
        assert wrong.ok is False and "trained 'user' (id 5), served 'assistant' (id 9)" in wrong.detail
        del handlers["/tokenize"]
        other = readiness.served_prompts(facts, tmp_path, url, None)
        assert other.ok is None and "has no /tokenize" in other.detail
    assert readiness.served_prompts(facts, tmp_path, None, None).ok is None


VISION = """
model: {path: /storage/models/tiny-vl, template: qwen2_vl}
data:
  datasets: [shapes]
  register:
    shapes: {file: shapes.json, format: sharegpt, columns: {messages: messages, images: images}}
"""


def test_a_model_served_with_images_allowed_is_asked_with_a_picture_after_training() -> None:
    """lfk check --after: a question with a picture (files/chat_test.py's), answered by a stand-in vLLM; the item
    fails when the picture added no prompt tokens. A text model gets no such item."""
    assert "vLLM takes a picture" not in " ".join(
        i.name for i in readiness.after_training(spec(), None, None, None)
    )
    vision = spec_with(VISION)
    facts = derive(vision)
    tokens = {"text": 9, "picture": 16}

    def answer(body: dict[str, object]) -> dict[str, object]:
        content = body["messages"][0]["content"]  # type: ignore[index]
        return {
            "object": "chat.completion", "model": facts.served_name,
            "choices": [{"message": {"role": "assistant", "content": "a square"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": tokens["picture" if isinstance(content, list) else "text"], "completion_tokens": 2},
        }  # fmt: skip

    with fakeserver.serve({"/v1/chat/completions": answer}) as (url, requests):
        [item] = [i for i in readiness.after_training(vision, None, url, None) if "picture" in i.name]
        assert item.ok is True and item.detail == "a 32 x 32 picture took 7 prompt tokens and was answered"
        assert requests[-1]["body"]["messages"][0]["content"][1]["type"] == "image_url"
        tokens["picture"] = 9
        dropped = readiness.served_picture(facts, url, None)
        assert dropped.ok is False and "vLLM did not pass the picture to the model" in dropped.detail
    assert readiness.served_picture(facts, None, None).ok is None
