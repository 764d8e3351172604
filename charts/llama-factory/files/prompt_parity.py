"""Prompt parity: the prompt a served model is given is the one LLaMA-Factory trained it on, and the server
stops where the training's template ends a turn. A chat template that differs between training and serving,
and a model that never stops (a stop token the server does not know), are the commonest ways a fine-tune is
"served" yet answers badly; both are invisible in an answer's HTTP status.

Two halves, one file, so that writer and checker cannot drift apart:

  write CONFIG [--output-dir DIR] [--conversations-from RECORD]
      In the LLaMA-Factory image, after a training (into its output_dir) or a merge (into the merged folder):
      the token ids of a few fixed conversations and of the training data's first prompts, as LLaMA-Factory's
      own template code formats them for generation (`Template.encode_oneturn`, what its chat engines do), and
      the template's stop token ids, into DIR/lfk-prompt-parity.json (the contract's files.promptParityRecord).

  problems(record, url, model, api_key)
      Standard library only, for `helm test` (chat_test.py, in the vLLM image) and `lfk check --after`: asks the
      running vLLM to build the same prompts with its chat template (POST /tokenize with the messages), names
      the first token that differs, and checks that vLLM stops on each of the template's stop tokens (one
      /v1/completions token with that token forced by logit_bias must finish with "stop", not "length").
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

# podlib beside this script (the pods' /scripts), also when `lfk check` imports this file by its path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from podlib import CONTRACT, EXIT, atomic_write, read_regular  # noqa: E402

RECORD = CONTRACT["files"]["promptParityRecord"]
# conversations every model is checked on: a system prompt, several turns, and text with non-ASCII letters
FIXED: list[dict[str, Any]] = [
    {
        "name": "system and user",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is LoRA?"},
        ],
    },
    {
        "name": "several turns",
        "messages": [
            {"role": "user", "content": "Hello!"},
            {"role": "assistant", "content": "Hello! How can I help you today?"},
            {"role": "user", "content": "Czym jest fine-tuning? Odpowiedz jednym zdaniem."},
        ],
    },
]
DATA_PROMPTS = 2  # the first prompts of the training data
MAX_DATASET_FILE = 64 << 20  # a larger JSON array is not read whole for two prompts
MAX_RECORD = 16 << 20
CONTEXT_TOKENS = 6  # tokens shown before a difference


# ----------------------------------------------------------------------------- the training data's prompts
def _alpaca(row: dict[str, Any], columns: dict[str, str]) -> list[dict[str, str]]:
    messages = []
    system = row.get(columns.get("system", "")) if columns.get("system") else None
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    history = row.get(columns["history"]) if columns.get("history") else None
    for pair in history if isinstance(history, list) else []:
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair):
            messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    parts = [row.get(columns.get("prompt", "instruction")), row.get(columns.get("query", "input"))]
    content = "\n".join(p for p in parts if isinstance(p, str) and p)
    return messages + [{"role": "user", "content": content}] if content else []


def _sharegpt(row: dict[str, Any], columns: dict[str, str], tags: dict[str, str]) -> list[dict[str, str]]:
    roles = {
        tags.get("user_tag", "human"): "user",
        tags.get("assistant_tag", "gpt"): "assistant",
        tags.get("system_tag", "system"): "system",
    }
    messages = []
    system = row.get(columns["system"]) if columns.get("system") else None
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    for turn in row.get(columns.get("messages", "conversations")) or []:
        if not isinstance(turn, dict):
            return []
        role = roles.get(str(turn.get(tags.get("role_tag", "from"))))
        content = turn.get(tags.get("content_tag", "value"))
        if role is None or not isinstance(content, str) or (role == "system" and messages):
            return []  # tools, observations or an odd order: not a plain prompt to compare
        messages.append({"role": role, "content": content})
        if role == "user":
            return messages  # the prompt of the first answer
    return []


def _first_rows(path: Path, count: int) -> list[Any]:
    if path.suffix == ".jsonl":
        rows: list[Any] = []
        with open(path, encoding="utf-8") as f:
            while len(rows) < count:
                line = f.readline(MAX_DATASET_FILE)  # a file of one endless line is not read whole
                if not line:
                    break
                if line.strip():
                    rows.append(json.loads(line))
        return rows
    data = json.loads(read_regular(path, MAX_DATASET_FILE, "a dataset read for its first prompts"))
    return data[:count] if isinstance(data, list) else []


def data_prompts(config: dict[str, Any], count: int = DATA_PROMPTS) -> list[dict[str, Any]]:
    """The first prompts of the config's first dataset (a local JSON or JSON Lines file registered in
    dataset_info.json, text only), as conversations; empty when there is none to read."""
    names = config.get("dataset")
    first = (names if isinstance(names, str) else ",".join(names or [])).split(",")[0].strip()
    if not first:
        return []
    dataset_dir = Path(str(config.get("dataset_dir", "data")))
    info = json.loads(read_regular(dataset_dir / "dataset_info.json", MAX_DATASET_FILE, "dataset_info.json"))
    entry = info.get(first) if isinstance(info, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
        return []
    columns = entry.get("columns") or {}
    if any(key in columns for key in ("images", "videos", "audios", "tools")):
        return []  # media and tools are formatted by more than the chat template
    path = dataset_dir / entry["file_name"]
    if path.suffix not in (".json", ".jsonl") or not path.is_file():
        return []
    conversations = []
    for index, row in enumerate(_first_rows(path, count)):
        if not isinstance(row, dict):
            continue
        if entry.get("formatting", "alpaca") == "sharegpt":
            messages = _sharegpt(row, columns, entry.get("tags") or {})
        else:
            messages = _alpaca(row, columns)
        if messages:
            conversations.append({"name": f"{first} prompt {index + 1}", "messages": messages})
    return conversations


# ------------------------------------------------------------------------------------------- the writer
def encode(template: Any, tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The generation prompt's token ids as LLaMA-Factory builds them (its chat engines add an empty
    assistant turn and keep the prompt half)."""
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    turns = messages[1:] if system is not None else messages
    prompt_ids, _ = template.encode_oneturn(tokenizer, [*turns, {"role": "assistant", "content": ""}], system)
    return [int(i) for i in prompt_ids]


def build_record(config: dict[str, Any], conversations: list[dict[str, Any]]) -> dict[str, Any]:
    """The record for the model and template of a LLaMA-Factory config (its training or export config)."""
    import llamafactory
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments
    from transformers import AutoConfig, AutoTokenizer

    model = str(config["model_name_or_path"])
    trust = bool(config.get("trust_remote_code", False))
    # the tokenizer as the training and the export make it: the base model's, fixed by the template
    tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust)
    data_args = {k: config[k] for k in ("template", "default_system", "enable_thinking") if k in config}
    template = get_template_and_fix_tokenizer(tokenizer, DataArguments(**data_args))
    model_config = AutoConfig.from_pretrained(model, trust_remote_code=trust)
    text_config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    stop_ids = sorted(int(i) for i in template.get_stop_token_ids(tokenizer) if i is not None)
    entries = []
    for conversation in conversations:
        ids = encode(template, tokenizer, conversation["messages"])
        pieces = [tokenizer.decode([i], skip_special_tokens=False) for i in ids]
        entries.append({**conversation, "promptIds": ids, "promptPieces": pieces})
    return {
        "template": config.get("template"),
        "llamafactory": llamafactory.__version__,
        "model": model,
        "vocabSize": getattr(text_config, "vocab_size", None),
        "stopTokenIds": stop_ids,
        "stopTokens": [tokenizer.decode([i], skip_special_tokens=False) for i in stop_ids],
        "conversations": entries,
    }


def write(config_path: str, output_dir: str | None, conversations_from: str | None) -> int:
    import yaml  # the LLaMA-Factory image has PyYAML

    config = yaml.safe_load(Path(config_path).read_text(encoding="utf-8")) or {}
    target = Path(output_dir or str(config.get("output_dir", "")))
    if not str(target) or not target.is_dir():
        print(f"prompt parity: no folder to write into ({target})", file=sys.stderr)
        return EXIT["usage"]
    if conversations_from and Path(conversations_from).is_file():
        earlier = load_record(conversations_from)
        conversations = [{"name": c["name"], "messages": c["messages"]} for c in earlier["conversations"]]
    else:
        try:
            conversations = [*FIXED, *data_prompts(config)]
        except (
            OSError,
            ValueError,
        ) as exc:  # the training read it; a record without its prompts still checks
            print(f"prompt parity: the data's first prompts left out: {exc}", file=sys.stderr)
            conversations = list(FIXED)
    record = build_record(config, conversations)
    atomic_write(target / RECORD, json.dumps(record, ensure_ascii=False, indent=1) + "\n")
    stops = ", ".join(f"{t!r} ({i})" for i, t in stop_tokens(record))
    print(
        f"prompt parity: {len(conversations)} prompts of template {record['template']} and its stop tokens "
        f"{stops} written to {target / RECORD}"
    )
    return EXIT["ok"]


def write_reported(
    config_path: str, output_dir: str | None, conversations_from: str | None, step: str
) -> None:
    """write(), after a step whose model is made (the training, the merge): a record that cannot be written
    is said and does not fail the step; helm test of the served model reports it missing."""
    try:
        written = write(config_path, output_dir, conversations_from) == EXIT["ok"]
    except Exception as exc:  # noqa: BLE001 - the model is there; the record's absence is reported later
        print(f"prompt parity: {type(exc).__name__}: {exc}", file=sys.stderr)
        written = False
    if not written:
        print(f"{step}: the prompt parity record was not written; helm test of the served model will say so", file=sys.stderr)  # fmt: skip


# ------------------------------------------------------------------------------------------ the checker
def load_record(path: str) -> dict[str, Any]:
    """The record at path; ValueError saying what is wrong with it."""
    record: dict[str, Any] = json.loads(read_regular(path, MAX_RECORD, "a prompt parity record"))
    ok = (
        isinstance(record, dict) and isinstance(record.get("conversations"), list) and record["conversations"]
    )
    ok = ok and all(
        isinstance(c, dict) and isinstance(c.get("messages"), list) and isinstance(c.get("promptIds"), list)
        for c in record["conversations"]
    )
    if not ok or not isinstance(record.get("stopTokenIds"), list):
        raise ValueError("not a prompt parity record (conversations with promptIds, stopTokenIds)")
    return record


def stop_tokens(record: dict[str, Any]) -> list[tuple[int, str]]:
    """(id, text) of each of the template's stop tokens in the record."""
    texts = record.get("stopTokens") or []
    return [
        (int(i), texts[n] if n < len(texts) else f"<id {i}>") for n, i in enumerate(record["stopTokenIds"])
    ]


def generable_stops(record: dict[str, Any]) -> list[tuple[int, str]]:
    """The stop tokens the model can produce: one past its output layer (a token the template adds to the
    tokenizer of a model that never learnt it) is never generated, so there is nothing to stop on."""
    vocab = record.get("vocabSize")
    return [(i, text) for i, text in stop_tokens(record) if not isinstance(vocab, int) or i < vocab]


def summary(record: dict[str, Any]) -> str:
    """What a check that found nothing saw, in words."""
    stops = ", ".join(repr(text) for _, text in generable_stops(record))
    return (
        f"the {len(record['conversations'])} prompts of the training's record token for token as LLaMA-Factory "
        f"(template {record.get('template')}) and stops on {stops}"
    )


def first_difference(trained: list[int], served: list[int]) -> int | None:
    """The index of the first token that differs (or where one prompt ends before the other); None if equal."""
    for index in range(min(len(trained), len(served))):
        if trained[index] != served[index]:
            return index
    return None if len(trained) == len(served) else min(len(trained), len(served))


def describe_difference(
    conversation: dict[str, Any], served: list[int], index: int, detokenize: Callable[[list[int]], str],
    template: str | None,
) -> str:  # fmt: skip
    """One line naming the first differing token as text, on both sides, with the text just before it."""
    trained = conversation["promptIds"]
    pieces = conversation.get("promptPieces") or []
    start = max(0, index - CONTEXT_TOKENS)

    def trained_piece(i: int) -> str:
        return pieces[i] if i < len(pieces) else f"<id {trained[i]}>"

    if index < len(trained):
        want = f"{trained_piece(index)!r} (id {trained[index]})"
    else:
        want = "the end of the prompt"
    got = (
        f"{detokenize([served[index]])!r} (id {served[index]})"
        if index < len(served)
        else "the end of the prompt"
    )
    before = "".join(trained_piece(i) for i in range(start, min(index, len(trained))))
    return (
        f"conversation {conversation.get('name')!r}: vLLM's prompt differs from the one LLaMA-Factory trained on "
        f"(template {template}) at token {index + 1} of {len(trained)} (vLLM's has {len(served)}): "
        f"trained {want}, served {got}, after {before!r}. vLLM formats chats with another template than "
        "the training's: serve the chat template LLaMA-Factory saved beside the model (vllm.chatTemplate)"
    )


class NotVllm(ValueError):
    """The server has no /tokenize: an OpenAI-compatible server that is not vLLM (LLaMA-Factory's own API)."""


def _post(url: str, path: str, body: dict[str, Any], api_key: str | None, timeout: float) -> Any:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = "Bearer " + api_key
    request = urllib.request.Request(
        url.rstrip("/") + path, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", errors="replace")[:500]
        if exc.code == 404 and path == "/tokenize":
            raise NotVllm(f"{url} has no /tokenize: is it vLLM?") from exc
        raise ValueError(f"{path}: {exc.code} {exc.reason}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ValueError(f"{path}: {getattr(exc, 'reason', exc)}") from exc


def problems(
    record: dict[str, Any], url: str, model: str, api_key: str | None, timeout: float = 60
) -> list[str]:
    """What differs between the training's prompts and stops (the record) and the vLLM at url serving model.
    NotVllm when the server cannot tokenize chats at all (another OpenAI-compatible server)."""
    found: list[str] = []

    def detokenize(ids: list[int]) -> str:
        try:
            return str(_post(url, "/detokenize", {"model": model, "tokens": ids}, api_key, timeout)["prompt"])
        except (ValueError, KeyError, TypeError):
            return "?"

    for conversation in record["conversations"]:
        body = {
            "model": model,
            "messages": conversation["messages"],
            "add_generation_prompt": True,
            "add_special_tokens": False,  # the chat template writes the begin-of-text token itself
        }
        try:
            served = [int(i) for i in _post(url, "/tokenize", body, api_key, timeout)["tokens"]]
        except NotVllm:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            found.append(f"conversation {conversation.get('name')!r}: vLLM could not tokenize it: {exc}")
            continue
        index = first_difference(conversation["promptIds"], served)
        if index is not None:
            found.append(describe_difference(conversation, served, index, detokenize, record.get("template")))
    prompt = record["conversations"][0]["promptIds"]
    for token_id, text in generable_stops(record):
        body = {
            "model": model,
            "prompt": prompt,
            "max_tokens": 1,
            "temperature": 0,
            "logit_bias": {str(token_id): 100},
        }
        try:
            finish = _post(url, "/v1/completions", body, api_key, timeout)["choices"][0]["finish_reason"]
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            found.append(f"could not ask vLLM whether it stops on {text!r} (id {token_id}): {exc}")
            continue
        if finish != "stop":
            found.append(
                f"vLLM does not stop on {text!r} (id {token_id}), a stop token of template "
                f"{record.get('template')}: given that token it went on (finish_reason {finish!r}), so answers "
                "run past the end of the turn. Add it to eos_token_id in the served model's generation_config.json"
            )
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    write_cmd = commands.add_parser("write", help="write the record of a LLaMA-Factory config's model")
    write_cmd.add_argument("config", help="the training or export config (YAML)")
    write_cmd.add_argument("--output-dir", help="where to write it (default: the config's output_dir)")
    write_cmd.add_argument("--conversations-from", help="an earlier record whose conversations to encode")
    write_cmd.add_argument(
        "--after", metavar="STEP", help="the step that made the model (train): a failure is said, exit 0"
    )
    args = parser.parse_args(argv)
    if args.after:
        write_reported(args.config, args.output_dir, args.conversations_from, args.after)
        return EXIT["ok"]
    return write(args.config, args.output_dir, args.conversations_from)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
