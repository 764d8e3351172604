"""Loading specs: YAML strictness, schema problems located by JSON path, defaults filled from the schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.core.spec import experiment_schema, load_spec, spec_from_text
from generator.errors import SpecError

MINIMAL = """
name: demo
storage: {existingClaim: llm-storage}
model: {path: /storage/models/llama-3.1-8b-instruct}
data: {datasets: [qa_dataset]}
"""


def problems_of(text: str) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        spec_from_text(text, "spec.yaml")
    return [(p.path, p.message) for p in info.value.problems]


def test_defaults_come_from_the_schema() -> None:
    spec = spec_from_text(MINIMAL, "spec.yaml")
    assert spec.data["namespace"] == "llm-training"
    assert spec.data["method"] == {
        "type": "lora",
        "lora": {"rank": 8, "dropout": 0.1, "target": "all"},
        "freeze": {"trainableLayers": 2},
    }
    assert spec.data["training"]["saveStrategy"] == "steps"
    assert spec.data["resources"]["gpuResource"] == "nvidia.com/gpu"
    assert spec.data["images"]["llamafactory"] == "hiyouga/llamafactory:0.9.5"
    assert spec.data["merge"]["resources"] == {"gpus": 0, "cpu": "8", "memory": "64Gi"}
    assert spec.raw == spec_from_text(MINIMAL, "x").raw  # the person's own text is kept apart


def test_given_values_win_over_defaults_and_nested_defaults_fill_in() -> None:
    spec = spec_from_text(MINIMAL + "method: {lora: {rank: 32}}\n", "spec.yaml")
    assert spec.data["method"]["lora"] == {"rank": 32, "dropout": 0.1, "target": "all"}
    assert spec.data["method"]["type"] == "lora"


def test_registered_dataset_entries_get_their_defaults() -> None:
    text = MINIMAL.replace(
        "data: {datasets: [qa_dataset]}", "data: {datasets: [qa], register: {qa: {file: qa.json}}}"
    )
    spec = spec_from_text(text, "spec.yaml")
    assert spec.data["data"]["register"]["qa"] == {"file": "qa.json", "format": "alpaca"}


def test_every_schema_problem_is_reported_at_once_with_its_path() -> None:
    found = problems_of(MINIMAL + "training: {epochs: -1, batchSize: many}\nmethod: {lora: {rnak: 8}}\n")
    assert found == [
        ("$.method.lora.rnak", "unknown key"),
        ("$.training.batchSize", "'many' is not of type 'integer'"),
        ("$.training.epochs", "-1 is less than or equal to the minimum of 0"),
    ]


def test_list_items_are_located_by_index() -> None:
    found = problems_of(MINIMAL + "resources: {tolerations: [{key: a}, {effect: Sometimes}]}\n")
    assert found[0][0] == "$.resources.tolerations[1].effect"


def test_duplicate_keys_are_refused() -> None:
    assert problems_of(MINIMAL + "name: again\n")[0][1].endswith("duplicate key 'name' (first on line 2)")


def test_unreadable_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "missing.yaml")
    assert info.value.problems[0].message.startswith("cannot read the spec")


def _walk(node: object, path: str = "$"):  # type: ignore[no-untyped-def]
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def test_schema_is_strict_and_documented_throughout() -> None:
    schema = experiment_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    for path, node in _walk(schema):
        if node.get("type") == "object" and "properties" in node:
            assert "additionalProperties" in node, f"{path} must say additionalProperties"
            for name, prop in node["properties"].items():
                assert prop.get("description"), f"{path}.properties.{name} needs a description"


def test_schema_defaults_are_valid_values() -> None:
    from jsonschema import Draft202012Validator

    schema = experiment_schema()
    for path, node in _walk(schema):
        if "default" in node and "$ref" not in node:
            sub = {k: v for k, v in node.items() if k != "default"}
            errors = list(
                Draft202012Validator({**sub, "$defs": schema["$defs"]}).iter_errors(node["default"])
            )
            assert not errors, f"{path}: default {node['default']!r} is invalid: {errors[0].message}"
