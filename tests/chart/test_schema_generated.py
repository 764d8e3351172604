"""values.schema.json is generated from values.yaml (hack/chart-schema.py): committed fresh, strict, and every
property carries its description and default."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HACK = ROOT / "hack"
SCHEMA = ROOT / "charts" / "llama-factory" / "values.schema.json"


def _generator() -> ModuleType:
    sys.path.insert(0, str(HACK))  # chart-schema.py imports its sibling chart_values.py
    try:
        spec = importlib.util.spec_from_file_location("chart_schema", HACK / "chart-schema.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(HACK))


def _properties(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(dotted path, property schema, parent schema) of every property, depth first."""
    for name, prop in node.get("properties", {}).items():
        yield f"{path}{name}", prop, node
        yield from _properties(prop, f"{path}{name}.")


def test_committed_schema_is_the_generated_one() -> None:
    result = subprocess.run(
        [sys.executable, str(HACK / "chart-schema.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_property_has_a_description_and_its_default() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert schema["additionalProperties"] is False
    for path, prop, parent in _properties(schema):
        assert prop.get("description"), f"{path} has no description"
        # keys that a free-form map only constrains (train.config.output_dir) have no default in values.yaml
        if parent.get("additionalProperties") is False:
            assert "default" in prop, f"{path} has no default"
        if prop.get("type") == "object":
            assert "additionalProperties" in prop, f"{path}: say whether the map is strict or free-form"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ("# -- Labels.\nlabels: {}\n", "labels: an empty map tells nothing"),
        ("# -- Items.\nitems: []\n", "items: annotate the list's items"),
        ("# -- Deadline.\ndeadline: null\n", "deadline: a null default needs"),
        ("port: 80\n", "port has no description"),
        ('# -- Port.\n# @schema {"minimum": 100}\nport: 80\n', "port: 80 is less than the minimum of 100"),
        ('# -- Port.\n# @schema {"$ref": "#/$defs/nope"}\nport: 80\n', "unknown $ref '#/$defs/nope'"),
        ("# -- Port.\n# @schema minimum: 1\nport: 80\n", "values.yaml:2: the annotation is not JSON"),
        (
            '# -- Free.\n# @schema {"additionalProperties": true}\nfree:\n  # @schema {"minimum": 1}\n  a: 1\n',
            "annotations inside a free-form map are never read: free.a (line 5)",
        ),
        (
            '# @schema {"type": ["integer", "null"]}\n# -- (string) Deadline.\ndeadline: null\n',
            "deadline: the README type (string) is not one the schema allows (['integer', 'null'])",
        ),
    ],
)
def test_the_generator_refuses_to_guess(values: str, message: str) -> None:
    generator = _generator()
    with pytest.raises(ValueError, match=None) as caught:
        generator.generate(values)
    assert message in str(caught.value)


def test_annotations_merge_over_the_inferred_type_and_shapes_expand_inline() -> None:
    values = (
        '# @schema-def port {"type": "integer", "minimum": 1}\n'
        '# @schema-def port {"maximum": 65535}\n'
        "\n"
        "# The service.\n"
        "service:\n"
        "  # -- Its port.\n"
        '  # @schema {"$ref": "#/$defs/port"}\n'
        "  port: 80\n"
        "  # -- Its type.\n"
        '  # @schema {"enum": ["ClusterIP", "NodePort"]}\n'
        "  type: ClusterIP\n"
    )
    service = json.loads(_generator().generate(values))["properties"]["service"]
    assert service["description"] == "The service."
    assert service["additionalProperties"] is False
    assert service["default"] == {"port": 80, "type": "ClusterIP"}
    assert service["properties"]["port"] == {
        "description": "Its port.", "type": "integer", "minimum": 1, "maximum": 65535, "default": 80
    }  # fmt: skip
    assert service["properties"]["type"]["enum"] == ["ClusterIP", "NodePort"]
    assert service["properties"]["type"]["type"] == "string"


def test_the_readme_type_is_not_part_of_the_description() -> None:
    values = '# @schema {"type": ["integer", "null"], "minimum": 0}\n# -- (int) Give up after this long.\nwait: null\n'
    wait = json.loads(_generator().generate(values))["properties"]["wait"]
    assert wait == {
        "description": "Give up after this long.",
        "type": ["integer", "null"],
        "minimum": 0,
        "default": None,
    }
