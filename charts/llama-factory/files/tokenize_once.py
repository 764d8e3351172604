"""Tokenize a training config's datasets once, onto the storage, under a key made of everything that changes
the tokens; every training start of the same data then loads the tokenized set instead of tokenizing again.

    tokenize_once.py run CONFIG ROOT      tokenizes into ROOT/<key> unless it is already there; notes it in the
                                          run's output_dir
    tokenize_once.py resolve CONFIG ROOT  prints the set to train on: the one noted for the run, else ROOT/<key>
    tokenize_once.py path CONFIG ROOT     prints ROOT/<key>, computed from the inputs
    tokenize_once.py overrides CONFIG ROOT  prints the trainer's argument for that set (none when it is not there)

The train release runs `run` in a GPU-less hook Job before the training Job, so GPUs never wait on tokenizing
and a multi-node run's rank 0 never tokenizes past the distributed timeout. The key covers the config keys
that shape the tokens, the datasets' dataset_info.json entries and file contents, and the tokenizer's files:
a changed input makes a new key, so a stale set is never loaded. The set is written to a staging folder and
renamed into place, so a set that exists is complete. The hook notes the set in the run's output folder, so
a training start (and a restart after preemption) finds it without reading the datasets again: the data a
run was tokenized from at its install is the data it trains on. Standard library + PyYAML + the image's
llamafactory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

# podlib beside this script (the pods' /scripts), also when this file is imported by its path
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from podlib import EXIT, TOKENIZED_MARKER, atomic_write  # noqa: E402

# config keys that change the tokenized set: LLaMA-Factory's data and processor arguments, the tokenizer's
# options, the stage (it picks the preprocessing) and the seed (it shuffles the split); the llamafactory tier
# checks that every field of DataArguments and ProcessorArguments is in one of the three lists
TOKEN_KEYS = (
    "stage", "seed", "template", "dataset", "eval_dataset", "cutoff_len", "train_on_prompt", "mask_history",
    "streaming", "buffer_size", "mix_strategy", "interleave_probs", "preprocessing_batch_size", "max_samples",
    "val_size", "eval_on_each_dataset", "packing", "neat_packing", "tool_format", "default_system",
    "enable_thinking", "preserve_thinking",
    "use_fast_tokenizer", "resize_vocab", "split_special_tokens", "add_tokens", "add_special_tokens",
    "new_special_tokens_config", "model_revision",
    "image_max_pixels", "image_min_pixels", "image_do_pan_and_scan", "crop_to_patches", "video_max_pixels",
    "video_min_pixels", "video_fps", "video_maxlen", "use_audio_in_video", "audio_sampling_rate",
)  # fmt: skip
# carried into the tokenizing config without changing the key: where things are, how fast it goes, and what
# LLaMA-Factory's argument checks want to see (PPO's reward model)
CARRIED_KEYS = (
    "model_name_or_path", "dataset_dir", "media_dir", "trust_remote_code", "cache_dir",
    "preprocessing_num_workers", "finetuning_type", "reward_model", "reward_model_type",
)  # fmt: skip
# the preprocessing each stage's workflow asks LLaMA-Factory's get_dataset for: DPO trains on the reward
# model's pairs; the others on their own
DATA_STAGE = {"dpo": "rm"}
# data arguments that neither change the tokens nor are needed to make them
NOT_TOKEN_KEYS = (
    "overwrite_cache", "eval_num_beams", "ignore_pad_token_for_loss", "tokenized_path", "data_shared_file_system",
)  # fmt: skip
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "vocab.json",
    "vocab.txt", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
    "preprocessor_config.json", "processor_config.json",
)  # fmt: skip
CHUNK = 1 << 20
NOTE = TOKENIZED_MARKER  # in the run's output_dir: the set its install tokenized


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tree_digests(path: Path) -> dict[str, str]:
    """A file's digest, or every file's under a folder (a dataset may be a folder of shards)."""
    if path.is_file():
        return {path.name: file_digest(path)}
    if path.is_dir():
        return {str(p.relative_to(path)): file_digest(p) for p in sorted(path.rglob("*")) if p.is_file()}
    return {}


def names(value: Any) -> list[str]:
    if not value:
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(n).strip() for n in items if str(n).strip()]


def inputs(config: dict[str, Any]) -> dict[str, Any]:
    """What the tokens are made from: the token keys, each dataset's entry and files, the tokenizer files."""
    dataset_dir = Path(str(config.get("dataset_dir", "data")))
    info_file = dataset_dir / "dataset_info.json"
    info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
    datasets = {}
    for name in names(config.get("dataset")) + names(config.get("eval_dataset")):
        entry = info.get(name, {})
        files = tree_digests(dataset_dir / entry["file_name"]) if "file_name" in entry else {}
        datasets[name] = {"entry": entry, "files": files}
    model = str(config.get("model_name_or_path", ""))
    if Path(model).is_dir():
        tokenizer: Any = {
            f: file_digest(Path(model) / f) for f in TOKENIZER_FILES if (Path(model) / f).is_file()
        }
    else:  # a hub id: its name and revision are all that is known before loading
        tokenizer = {"hub": model}
    return {
        "config": {k: config[k] for k in TOKEN_KEYS if k in config},
        "datasets": datasets,
        "tokenizer": tokenizer,
    }


def key(config: dict[str, Any]) -> str:
    document = json.dumps(inputs(config), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(document.encode()).hexdigest()[:20]


def load(config_file: str) -> dict[str, Any]:
    with open(config_file, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def target(config_file: str, root: str) -> Path:
    return Path(root) / key(load(config_file))


def resolve(config_file: str, root: str) -> Path:
    """The set noted for this run when it is there, else the key computed from the inputs."""
    config = load(config_file)
    note = Path(str(config.get("output_dir", ""))) / NOTE
    if note.is_file():
        noted = Path(note.read_text(encoding="utf-8").strip())
        if noted.parent == Path(root) and noted.is_dir():
            return noted
    return Path(root) / key(config)


def trainer_overrides(config_file: str, root: str) -> list[str]:
    """The trainer's arguments for the set resolve() names: tokenized_path=<the set> when it is there; none
    when it is not (said on stderr), and the trainer tokenizes the data itself. train.sh's launch and
    train_in_process.py both take them from here."""
    tokenized = resolve(config_file, root)
    if tokenized.is_dir():
        return [f"tokenized_path={tokenized}"]
    print(f"train: no tokenized set at {tokenized}; the trainer tokenizes the data itself", file=sys.stderr)
    return []


def write_note(config: dict[str, Any], tokenized: Path) -> None:
    output_dir = config.get("output_dir")
    if not output_dir:
        return
    atomic_write(Path(str(output_dir)) / NOTE, f"{tokenized}\n")


def tokenize(config: dict[str, Any], into: Path) -> None:
    """LLaMA-Factory's own loading and preprocessing, as its trainer runs it, saved at `into`."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    args = {k: config[k] for k in TOKEN_KEYS + CARRIED_KEYS if k in config}
    args.update(do_train=True, tokenized_path=str(into), report_to="none", bf16=False, fp16=False)
    with tempfile.TemporaryDirectory() as scratch:
        args["output_dir"] = scratch
        model_args, data_args, training_args, finetuning_args, _ = get_train_args(args)
        module = load_tokenizer(model_args)
        template = get_template_and_fix_tokenizer(module["tokenizer"], data_args)
        stage = DATA_STAGE.get(finetuning_args.stage, finetuning_args.stage)
        get_dataset(template, model_args, data_args, training_args, stage=stage, **module)


def run(config_file: str, root: str) -> int:
    config = load(config_file)
    final = Path(root) / key(config)
    if final.is_dir():
        write_note(config, final)
        print(f"tokenize: already tokenized at {final}; nothing to do", flush=True)
        return EXIT["ok"]
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.{socket.gethostname()}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    print(f"tokenize: {', '.join(names(config.get('dataset')))} -> {final}", flush=True)
    tokenize(config, staging)
    atomic_write(
        staging.parent / f"{final.name}.json",
        json.dumps(inputs(config), indent=2, sort_keys=True, ensure_ascii=False, default=str),
    )
    try:
        staging.rename(final)
    except OSError:  # another experiment of the same data finished first: its set is the same
        shutil.rmtree(staging, ignore_errors=True)
        if not final.is_dir():
            raise
    write_note(config, final)
    print(f"tokenize: saved at {final}; trainings of this data load it instead of tokenizing", flush=True)
    return EXIT["ok"]


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("path", "resolve", "overrides", "run"):
        print(__doc__, file=sys.stderr)
        return EXIT["usage"]
    command, config_file, root = argv
    if command == "path":
        print(target(config_file, root))
        return EXIT["ok"]
    if command == "resolve":
        print(resolve(config_file, root))
        return EXIT["ok"]
    if command == "overrides":
        for argument in trainer_overrides(config_file, root):
            print(argument)
        return EXIT["ok"]
    return run(config_file, root)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
