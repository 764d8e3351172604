"""`helm test`'s chat check (files/chat_test.py): an answer counts only when it has text that is not blank, at
least one completion token and a finish_reason of stop or length. The script runs whole against a small HTTP
server on 127.0.0.1 that gives the answer under test (the node tier asks the real vLLM)."""

from __future__ import annotations

import base64
import copy
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import fakeserver
from tests.support.podfiles import FILES, load

chat_test = load("chat_test")

GOOD: dict[str, Any] = {
    "object": "chat.completion",
    "model": "tiny",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "LoRA is"}, "finish_reason": "length"}
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
}


def changed(path: str, value: Any) -> dict[str, Any]:
    """GOOD with one field (a dotted path, list indexes as numbers) set to value, or removed for None."""
    answer = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node: Any = answer
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return answer


def test_a_real_answer_has_no_problems() -> None:
    assert chat_test.answer_problems(GOOD, "tiny") == []
    assert chat_test.answer_problems(changed("choices.0.finish_reason", "stop"), "tiny") == []


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        ("choices.0.message.content", "", "the answer is empty ('')"),
        ("choices.0.message.content", " \n\t", "the answer is empty"),
        ("usage.completion_tokens", 0, "usage.completion_tokens is 0: the model generated nothing"),
        ("usage.completion_tokens", None, "usage.completion_tokens is missing"),
        ("usage.completion_tokens", True, "usage.completion_tokens is missing"),
        ("choices.0.finish_reason", "abort", "finish_reason is 'abort'"),
        ("choices.0.finish_reason", None, "finish_reason is None"),
        ("choices.0.message.content", None, "is not an assistant message with text"),
        ("choices.0.message.role", "user", "is not an assistant message with text"),
        ("model", "other", "model is 'other', expected 'tiny'"),
        ("object", "text_completion", "object is 'text_completion'"),
        ("choices", [], "is not an assistant message with text"),
    ],
)
def test_an_answer_that_says_nothing_or_stops_for_no_reason_is_refused(
    path: str, value: Any, problem: str
) -> None:
    problems = chat_test.answer_problems(changed(path, value), "tiny")
    assert any(problem in p for p in problems), problems


def test_an_answer_that_is_not_an_object_is_refused() -> None:
    assert chat_test.answer_problems(["no"], "tiny") == ['the answer is not a JSON object: ["no"]']


@pytest.fixture
def server() -> Iterator[tuple[str, list[dict[str, Any]], list[Any]]]:
    """A server answering each chat completion with the next prepared answer; (url, requests, answers)."""
    answers: list[Any] = []
    with fakeserver.serve({"/v1/chat/completions": lambda body: answers.pop(0)}) as (url, requests):
        yield url, requests, answers


def run_chat_test(url: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "VLLM_URL": url,
        "MODEL": "tiny",
        "PROMPT": "Czym jest LoRA?",
        "MAX_TOKENS": "4",
        **extra,
    }
    return subprocess.run(
        [sys.executable, str(FILES / "chat_test.py")], env=env, capture_output=True, text=True, timeout=60
    )


def test_the_script_passes_a_real_answer_and_fails_an_empty_one(
    server: tuple[str, list[dict[str, Any]], list[Any]],
) -> None:
    url, requests, answers = server
    answers += [GOOD, changed("choices.0.message.content", "")]
    passed = run_chat_test(url)
    assert passed.returncode == 0, passed.stderr
    assert passed.stdout == "chat test: tiny answered: 'LoRA is'\n"
    assert requests[0]["path"] == "/v1/chat/completions"
    assert requests[0]["body"]["messages"] == [{"role": "user", "content": "Czym jest LoRA?"}]
    empty = run_chat_test(url)
    assert empty.returncode == 1
    assert "the answer is empty ('')" in empty.stderr


def run_image_test(url: str) -> subprocess.CompletedProcess[str]:
    return run_chat_test(url, PROMPT="What is on it?", IMAGE_TEST="1")


def test_a_vision_language_model_is_asked_again_with_a_picture_that_must_reach_the_prompt(
    server: tuple[str, list[dict[str, Any]], list[Any]],
) -> None:
    from PIL import Image

    url, requests, answers = server
    answers += [GOOD, changed("usage.prompt_tokens", 13)]
    passed = run_image_test(url)
    assert passed.returncode == 0, passed.stderr
    assert (
        passed.stdout.splitlines()[-1] == "chat test: a 32 x 32 picture took 4 prompt tokens and was answered"
    )
    text, picture = requests[1]["body"]["messages"][0]["content"]
    assert text == {"type": "text", "text": "What is on it?"}
    data = base64.b64decode(picture["image_url"]["url"].removeprefix("data:image/png;base64,"))
    image = Image.open(io.BytesIO(data))
    assert (image.format, image.size, image.getpixel((0, 0))) == ("PNG", (32, 32), (200, 30, 30))
    # a server that drops the picture: the prompt is no longer
    answers += [GOOD, GOOD]
    dropped = run_image_test(url)
    assert dropped.returncode == 1
    assert "with a picture: the prompt has 9 tokens, as many as without it (9)" in dropped.stderr
    # and one that refuses it says so in its own words
    answers += [GOOD, {"error": "At most 0 image(s) may be provided in one prompt."}]
    refused = run_image_test(url)
    assert refused.returncode == 1 and "with a picture: " in refused.stderr
