"""LLaMA-Factory's data rules, applied without LLaMA-Factory (and so without torch): which examples of a
dataset file it will train on, which it drops and why, and dataset_info.json registration.

The rules follow LLaMA-Factory 0.9.5 (`data/parser.py`, `data/converter.py`, the supervised processor):
- an entry's `columns` and `tags` replace the defaults wholesale: a column or tag left out becomes unset;
- alpaca: prompt = instruction + "\\n" + input after the `history` pairs; an example without a string
  response is dropped;
- sharegpt: an optional leading system message (when `system_tag` is set), then user/observation turns at
  even positions and assistant/function turns at odd ones, an even number of turns; anything else is dropped;
- media (images, videos, audios columns): as many files as `<image>`/`<video>`/`<audio>` placeholders in the
  example's text, each file in the media folder, each image one PIL opens; LLaMA-Factory stops on any other;
- per stage (its processor): sft needs one answer; pt reads the prompt text only; ppo needs the prompt only;
  dpo and rm need a chosen and a rejected answer (an entry with `ranking: true`, and only those stages take
  one); kto needs an answer with a boolean `kto_tag`.
The llamafactory test tier loads the same files through LLaMA-Factory's own loader and compares the counts.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..core import lfinfo
from ..errors import DataError
from ..project import chart_module


def readiness() -> ModuleType:
    """The checks the pods' preflight runs too (charts/llama-factory/files/readiness.py)."""
    return chart_module("readiness")


DATA_CONFIG: str = readiness().DATASET_INFO

DEFAULT_COLUMNS = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "messages": "conversations",
}
DEFAULT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
COLUMN_NAMES = (
    "prompt",
    "query",
    "response",
    "history",
    "messages",
    "system",
    "tools",
    "images",
    "videos",
    "audios",
    "chosen",
    "rejected",
    "kto_tag",
)
FILE_TYPES = {
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".txt": "text",
}


@dataclass(frozen=True)
class Attrs:
    """How LLaMA-Factory reads one dataset: its format, and the column and tag names in effect."""

    formatting: str = "alpaca"
    columns: dict[str, str | None] = field(default_factory=lambda: dict(DEFAULT_COLUMNS))
    tags: dict[str, str | None] = field(default_factory=lambda: dict(DEFAULT_TAGS))
    ranking: bool = False

    @classmethod
    def of_entry(cls, entry: dict[str, Any]) -> Attrs:
        """Like LLaMA-Factory's DatasetAttr: given `columns`/`tags` replace every default, not just some."""
        columns: dict[str, str | None] = dict(DEFAULT_COLUMNS)
        if "columns" in entry:
            columns = {name: entry["columns"].get(name) for name in COLUMN_NAMES}
        tags: dict[str, str | None] = dict(DEFAULT_TAGS)
        if "tags" in entry:
            tags = {name: entry["tags"].get(name) for name in DEFAULT_TAGS}
        return cls(entry.get("formatting", "alpaca"), columns, tags, bool(entry.get("ranking")))

    def column(self, name: str) -> str | None:
        return self.columns.get(name)


@dataclass
class Report:
    """What LLaMA-Factory will make of a file: every example counted, every dropped one with its reason."""

    path: str
    formatting: str
    total: int = 0
    dropped: list[tuple[int, str]] = field(default_factory=list)  # (index, reason)
    fatal: list[tuple[int, str]] = field(default_factory=list)  # LLaMA-Factory stops on these, not just skips
    notes: list[str] = field(default_factory=list)  # things that do not drop examples but deserve a look
    first: list[dict[str, str]] | None = None  # the first valid example as a conversation
    media: dict[str, int] = field(default_factory=dict)  # media files opened and usable, by column

    @property
    def valid(self) -> int:
        return self.total - len(self.dropped)


def load_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a data file as LLaMA-Factory's `datasets` loader sees them (json, jsonl, csv)."""
    kind = FILE_TYPES.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"{path}: unsupported file type {path.suffix!r} (LLaMA-Factory reads {', '.join(sorted(FILE_TYPES))})"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    if kind == "csv":
        return list(csv.DictReader(text.splitlines()))
    if kind != "json":
        raise DataError(
            f"{path}: {kind} files are checked by `lfk validate --deep` through LLaMA-Factory itself"
        )
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{path}: expected a list of objects (one per example)")
    return _unify(rows)


def _unify(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Arrow gives every row every column (missing -> None), and every message every key."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    message_keys: dict[str, None] = {}
    for row in rows:
        for value in row.values():
            if isinstance(value, list):
                for item in value:
                    if isinstance(item, dict):
                        message_keys.update(dict.fromkeys(item))
    out = []
    for row in rows:
        full = {k: row.get(k) for k in keys}
        for k, value in full.items():
            if isinstance(value, list) and value and all(isinstance(i, dict) for i in value):
                full[k] = [{mk: item.get(mk) for mk in message_keys} for item in value]
        out.append(full)
    return out


STAGES = lfinfo.STAGES
PAIRWISE_STAGES = ("rm", "dpo")  # LLaMA-Factory loads DPO's data as the reward model's: pairs


def stage_mismatch(attrs: Attrs, stage: str) -> str:
    """Why a dataset entry cannot feed a stage at all (LLaMA-Factory refuses or drops every example)."""
    if stage in PAIRWISE_STAGES and not attrs.ranking:
        return (
            f"stage {stage} trains on pairs of a chosen and a rejected answer, and this entry is not pairwise: "
            "register it with ranking: true and columns naming chosen and rejected"
        )
    if stage not in PAIRWISE_STAGES and attrs.ranking:
        return (
            f"this entry holds pairs (ranking: true): stage {stage} cannot train on them (LLaMA-Factory stops: "
            "the dataset is not applicable in the current training stage); pairs are for dpo and rm"
        )
    if attrs.ranking and not (attrs.column("chosen") and attrs.column("rejected")):
        return (
            "a pairwise entry names its chosen and rejected columns (columns: {chosen: ..., rejected: ...})"
        )
    if stage == "kto" and not attrs.column("kto_tag"):
        return (
            "stage kto needs each answer tagged desirable or not, and this entry names no kto_tag column "
            "(columns: {kto_tag: ...}, a true/false field)"
        )
    return ""


def spec_datasets(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(JSON path, name, stage whose data it must be) of each dataset a spec reads: the training's for its
    stage, and the gate's held-out set as the data its metric scores (instructions, pairs or text)."""
    from ..core.facts import gate_data_stage

    stage = d["stage"]["type"]
    named = [(f"$.data.datasets[{i}]", name, stage) for i, name in enumerate(d["data"]["datasets"])]
    if "evaluate" in d:
        named.append(("$.evaluate.dataset", d["evaluate"]["dataset"], gate_data_stage(d)))
    return named


def natural_stage(attrs: Attrs) -> str:
    """The stage an entry's data is for when none is named: pairs for dpo, tagged answers for kto, else sft."""
    return "dpo" if attrs.ranking else "kto" if attrs.column("kto_tag") else "sft"


# what LLaMA-Factory's multimodal plugins count in the text of an example, one per medium given
PLACEHOLDERS = {"images": "<image>", "videos": "<video>", "audios": "<audio>"}
# the first bytes of the image files PIL (LLaMA-Factory's image loader) opens, and their media types
IMAGE_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF87a": "image/gif",
    b"GIF89a": "image/gif", b"BM": "image/bmp",
}  # fmt: skip


def image_type(head: bytes) -> str | None:
    """The media type of an image file from its first 12 bytes (PNG, JPEG, GIF, WebP, BMP); None otherwise."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in IMAGE_SIGNATURES.items() if head.startswith(magic)), None)


def _is_image(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return image_type(f.read(12)) is not None
    except OSError:
        return False


def _media_problem(
    row: dict[str, Any],
    attrs: Attrs,
    conversation: list[dict[str, str]],
    media_dir: Path,
    seen: dict[str, int],
) -> str:
    """Why the media of an example stop LLaMA-Factory ('' when they do not): as many files as placeholders in
    its text, each file in the media folder, and each image one PIL opens. Counts the files opened in seen."""
    text = "".join(message["content"] for message in conversation)
    for medium, placeholder in PLACEHOLDERS.items():
        column = attrs.column(medium)
        if not column:
            continue
        value = row.get(column)
        items = [] if value is None else value if isinstance(value, list) else [value]
        # a video may be given as its frames: a list of image files
        files = [f for item in items for f in (item if isinstance(item, list) else [item])]
        if len(items) != text.count(placeholder):
            return (
                f"{len(items)} {medium} but {text.count(placeholder)} {placeholder} in its text "
                f"(LLaMA-Factory stops: the numbers must match)"
            )
        for name in files:
            if not isinstance(name, str) or not name:
                return f"{medium}: {name!r} is not a file name"
            file = media_dir / name
            if not file.is_file():
                return f"{medium}: {name} is not in {media_dir} (LLaMA-Factory stops on a missing file)"
            frames = medium == "videos" and isinstance(items[0], list)
            if medium == "images" or frames:
                if not _is_image(file):
                    return f"{medium}: {name} is not an image PIL opens (PNG, JPEG, GIF, WebP, BMP)"
            elif file.stat().st_size == 0:
                return f"{medium}: {name} is empty"
            seen[medium] = seen.get(medium, 0) + 1
    return ""


def check(path: Path, attrs: Attrs, stage: str = "sft", media_dir: Path | None = None) -> Report:
    """Apply LLaMA-Factory's rules for the stage to every example of the file; the media an example names are
    looked for in media_dir (LLaMA-Factory's media_dir: the dataset directory unless given)."""
    if attrs.formatting not in ("alpaca", "sharegpt"):
        raise DataError(
            f"{path}: formatting {attrs.formatting!r} is not checked here (alpaca and sharegpt are)"
        )
    if mismatch := stage_mismatch(attrs, stage):
        raise DataError(f"{path}: {mismatch}")
    rows = load_rows(path)
    report = Report(str(path), attrs.formatting, total=len(rows))
    if not rows:
        report.notes.append("the file holds no examples")
        return report
    present = set(rows[0])
    for name in _read_columns(attrs, rows):
        column = attrs.column(name)
        if column is not None and column not in present:
            raise DataError(
                f"{path}: no example has the {name} column {column!r}, and LLaMA-Factory stops on it (KeyError); "
                f"add the field, or register the entry with columns naming the fields it has"
            )
    answered = stage in ("sft", "kto")  # the stages that learn from a single answer
    wanted = (
        ("messages",) if attrs.formatting == "sharegpt" else ("prompt", "response")[: 2 if answered else 1]
    )
    for name in wanted:
        if attrs.column(name) is None:
            report.notes.append(f"no `{name}` column is set for this entry: every example will be dropped")
    if attrs.formatting == "alpaca" and attrs.column("system") is None and "system" in present:
        report.notes.append(
            "the examples have a `system` field, which is ignored unless the entry maps columns: {system: system}"
        )
    check_one = _check_alpaca if attrs.formatting == "alpaca" else _check_sharegpt
    with_media = any(attrs.column(medium) for medium in PLACEHOLDERS)
    for index, row in enumerate(rows):
        conversation, reason = check_one(row, attrs, stage)
        if reason:
            report.dropped.append((index, reason))
            continue
        if fatal := _fatal(conversation) or (
            with_media and _media_problem(row, attrs, conversation, media_dir or path.parent, report.media)
        ):
            report.fatal.append((index, fatal))
        elif report.first is None:
            report.first = conversation
    if report.media:
        opened = ", ".join(f"{count} {medium}" for medium, count in report.media.items())
        report.notes.append(f"media files opened and usable: {opened}")
    return report


def _fatal(conversation: list[dict[str, str]]) -> str:
    """What makes LLaMA-Factory stop the whole run rather than skip the example: a function call must be JSON
    with a name and arguments (or a list of such), as its tool-call formatter parses it."""
    for turn, message in enumerate(conversation):
        if message["role"] != "function":
            continue
        try:
            calls = json.loads(message["content"])
        except ValueError:
            calls = None
        calls = calls if isinstance(calls, list) else [calls]
        if not all(isinstance(c, dict) and "name" in c and "arguments" in c for c in calls):
            return f"turn {turn} is a function call but not JSON with name and arguments (LLaMA-Factory stops: Invalid JSON format in function message)"
    return ""


def _read_columns(attrs: Attrs, rows: list[dict[str, Any]]) -> list[str]:
    """The columns LLaMA-Factory's converter reads from every example (a missing one is a KeyError)."""
    extra = ["kto_tag"] if attrs.column("kto_tag") else []
    if attrs.ranking:
        extra += ["chosen", "rejected"]
    if attrs.formatting == "alpaca":
        return ["prompt", "query", "response", "history", "system", "tools", *extra]
    columns = ["messages", "tools", *extra]
    system_tag, role_tag = attrs.tags["system_tag"], attrs.tags["role_tag"] or ""
    messages_column = attrs.column("messages") or ""

    def leads_with_system(row: dict[str, Any]) -> bool:
        messages = row.get(messages_column)
        return bool(
            system_tag
            and isinstance(messages, list)
            and messages
            and isinstance(messages[0], dict)
            and messages[0].get(role_tag) == system_tag
        )

    if not all(leads_with_system(row) for row in rows):
        columns.append("system")
    return columns


def _answers(row: dict[str, Any], attrs: Attrs) -> tuple[list[str], str]:
    """The answers LLaMA-Factory's converter takes from an example, and which kind they are: a tagged one
    (kto: the answer and an empty one), a pair (chosen, rejected), one answer, or none."""
    tag = attrs.column("kto_tag")
    if tag and isinstance(row.get(tag), bool):
        return [str(row.get(attrs.column("response") or ""))], "tagged"
    chosen, rejected = row.get(attrs.column("chosen") or ""), row.get(attrs.column("rejected") or "")
    if attrs.ranking and isinstance(chosen, str) and isinstance(rejected, str):
        return [chosen, rejected], "pair"
    response = row.get(attrs.column("response") or "") if attrs.column("response") else None
    if isinstance(response, str):
        return [response], "one"
    return [], "none"


def _stage_reason(kind: str, stage: str, attrs: Attrs, response: Any) -> str:
    """Why the stage's processor drops an example whose answers are of this kind ('' when it keeps it)."""
    if stage in PAIRWISE_STAGES and kind not in ("pair", "tagged"):
        return (
            f"chosen ({attrs.column('chosen')}) and rejected ({attrs.column('rejected')}) are not both text"
        )
    if stage == "kto" and kind != "tagged":
        return f"kto_tag ({attrs.column('kto_tag')}) is not true or false"
    if stage == "sft" and kind != "one":
        if kind != "none":
            return f"a {kind} answer where supervised fine-tuning takes one"
        what = "missing" if response is None else f"a {type(response).__name__}, not text"
        return f"response ({attrs.column('response')}) is {what}"
    return ""  # pt reads the prompt's text, ppo the prompt: neither needs an answer


def _check_alpaca(row: dict[str, Any], attrs: Attrs, stage: str = "sft") -> tuple[list[dict[str, str]], str]:
    conversation: list[dict[str, str]] = []
    history_column = attrs.column("history")
    history = row.get(history_column) if history_column else None
    if isinstance(history, list):
        for turn in history:
            if not isinstance(turn, list | tuple) or len(turn) != 2:
                return [], "history must be a list of [prompt, response] pairs"
            conversation += [
                {"role": "user", "content": str(turn[0])},
                {"role": "assistant", "content": str(turn[1])},
            ]
    parts = [str(row[c]) for c in (attrs.column("prompt"), attrs.column("query")) if c and row.get(c)]
    conversation.append({"role": "user", "content": "\n".join(parts)})
    answers, kind = _answers(row, attrs)
    response_column = attrs.column("response")
    if reason := _stage_reason(kind, stage, attrs, row.get(response_column) if response_column else None):
        return [], reason
    conversation += [{"role": "assistant", "content": answer} for answer in answers[:1]]
    if attrs.column("system") and row.get(attrs.column("system") or ""):
        conversation.insert(0, {"role": "system", "content": str(row[attrs.column("system") or ""])})
    return conversation, ""


def _check_sharegpt(
    row: dict[str, Any], attrs: Attrs, stage: str = "sft"
) -> tuple[list[dict[str, str]], str]:
    tags = attrs.tags
    messages = row.get(attrs.column("messages") or "")
    if not isinstance(messages, list):
        return [], f"{attrs.column('messages')} is not a list of messages"
    role_tag, content_tag = tags["role_tag"] or "", tags["content_tag"] or ""
    conversation: list[dict[str, str]] = []
    if (
        tags["system_tag"]
        and messages
        and isinstance(messages[0], dict)
        and messages[0].get(role_tag) == tags["system_tag"]
    ):
        conversation.append({"role": "system", "content": str(messages[0].get(content_tag))})
        messages = messages[1:]
    names = {
        tags["user_tag"]: "user", tags["observation_tag"]: "observation",
        tags["assistant_tag"]: "assistant", tags["function_tag"]: "function",
    }  # fmt: skip
    accepted = ((tags["user_tag"], tags["observation_tag"]), (tags["assistant_tag"], tags["function_tag"]))
    for turn, message in enumerate(messages):
        role = message.get(role_tag) if isinstance(message, dict) else None
        if role not in accepted[turn % 2] or role is None:
            expected = " or ".join(repr(t) for t in accepted[turn % 2] if t)
            where = (
                "a leading system message needs tags: {system_tag: ...}; "
                if role == "system" and not tags["system_tag"]
                else ""
            )
            return [], f"{where}turn {turn} has role {role!r}, expected {expected}"
        conversation.append({"role": names[role], "content": str(message.get(content_tag))})
    turns = len(messages)
    if turns == 0:
        return [], "no messages"
    if attrs.ranking:  # the pair's answers are in their own columns: the messages end with the user's turn
        if turns % 2 != 1:
            return (
                [],
                f"{turns} turns: a pairwise conversation ends with the user's turn, answered by chosen and rejected",
            )
        chosen, rejected = (row.get(attrs.column(c) or "") for c in ("chosen", "rejected"))
        if not (isinstance(chosen, dict) and isinstance(rejected, dict)):  # then LLaMA-Factory has no pair
            return (
                [],
                f"chosen ({attrs.column('chosen')}) and rejected ({attrs.column('rejected')}) are not both messages",
            )
        return conversation + [{"role": "assistant", "content": str(chosen.get(content_tag))}], ""
    if turns % 2 != 0:
        return [], f"{turns} turns: a conversation must end with an assistant (or function) turn"
    tag = attrs.column("kto_tag")
    if stage == "kto" and not isinstance(row.get(tag or ""), bool):
        return [], f"kto_tag ({tag}) is not true or false"
    if stage == "sft" and tag and isinstance(row.get(tag), bool):
        return [], "a tagged answer (kto_tag) where supervised fine-tuning takes one"
    return conversation, ""


# ---------------------------------------------------------------------------------------- dataset_info.json


def read_dataset_info(dataset_dir: Path) -> dict[str, Any]:
    """dataset_info.json's entries ({} when there is none yet), read as the pods' preflight reads it."""
    check = readiness()
    try:
        info: dict[str, Any] = check.read_dataset_info(str(dataset_dir))
    except check.NotReady as exc:
        raise DataError(str(exc)) from None
    return info


def data_file(dataset_dir: Path, file_name: str, bound: Path | None = None) -> Path:
    """The file (or folder) an entry names, as LLaMA-Factory joins it to the dataset directory. Refused when it
    is absolute, climbs with `..`, or leads (through symlinks) outside `bound` (the dataset directory unless
    given: `lfk data sync` allows the whole storage root): what is registered must be read from the storage."""
    if file_name.startswith("/") or ".." in file_name.split("/") or "\\" in file_name or not file_name:
        raise DataError(
            f"{file_name!r}: a data file is named relative to the dataset directory, without `..`"
        )
    limit = (bound or dataset_dir).resolve()
    path = dataset_dir / file_name
    resolved = path.resolve()
    if resolved != limit and limit not in resolved.parents:
        raise DataError(
            f"{path} leads to {resolved}, outside {limit}: only files on the storage are registered"
        )
    return path


def entry_for(
    file_name: str,
    formatting: str,
    columns: dict[str, str] | None,
    tags: dict[str, str] | None,
    ranking: bool = False,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"file_name": file_name, "formatting": formatting}
    if ranking:
        entry["ranking"] = True
    if columns:
        entry["columns"] = dict(columns)
    if tags:
        entry["tags"] = dict(tags)
    return entry


def register(dataset_dir: Path, name: str, entry: dict[str, Any]) -> bool:
    """Add or replace one entry of dataset_info.json atomically, keeping every other entry and its order.
    Returns whether the file changed."""
    info = read_dataset_info(dataset_dir)
    if info.get(name) == entry:
        return False
    info[name] = entry
    from ..core.write import atomic_write

    atomic_write(dataset_dir / DATA_CONFIG, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return True


def spec_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A spec's data.register entry (file, format, columns, tags) as a dataset_info.json entry."""
    return entry_for(
        entry["file"],
        entry.get("format", "alpaca"),
        entry.get("columns"),
        entry.get("tags"),
        entry.get("ranking", False),
    )
