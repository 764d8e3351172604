"""Prompt parity (files/prompt_parity.py) and helm test's use of it (files/chat_test.py): the training data's
first prompts read as LLaMA-Factory reads them, the comparison that names the first differing token, and the
questions put to vLLM (/tokenize with the messages, a forced stop token on /v1/completions), asked of a small
HTTP server on 127.0.0.1 that plays vLLM's answers. The writer runs with the real LLaMA-Factory in the
llamafactory tier; the node tier asks the real vLLM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import fakeserver
from tests.support.podfiles import FILES, load

parity = load("prompt_parity")

# what LLaMA-Factory's llama3 template made of two conversations for a tiny tokenizer
RECORD: dict[str, Any] = {
    "template": "llama3",
    "vocabSize": 335,
    "stopTokenIds": [4, 335],
    "stopTokens": ["<|eot_id|>", "<|eom_id|>"],
    "conversations": [
        {
            "name": "system and user",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            "promptIds": [0, 2, 10, 3, 11, 4, 2, 12, 3, 13, 4, 2, 14, 3],
            "promptPieces": [
                "<|begin_of_text|>",
                "<|start_header_id|>",
                "system",
                "<|end_header_id|>",
                "Be brief.",
                "<|eot_id|>",
                "<|start_header_id|>",
                "user",
                "<|end_header_id|>",
                "Hi",
                "<|eot_id|>",
                "<|start_header_id|>",
                "assistant",
                "<|end_header_id|>",
            ],  # fmt: skip
        },
        {
            "name": "several turns",
            "messages": [{"role": "user", "content": "Hello"}],
            "promptIds": [0, 2, 12, 3, 15, 4, 2, 14, 3],
            "promptPieces": [],
        },
    ],
}


# ------------------------------------------------------------------------------------ the data's prompts
def write_dataset(
    folder: Path, entry: dict[str, Any], rows: list[Any], jsonl: bool = False
) -> dict[str, Any]:
    name = "set.jsonl" if jsonl else "set.json"
    text = "\n".join(json.dumps(r) for r in rows) if jsonl else json.dumps(rows)
    (folder / name).write_text(text, encoding="utf-8")
    (folder / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": name, **entry}}))
    return {"dataset": "mine,other", "dataset_dir": str(folder)}


def test_alpaca_prompts_join_instruction_and_input_and_keep_system_and_history(tmp_path: Path) -> None:
    rows = [
        {"instruction": "Translate", "input": "kot", "output": "cat"},
        {"q": "Why?", "sys": "Be kind.", "hist": [["Hi", "Hello"]], "output": "..."},
        {"instruction": "third", "output": "not read"},
    ]
    config = write_dataset(tmp_path, {}, rows)
    assert parity.data_prompts(config) == [
        {"name": "mine prompt 1", "messages": [{"role": "user", "content": "Translate\nkot"}]},
    ]  # the second row has none of the default columns
    mapped = write_dataset(tmp_path, {"columns": {"prompt": "q", "system": "sys", "history": "hist"}}, rows)
    assert parity.data_prompts(mapped)[1]["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Why?"},
    ]


def test_sharegpt_prompts_end_at_the_first_user_turn(tmp_path: Path) -> None:
    rows = [
        {
            "conversations": [
                {"from": "system", "value": "S"},
                {"from": "human", "value": "Q1"},
                {"from": "gpt", "value": "A1"},
                {"from": "human", "value": "Q2"},
            ]
        },  # fmt: skip
        {"conversations": [{"from": "function_call", "value": "{}"}]},
    ]
    config = write_dataset(tmp_path, {"formatting": "sharegpt"}, rows, jsonl=True)
    assert parity.data_prompts(config) == [
        {
            "name": "mine prompt 1",
            "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"}],
        }
    ]  # a tool call is formatted by more than the chat template: left out


def test_media_data_hub_data_and_no_data_give_no_prompts(tmp_path: Path) -> None:
    media = write_dataset(tmp_path, {"columns": {"images": "images"}}, [{"instruction": "x"}])
    assert parity.data_prompts(media) == []
    (tmp_path / "dataset_info.json").write_text(json.dumps({"mine": {"hf_hub_url": "org/set"}}))
    assert parity.data_prompts({"dataset": "mine", "dataset_dir": str(tmp_path)}) == []
    assert parity.data_prompts({}) == []


# ------------------------------------------------------------------------------------- the comparison
@pytest.mark.parametrize(
    ("trained", "served", "index"),
    [([1, 2, 3], [1, 2, 3], None), ([1, 2, 3], [1, 9, 3], 1), ([1, 2, 3], [1, 2], 2), ([1], [1, 5], 1)],
)
def test_first_difference(trained: list[int], served: list[int], index: int | None) -> None:
    assert parity.first_difference(trained, served) == index


def test_a_difference_is_named_as_text_with_what_came_before() -> None:
    conversation = RECORD["conversations"][0]
    served = [0, 20, 10, 21]
    line = parity.describe_difference(conversation, served, 1, lambda ids: "<|im_start|>", "llama3")
    assert line.startswith("conversation 'system and user': vLLM's prompt differs from the one LLaMA-Factory")
    assert "(template llama3) at token 2 of 14 (vLLM's has 4)" in line
    assert (
        "trained '<|start_header_id|>' (id 2), served '<|im_start|>' (id 20), after '<|begin_of_text|>'"
        in line
    )
    shorter = parity.describe_difference(conversation, [0], 1, lambda ids: "?", "llama3")
    assert "served the end of the prompt" in shorter


@pytest.mark.parametrize(
    "broken",
    [
        [],
        {"conversations": []},
        {"conversations": [{"messages": []}], "stopTokenIds": []},
        {"conversations": [1]},
    ],
)
def test_a_record_that_is_not_one_is_refused(tmp_path: Path, broken: Any) -> None:
    path = tmp_path / "record.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="not a prompt parity record"):
        parity.load_record(str(path))


def test_a_record_written_after_a_step_says_a_failure_and_leaves_the_step_succeeded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """train.sh's launch of several processes writes the record with --after train, as the one-process
    training and the merge do in their own process: a record that cannot be written is said, exit 0."""
    config = tmp_path / "train.yaml"
    config.write_text(f"output_dir: {tmp_path / 'never-made'}\n")
    assert parity.main(["write", str(config)]) == 2, "on its own, no folder to write into is an error"
    assert parity.main(["write", str(config), "--after", "train"]) == 0
    err = capsys.readouterr().err
    assert "prompt parity: no folder to write into" in err
    assert "train: the prompt parity record was not written; helm test of the served model will say so" in err


# --------------------------------------------------------------------------- the questions put to vLLM
Vllm = tuple[str, list[dict[str, Any]], dict[str, Callable[[dict[str, Any]], Any]]]


@pytest.fixture
def vllm() -> Iterator[Vllm]:
    """A stand-in for vLLM's endpoints: (url, requests, handlers by path), the handlers set by each test."""
    handlers: fakeserver.Handlers = {}
    with fakeserver.serve(handlers) as (url, requests):
        yield url, requests, handlers


def tokenize_as_trained(body: dict[str, Any]) -> dict[str, Any]:
    for conversation in RECORD["conversations"]:
        if conversation["messages"] == body["messages"]:
            return {"tokens": conversation["promptIds"], "count": len(conversation["promptIds"])}
    raise AssertionError(body)


def stops_on(*ids: int) -> Callable[[dict[str, Any]], Any]:
    def answer(body: dict[str, Any]) -> dict[str, Any]:
        (forced,) = body["logit_bias"]
        return {"choices": [{"text": "", "finish_reason": "stop" if int(forced) in ids else "length"}]}

    return answer


def test_a_server_that_builds_the_same_prompts_and_stops_passes(vllm: Vllm) -> None:
    url, requests, handlers = vllm
    handlers.update({"/tokenize": tokenize_as_trained, "/v1/completions": stops_on(4)})
    assert parity.problems(RECORD, url, "tiny", "key") == []
    tokenize = [r for r in requests if r["path"] == "/tokenize"]
    assert [r["body"]["messages"] for r in tokenize] == [c["messages"] for c in RECORD["conversations"]]
    assert all(r["body"]["add_generation_prompt"] is True for r in tokenize)
    assert all(r["body"]["add_special_tokens"] is False and r["body"]["model"] == "tiny" for r in tokenize)
    (stop,) = [r["body"] for r in requests if r["path"] == "/v1/completions"]  # 335 is past the vocabulary
    assert stop == {
        "model": "tiny",
        "prompt": RECORD["conversations"][0]["promptIds"],
        "max_tokens": 1,
        "temperature": 0,
        "logit_bias": {"4": 100},
    }
    assert {r["auth"] for r in requests} == {"Bearer key"}


def test_another_template_and_a_missing_stop_token_are_both_named(vllm: Vllm) -> None:
    url, _, handlers = vllm

    def chatml(body: dict[str, Any]) -> dict[str, Any]:
        trained = tokenize_as_trained(body)["tokens"]
        return {
            "tokens": [trained[0], 20, *trained[2:]] if body["messages"][0]["role"] == "system" else trained
        }

    handlers.update(
        {
            "/tokenize": chatml,
            "/detokenize": lambda body: {"prompt": {20: "<|im_start|>"}.get(body["tokens"][0], "?")},
            "/v1/completions": stops_on(),
        }
    )
    problems = parity.problems(RECORD, url, "tiny", None)
    assert len(problems) == 2, problems
    assert "'system and user'" in problems[0] and "served '<|im_start|>' (id 20)" in problems[0]
    assert problems[1].startswith(
        "vLLM does not stop on '<|eot_id|>' (id 4), a stop token of template llama3"
    )


def test_a_server_without_tokenize_is_not_vllm(vllm: Vllm) -> None:
    url, _, _ = vllm
    with pytest.raises(parity.NotVllm, match="has no /tokenize"):
        parity.problems(RECORD, url, "tiny", None)


# ----------------------------------------------------------------------------- helm test, whole script
ANSWER = {
    "object": "chat.completion",
    "model": "tiny",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}


def run_chat_test(url: str, record: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VLLM_URL": url, "MODEL": "tiny", "PARITY_RECORD": str(record)}
    return subprocess.run(
        [sys.executable, str(FILES / "chat_test.py")], env=env, capture_output=True, text=True, timeout=60
    )


def test_helm_test_checks_the_record_beside_the_served_model(vllm: Vllm, tmp_path: Path) -> None:
    url, _, handlers = vllm
    handlers.update(
        {
            "/v1/chat/completions": lambda body: ANSWER,
            "/tokenize": tokenize_as_trained,
            "/v1/completions": stops_on(4),
        }
    )
    record = tmp_path / "lfk-prompt-parity.json"
    missing = run_chat_test(url, record)
    assert missing.returncode == 1
    assert f"no prompt parity record at {record}" in missing.stderr
    record.write_text(json.dumps(RECORD))
    passed = run_chat_test(url, record)
    assert passed.returncode == 0, passed.stderr
    assert (
        "vLLM builds the 2 prompts of the training's record token for token as LLaMA-Factory" in passed.stdout
    )
    # <|eom_id|> is past the tiny vocabulary: never generated, never claimed
    assert passed.stdout.endswith("(template llama3) and stops on '<|eot_id|>'\n"), passed.stdout
    handlers["/v1/completions"] = stops_on()
    never_stops = run_chat_test(url, record)
    assert never_stops.returncode == 1
    assert "vLLM does not stop on '<|eot_id|>'" in never_stops.stderr
