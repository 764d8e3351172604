"""`helm test` for the vLLM release: one OpenAI chat completion, and a check of the answer's shape.

Runs in the vLLM image (Python standard library only). Reads VLLM_URL, MODEL, PROMPT, MAX_TOKENS and,
when the server has one, VLLM_API_KEY.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    url = os.environ["VLLM_URL"].rstrip("/") + "/v1/chat/completions"
    body = {
        "model": os.environ["MODEL"],
        "messages": [{"role": "user", "content": os.environ.get("PROMPT", "Say hello.")}],
        "max_tokens": int(os.environ.get("MAX_TOKENS", "16")),
        "temperature": 0,
    }
    headers = {"Content-Type": "application/json"}
    if os.environ.get("VLLM_API_KEY"):
        headers["Authorization"] = "Bearer " + os.environ["VLLM_API_KEY"]
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as exc:
        # the server's own words (vLLM says which model or argument it refuses)
        detail = exc.read().decode("utf-8", errors="replace")[:2000]
        print(f"chat test: {url} failed: {exc}: {detail}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, ValueError) as exc:
        print(f"chat test: {url} failed: {exc}", file=sys.stderr)
        return 1
    problems = []
    if answer.get("object") != "chat.completion":
        problems.append(f"object is {answer.get('object')!r}, expected 'chat.completion'")
    if answer.get("model") != body["model"]:
        problems.append(f"model is {answer.get('model')!r}, expected {body['model']!r}")
    choices = answer.get("choices") or []
    message = choices[0].get("message", {}) if choices else {}
    if message.get("role") != "assistant" or not isinstance(message.get("content"), str):
        problems.append(f"choices[0].message is not an assistant message with text: {message!r}")
    if not isinstance(answer.get("usage", {}).get("completion_tokens"), int):
        problems.append("usage.completion_tokens is missing")
    if problems:
        print("chat test: unexpected answer:\n  - " + "\n  - ".join(problems), file=sys.stderr)
        return 1
    print(f"chat test: {body['model']} answered: {message['content']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
