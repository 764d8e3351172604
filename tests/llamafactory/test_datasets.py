"""`lfk data` agrees with LLaMA-Factory: the same files through LLaMA-Factory's own loader and
preprocessing give the same count of usable examples, for good and for broken files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from generator.checks import datasets
from tests.support import smoke

H, G = "human", "gpt"


def msg(role: str | None, text: str = "x") -> dict[str, Any]:
    return {"from": role, "value": text}


CASES: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
    "alpaca-good": ({"formatting": "alpaca"}, smoke.ALPACA[:4]),
    "alpaca-missing-outputs": (
        {"formatting": "alpaca"},
        [
            {"instruction": "a", "input": "", "output": "b"},
            {"instruction": "c", "input": ""},
            {"instruction": "d", "input": "e", "output": None},
        ],
    ),
    "alpaca-history": (
        {
            "formatting": "alpaca",
            "columns": {
                "prompt": "instruction",
                "query": "input",
                "response": "output",
                "history": "history",
            },
        },
        [
            {"instruction": "a", "input": "", "output": "b", "history": [["q1", "r1"], ["q2", "r2"]]},
            {"instruction": "c", "input": "", "output": "d", "history": []},
        ],
    ),
    "alpaca-custom-columns": (
        {"formatting": "alpaca", "columns": {"prompt": "question", "response": "answer"}},
        [{"question": "a", "answer": "b"}, {"question": "c", "answer": None}],
    ),
    "alpaca-without-input-column": (
        {"formatting": "alpaca"},
        [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}],
    ),
    "alpaca-empty-prompt-kept": ({"formatting": "alpaca"}, [{"instruction": "", "input": "", "output": "b"}]),
    "sharegpt-good": (
        {"formatting": "sharegpt", "columns": {"messages": "conversations", "system": "system"}},
        smoke.SHAREGPT[:2],
    ),
    "sharegpt-odd-turns": (
        {"formatting": "sharegpt"},
        [{"conversations": [msg(H), msg(G), msg(H)]}, {"conversations": [msg(H), msg(G)]}],
    ),
    "sharegpt-wrong-order": (
        {"formatting": "sharegpt"},
        [
            {"conversations": [msg(G), msg(H)]},
            {"conversations": [msg(H), msg(H)]},
            {"conversations": [msg(H), msg(G)]},
        ],
    ),
    "sharegpt-system-first": (
        {"formatting": "sharegpt"},
        [{"conversations": [msg("system"), msg(H), msg(G)]}, {"conversations": [msg("system")]}],
    ),
    "sharegpt-tools": (
        {"formatting": "sharegpt"},
        [
            {
                "conversations": [
                    msg(H),
                    msg("function_call", '{"name": "f", "arguments": {"a": 1}}'),
                    msg("observation"),
                    msg(G),
                ]
            },
            {"conversations": [msg(H), msg("observation")]},
        ],
    ),
    "sharegpt-function-not-json": (
        {"formatting": "sharegpt"},
        [{"conversations": [msg(H), msg("function_call", "call f"), msg("observation"), msg(G)]}],
    ),
    "sharegpt-empty": (
        {"formatting": "sharegpt"},
        [{"conversations": []}, {"conversations": [msg(H), msg(G)]}],
    ),
    "sharegpt-custom-tags-no-system-tag": (
        {
            "formatting": "sharegpt",
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
            },
        },
        [
            {
                "conversations": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                ]
            },
            {"conversations": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
        ],
    ),
    "sharegpt-missing-role": (
        {"formatting": "sharegpt"},
        [{"conversations": [{"value": "a"}, msg(G)]}, {"conversations": [msg(H), msg(G)]}],
    ),
}


PAIR_COLUMNS = {"chosen": "chosen", "rejected": "rejected"}
# (stage, entry, rows): each stage's own data, through the preprocessing its workflow asks for (pre-training
# is left out: it packs every text into blocks, so it has no per-example count to compare). A broken value is
# null, not another type: Arrow refuses a column of mixed types, and with it the whole file.
STAGE_CASES: dict[str, tuple[str, dict[str, Any], list[dict[str, Any]]]] = {
    "dpo-alpaca-pairs": (
        "dpo",
        {"formatting": "alpaca", "ranking": True, "columns": {"prompt": "instruction", **PAIR_COLUMNS}},
        [
            {"instruction": "q", "chosen": "a", "rejected": "b"},
            {"instruction": "q", "chosen": "a", "rejected": None},
        ],
    ),
    "rm-sharegpt-pairs": (
        "rm",
        {"formatting": "sharegpt", "ranking": True, "columns": {"messages": "conversations", **PAIR_COLUMNS}},
        [
            {"conversations": [msg(H)], "chosen": msg(G, "a"), "rejected": msg(G, "b")},
            {"conversations": [msg(H), msg(G)], "chosen": msg(G, "a"), "rejected": msg(G, "b")},
            {"conversations": [msg(H)], "chosen": None, "rejected": msg(G, "b")},
        ],
    ),
    "kto-tagged": (
        "kto",
        {
            "formatting": "alpaca",
            "columns": {"prompt": "instruction", "response": "output", "kto_tag": "tag"},
        },
        [
            {"instruction": "q", "output": "a", "tag": True},
            {"instruction": "q", "output": "b", "tag": False},
            {"instruction": "q", "output": "c", "tag": None},
        ],
    ),
    "ppo-prompts": ("ppo", {"formatting": "alpaca"}, [{"instruction": "q", "input": ""}, *smoke.ALPACA[:2]]),
}
# the preprocessing each stage's workflow asks get_dataset for
DATA_STAGE = {"dpo": "rm"}


def llamafactory_count(folder: Path, name: str, tokenizer_dir: Path, cache: Path, stage: str = "sft") -> int:
    """Usable examples after LLaMA-Factory's own loading, conversion and the stage's preprocessing."""
    import os

    os.environ["HF_DATASETS_CACHE"] = str(cache)
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from transformers import AutoTokenizer

    model_args, data_args, training_args, _, _ = get_train_args({
        "model_name_or_path": str(tokenizer_dir), "template": "llama3", "stage": stage, "do_train": True,
        "finetuning_type": "lora", "dataset": name, "dataset_dir": str(folder), "cutoff_len": 64,
        "output_dir": str(folder / "out"), "overwrite_cache": True, "preprocessing_num_workers": None,
        "report_to": "none", "bf16": False, **({"reward_model": str(tokenizer_dir)} if stage == "ppo" else {}),
    })  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    module = get_dataset(
        template, model_args, data_args, training_args, DATA_STAGE.get(stage, stage), tokenizer
    )
    return len(module["train_dataset"]) if module.get("train_dataset") is not None else 0


@pytest.mark.parametrize("case", sorted(CASES))
def test_usable_examples_agree_with_llamafactory(
    case: str, tmp_path: Path, workspace: smoke.Workspace
) -> None:
    entry, rows = CASES[case]
    file_name = f"{case}.json"
    (tmp_path / file_name).write_text(json.dumps(rows), encoding="utf-8")
    datasets.register(tmp_path, case, {"file_name": file_name, **entry})
    try:
        ours = datasets.check(
            tmp_path / file_name, datasets.Attrs.of_entry(datasets.read_dataset_info(tmp_path)[case])
        )
    except datasets.DataError as exc:  # we say the file is unusable: LLaMA-Factory must stop on it too
        with pytest.raises(KeyError):
            llamafactory_count(tmp_path, case, workspace.base_model, tmp_path / "cache")
        assert "stops on it" in str(exc)
        return
    assert ours.total == len(rows)
    try:
        theirs = llamafactory_count(tmp_path, case, workspace.base_model, tmp_path / "cache")
    except RuntimeError as exc:  # LLaMA-Factory stopped on the file: we must have said it would
        assert "Invalid JSON format" in str(exc), exc
        assert ours.fatal, f"LLaMA-Factory stopped ({exc}) but we did not predict it"
        return
    except ValueError as exc:  # nothing survived
        assert "Cannot find valid samples" in str(exc), exc
        theirs = 0
    assert not ours.fatal
    assert ours.valid == theirs, f"ours: {ours.valid} valid, dropped {ours.dropped}; LLaMA-Factory: {theirs}"


@pytest.mark.parametrize("case", sorted(STAGE_CASES))
def test_each_stages_usable_examples_agree_with_llamafactory(
    case: str, tmp_path: Path, workspace: smoke.Workspace
) -> None:
    stage, entry, rows = STAGE_CASES[case]
    (tmp_path / f"{case}.json").write_text(json.dumps(rows), encoding="utf-8")
    datasets.register(tmp_path, case, {"file_name": f"{case}.json", **entry})
    ours = datasets.check(tmp_path / f"{case}.json", datasets.Attrs.of_entry(entry), stage)
    theirs = llamafactory_count(tmp_path, case, workspace.base_model, tmp_path / "cache", stage)
    assert 0 < ours.valid < len(rows) or case == "ppo-prompts"
    assert ours.valid == theirs, f"ours: {ours.valid} valid, dropped {ours.dropped}; LLaMA-Factory: {theirs}"


def test_sft_data_given_to_dpo_is_refused_as_llamafactory_refuses_it(
    tmp_path: Path, workspace: smoke.Workspace
) -> None:
    (tmp_path / "sft.json").write_text(json.dumps(smoke.ALPACA[:2]), encoding="utf-8")
    datasets.register(tmp_path, "sft", {"file_name": "sft.json", "formatting": "alpaca"})
    with pytest.raises(datasets.DataError, match="stage dpo trains on pairs"):
        datasets.check(tmp_path / "sft.json", datasets.Attrs(), "dpo")
    with pytest.raises(ValueError, match="not applicable in the current training stage"):
        llamafactory_count(tmp_path, "sft", workspace.base_model, tmp_path / "cache", "dpo")


# LLaMA-Factory's bundled demo sets at their stages: instructions, tool calls, pairs, tagged answers, raw text
BUNDLED_STAGES = {
    "identity": "sft", "glaive_toolcall_en_demo": "sft", "dpo_en_demo": "dpo", "kto_en_demo": "kto", "c4_demo": "pt",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BUNDLED_STAGES))
def test_bundled_demo_sets_copied_by_sync_agree_with_llamafactory(
    name: str, tmp_path: Path, workspace: smoke.Workspace
) -> None:
    """Copied from llamafactory's real source package and registered as `lfk import` registers them: usable
    examples by our check and by LLaMA-Factory's own loader, the same."""
    from generator.checks.datasets import spec_entry
    from generator.cli.data_commands import copy_bundled
    from generator.core import bundled

    entry = bundled.datasets()[name]
    copy_bundled({name: entry}, tmp_path)
    datasets.register(tmp_path, name, spec_entry(entry))
    stage = BUNDLED_STAGES[name]
    ours = datasets.check(tmp_path / entry["file"], datasets.Attrs.of_entry(spec_entry(entry)), stage)
    theirs = llamafactory_count(tmp_path, name, workspace.base_model, tmp_path / "cache", stage)
    assert ours.valid > 0 and not ours.fatal
    if stage == "pt":  # LLaMA-Factory packs pre-training text into blocks of cutoff_len tokens: more of them
        assert ours.valid == ours.total and theirs > ours.valid, (ours, theirs)
        return
    assert ours.valid == theirs, f"ours: {ours.valid} valid, dropped {ours.dropped}; LLaMA-Factory: {theirs}"
