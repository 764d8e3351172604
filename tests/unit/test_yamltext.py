"""The values files' YAML writer: every value inline as flow YAML that reads back as written, bare words and
keys only where YAML reads them back as the same string, comments that cannot break out of their line."""

from __future__ import annotations

import math

import pytest
import yaml

from generator.core.releases.yamltext import Bare, Block, yaml_key, yaml_scalar


@pytest.mark.parametrize(
    "value",
    [5e-05, 1.0, 0.1, 1e-10, 3, True, None, "yes", "0.9.5", "on", "a: b", {"k": [1, "x"]}, [], "ünï"],
)
def test_scalars_read_back_identically(value: object) -> None:
    assert yaml.safe_load(f"key: {yaml_scalar(value)}")["key"] == value


def test_non_finite_numbers_are_refused() -> None:
    with pytest.raises(ValueError):
        yaml_scalar(math.nan)


@pytest.mark.parametrize(
    "key", ["lora_rank", "on", "yes", "No", "null", "true", "1e3", "a b", "x: y", "-", "ü"]
)
def test_keys_are_bare_only_where_they_read_back_as_the_same_string(key: str) -> None:
    text = f"{yaml_key(key)}: 1"
    assert yaml.safe_load(text) == {key: 1}
    assert (text == f"{key}: 1") == (key == "lora_rank")


@pytest.mark.parametrize("word", ["on", "no", "Null", "12", "1.5", "a b", "x:y", "~", "", "sft: 1"])
def test_a_bare_word_yaml_would_read_otherwise_is_refused(word: str) -> None:
    with pytest.raises(ValueError):
        Bare(word)


def test_a_block_writes_nested_blocks_comments_headings_and_its_data() -> None:
    inner = Block(("stage", Bare("sft")), ("report_to", Bare("none"))).heading("output").add("dir", "/out")
    block = Block(("enabled", True)).comment("why it is here").add("config", inner).add("nodes", {"a": [1]})
    assert block.text() == (
        "enabled: true\n"
        "# why it is here\n"
        "config:\n"
        "  stage: sft\n"
        "  report_to: none\n"
        "  ### output\n"
        '  dir: "/out"\n'
        'nodes: {"a": [1]}\n'
    )
    data = block.data()
    assert data == {
        "enabled": True,
        "config": {"stage": "sft", "report_to": "none", "dir": "/out"},
        "nodes": {"a": [1]},
    }
    assert yaml.safe_load(block.text()) == data
    assert type(data["config"]["stage"]) is str


def test_a_comment_stays_on_its_line() -> None:
    with pytest.raises(ValueError):
        Block().comment("one\nkey: injected")
