"""`helm test` for the vLLM release (and for an adapter in a shared vLLM): one OpenAI chat completion, and a
check that it is a real answer: an assistant message with text that is not blank, at least one completion
token, and a finish_reason of stop or length.

Then, when PARITY_RECORD names the record the training or merge wrote beside the served model
(prompt_parity.py), that vLLM builds the same prompts as LLaMA-Factory trained on and stops on its template's
stop tokens. Every problem found is printed, not only the first.

Runs in the vLLM image (Python standard library only). Reads VLLM_URL, MODEL, PROMPT, MAX_TOKENS,
PARITY_RECORD and, when the server has one, VLLM_API_KEY.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

import prompt_parity  # beside this script

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


def main() -> int:
    url = os.environ["VLLM_URL"].rstrip("/") + "/v1/chat/completions"
    model = os.environ["MODEL"]
    body = {
        "model": model,
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
    problems = answer_problems(answer, model)
    if not problems:
        print(f"chat test: {model} answered: {answer['choices'][0]['message']['content']!r}")
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
