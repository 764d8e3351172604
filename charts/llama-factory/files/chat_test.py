"""`helm test` for the vLLM release (and for an adapter in a shared vLLM): one OpenAI chat completion, and a
check that it is a real answer: an assistant message with text that is not blank, at least one completion
token, and a finish_reason of stop or length.

For a vision-language model (IMAGE_TEST=1), the same question again with a small picture: a real answer too,
and the picture must have added prompt tokens (vLLM passed it to the model rather than dropping it).

Then, when PARITY_RECORD names the record the training or merge wrote beside the served model
(prompt_parity.py), that vLLM builds the same prompts as LLaMA-Factory trained on and stops on its template's
stop tokens. Every problem found is printed, not only the first.

Runs in the vLLM image (Python standard library only). Reads VLLM_URL, MODEL, PROMPT, MAX_TOKENS,
IMAGE_TEST, PARITY_RECORD and, when the server has one, VLLM_API_KEY.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import sys
import urllib.error
import urllib.request
import zlib

# prompt_parity beside this script (the pods' /scripts), also when `lfk check` imports this file by its path
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prompt_parity  # noqa: E402

# a served model must say something and stop for a reason the server names: a finish_reason of "abort" or
# none at all, no tokens, or only whitespace is a model (or a chat template) that answers nothing
FINISHED = ("stop", "length")


def answer_problems(answer: object, model: str) -> list[str]:
    """What is wrong with a chat completion from `model`; empty when it is a real answer."""
    if not isinstance(answer, dict):
        return [f"the answer is not a JSON object: {json.dumps(answer)[:200]}"]
    problems = []
    if answer.get("object") != "chat.completion":
        problems.append(f"object is {answer.get('object')!r}, expected 'chat.completion'")
    if answer.get("model") != model:
        problems.append(f"model is {answer.get('model')!r}, expected {model!r}")
    choices = answer.get("choices") or []
    first = choices[0] if choices and isinstance(choices[0], dict) else {}
    message = first.get("message") or {}
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(message, dict) or message.get("role") != "assistant" or not isinstance(content, str):
        problems.append(f"choices[0].message is not an assistant message with text: {message!r}")
    elif not content.strip():
        problems.append(f"the answer is empty ({content!r}): the model answered nothing")
    if first.get("finish_reason") not in FINISHED:
        problems.append(
            f"choices[0].finish_reason is {first.get('finish_reason')!r}, expected one of {FINISHED}"
        )
    usage = answer.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    if not isinstance(tokens, int) or isinstance(tokens, bool):
        problems.append("usage.completion_tokens is missing")
    elif tokens < 1:
        problems.append(f"usage.completion_tokens is {tokens}: the model generated nothing")
    return problems


# the picture of the image test: small enough for any model's processor to take whole
PICTURE_SIDE = 32


def png(side: int, rgb: tuple[int, int, int]) -> bytes:
    """A side x side PNG of one colour (8-bit RGB, no filter), written with the standard library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * side for _ in range(side))
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def with_picture(prompt: str) -> list[dict[str, object]]:
    """The prompt and a picture, as an OpenAI chat message's content."""
    url = "data:image/png;base64," + base64.b64encode(png(PICTURE_SIDE, (200, 30, 30))).decode()
    return [{"type": "text", "text": prompt}, {"type": "image_url", "image_url": {"url": url}}]


def ask(url: str, body: dict[str, object], headers: dict[str, str]) -> object:
    """The server's JSON answer; ValueError with the server's own words when it refuses or cannot be reached."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        # the server's own words (vLLM says which model or argument it refuses)
        detail = exc.read().decode("utf-8", errors="replace")[:2000]
        raise ValueError(f"{url} failed: {exc}: {detail}") from None
    except (urllib.error.URLError, ValueError) as exc:
        raise ValueError(f"{url} failed: {exc}") from None


def prompt_tokens(answer: object) -> int:
    usage = answer.get("usage") if isinstance(answer, dict) else None
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else 0


def picture_problems(
    url: str, body: dict[str, object], headers: dict[str, str], text_only: object
) -> tuple[list[str], int]:
    """The question of body again with a picture: (what is wrong with the answer, the prompt tokens the picture
    added). A real answer is wanted, and the picture's tokens in the prompt."""
    messages = body["messages"]
    prompt = messages[0]["content"] if isinstance(messages, list) and messages else ""
    pictured = {**body, "messages": [{"role": "user", "content": with_picture(str(prompt))}]}
    try:
        answer = ask(url, pictured, headers)
    except ValueError as exc:
        return [f"with a picture: {exc}"], 0
    problems = [f"with a picture: {p}" for p in answer_problems(answer, str(body["model"]))]
    added = prompt_tokens(answer) - prompt_tokens(text_only)
    if added <= 0:
        problems.append(
            f"with a picture: the prompt has {prompt_tokens(answer)} tokens, as many as without it "
            f"({prompt_tokens(text_only)}): vLLM did not pass the picture to the model"
        )
    return problems, added


def chat_body(model: str, prompt: str, max_tokens: int) -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }


def headers_for(api_key: str | None) -> dict[str, str]:
    return {"Content-Type": "application/json", **({"Authorization": "Bearer " + api_key} if api_key else {})}


def main() -> int:
    url = os.environ["VLLM_URL"].rstrip("/") + "/v1/chat/completions"
    model = os.environ["MODEL"]
    body = chat_body(model, os.environ.get("PROMPT", "Say hello."), int(os.environ.get("MAX_TOKENS", "16")))
    headers = headers_for(os.environ.get("VLLM_API_KEY"))
    try:
        answer = ask(url, body, headers)
    except ValueError as exc:
        print(f"chat test: {exc}", file=sys.stderr)
        return 1
    problems = answer_problems(answer, model)
    if not problems:
        print(f"chat test: {model} answered: {answer['choices'][0]['message']['content']!r}")  # type: ignore[index]
    if os.environ.get("IMAGE_TEST") == "1":
        found, added = picture_problems(url, body, headers, answer)
        if not found:
            print(
                f"chat test: a {PICTURE_SIDE} x {PICTURE_SIDE} picture took {added} prompt tokens and was answered"
            )
        problems += found
    record_path = os.environ.get("PARITY_RECORD", "")
    if record_path:
        problems += parity_problems(
            record_path, os.environ["VLLM_URL"], model, os.environ.get("VLLM_API_KEY")
        )
    if problems:
        print("chat test: failed:\n  - " + "\n  - ".join(problems), file=sys.stderr)
        return 1
    return 0


def parity_problems(record_path: str, url: str, model: str, api_key: str | None) -> list[str]:
    try:
        record = prompt_parity.load_record(record_path)
    except (OSError, ValueError) as exc:
        return [
            f"no prompt parity record at {record_path} ({exc}): the model was trained or merged before the "
            "record existed, or writing it failed (the train or merge Job's log says why); rerun the merge, or "
            "for an adapter the training, to write it"
        ]
    try:
        found = prompt_parity.problems(record, url, model, api_key)
    except prompt_parity.NotVllm as exc:
        return [str(exc)]
    if not found:
        print(f"chat test: vLLM builds {prompt_parity.summary(record)}")
    return found


if __name__ == "__main__":
    sys.exit(main())
