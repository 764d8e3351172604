"""`lfk chat`: the guide's curl to the served model, done for the person - a port-forward to the vLLM
Service, the served model's name and the API key from the experiment's Secret, and the conversation's
history kept between turns."""

from __future__ import annotations

import base64
import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import requests

from ..checks.datasets import image_type
from ..errors import KubeError, LfkError
from . import kube, ui
from .target import Target

FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) ->")


MAX_IMAGE_BYTES = 20 * 1024 * 1024


def image_content(path: str) -> str:
    """An image file as the data: URL an OpenAI chat message carries; LfkError when it is not an image."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_IMAGE_BYTES + 1)
    except OSError as exc:
        raise LfkError(f"chat: cannot read the image {path}: {exc.strerror}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise LfkError(f"chat: {path} is over {MAX_IMAGE_BYTES // 2**20} MiB")
    kind = image_type(data[:12])
    if kind is None:
        raise LfkError(f"chat: {path} is not a PNG, JPEG, GIF, WebP or BMP image")
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


@dataclass
class Conversation:
    """One chat with the served model: every turn is sent with the ones before it."""

    url: str
    model: str
    api_key: str | None
    max_tokens: int = 256
    temperature: float = 0.7
    messages: list[dict[str, Any]] = field(default_factory=list)

    def ask(self, text: str, timeout: float = 300, images: tuple[str, ...] = ()) -> str:
        """One turn; images (data: URLs, image_content) go with its text in the OpenAI message format."""
        content: Any = text
        if images:
            content = [{"type": "text", "text": text}]
            content += [{"type": "image_url", "image_url": {"url": url}} for url in images]
        self.messages.append({"role": "user", "content": content})
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            response = requests.post(
                f"{self.url}/v1/chat/completions", json=body, headers=headers, timeout=timeout
            )
        except requests.RequestException as exc:
            self.messages.pop()
            raise LfkError(f"chat: vLLM did not answer: {exc}") from None
        if response.status_code != 200:
            self.messages.pop()
            hint = " (the API key is wrong or missing)" if response.status_code == 401 else ""
            raise LfkError(f"chat: vLLM answered {response.status_code}{hint}: {response.text[:300]}")
        answer = str(response.json()["choices"][0]["message"]["content"])
        self.messages.append({"role": "assistant", "content": answer})
        return answer

    def reset(self) -> None:
        """Forget the turns, keep the system prompt."""
        self.messages = [m for m in self.messages if m["role"] == "system"]


def api_key_of(target: Target) -> str | None:
    """The API key vLLM checks, read from the Secret the spec names (serve.apiKeySecret); None without one."""
    ref = target.spec.data["serve"].get("apiKeySecret")
    if not ref:
        return None
    name, key = ref["name"], ref.get("key", "token")
    try:
        secret = kube.request(target.api, "GET", f"/api/v1/namespaces/{target.namespace}/secrets/{name}")
    except KubeError as exc:
        raise LfkError(
            f"chat: cannot read Secret {target.namespace}/{name} for the API key ({exc}); "
            "put the key in $VLLM_API_KEY instead"
        ) from None
    encoded = (secret.get("data") or {}).get(key)
    if encoded is None:
        raise LfkError(f"chat: Secret {target.namespace}/{name} has no key {key!r}")
    return base64.b64decode(encoded).decode()


def served_for_real(target: Target) -> None:
    """A Ready vLLM pod on a node that really runs containers, or LfkError saying why there is none."""
    pod, why = ui.ready_pod(target, "vllm")
    if pod is None:
        raise LfkError(f"chat: {why}")
    node = pod["spec"].get("nodeName", "")
    if node in kube.simulated_nodes(target.api):
        raise LfkError(
            f"chat: vLLM's pod is on {node}, a SIMULATED node (kwok): no container runs there, nothing serves"
        )


@contextlib.contextmanager
def port_forward(target: Target, timeout: float = 30) -> Iterator[str]:
    """`kubectl port-forward` to the vLLM Service on a free local port, for as long as the block runs."""
    command = target.kubectl(
        "port-forward", *ui.LOOPBACK, f"svc/{target.facts.releases['vllm']}", f":{ui.PORTS['vllm']}"
    )
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:  # kubectl exited
                error = process.stderr.read().strip() if process.stderr else ""
                raise LfkError(f"chat: kubectl port-forward failed: {error}")
            if match := FORWARDING.search(line):
                yield f"http://127.0.0.1:{match.group(1)}"
                return
        raise LfkError(f"chat: kubectl port-forward did not start within {timeout:.0f} s")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
