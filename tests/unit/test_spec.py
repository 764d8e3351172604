"""Loading specs: YAML strictness (duplicate keys, alias bombs, depth, size, encoding), schema problems located
by JSON path, defaults filled from the schema, and the schema itself strict, documented and bounded."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from generator.core.spec import experiment_schema, load_spec, parse_yaml, schema_problems, spec_from_text
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
        "oft": {"blockSize": 32, "rank": 0, "target": "all"},
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


def _types(node: dict) -> list[str]:  # type: ignore[type-arg]
    kind = node.get("type", [])  # (a property named `type` is a schema, not a type)
    return kind if isinstance(kind, list) else [kind] if isinstance(kind, str) else []


def test_every_schema_string_is_constrained_and_bounded() -> None:
    """A spec is input from anyone with commit rights: no string field may take any text of any length."""
    for path, node in _walk(experiment_schema()):
        if "string" in _types(node) or path.endswith(".propertyNames"):
            assert {"pattern", "enum", "const", "format"} & set(node), f"{path} has no pattern"
            assert "maxLength" in node, f"{path} has no maxLength"


def test_every_schema_number_is_bounded() -> None:
    for path, node in _walk(experiment_schema()):
        if {"integer", "number"} & set(_types(node)):
            assert {"maximum", "exclusiveMaximum"} & set(node), f"{path} has no maximum"


# "x\n": a final newline, which a pattern's bare `$` admits under Python's re (hence `(?!\n)$`)
SPEC_STRINGS = {
    "images.llamafactory": (
        [
            "hiyouga/llamafactory:0.9.5",
            "registry.corp:5000/ml/llamafactory:0.9.5-mlflow",
            "lfk.local/vllm-cpu:0.32.0",
            "ubuntu",
            "localhost:5000/a__b/c-d.e:latest",
            "x@sha256:" + "a" * 64,
            "reg.io/x:1@sha256:" + "0" * 64,
        ],
        [
            "a:b:c",
            "x/:y",
            "x/Y",
            "x//y",
            "x:",
            "x:-tag",
            "x y",
            "x\n",
            "-x",
            "x@sha256:abc",
            "x/y:" + "t" * 129,
        ],
    ),
    "model.hub.revision": (["main", "v1.0", "refs/pr/1", "a" * 40], ["", "a..b", "-x", "main branch", 'x"y']),
    "resources.gpu.product": (["NVIDIA-A100-SXM4-80GB", "Tesla-T4"], ["x-", "a b", "a" * 64]),
    "resources.priorityClassName": (["", "training", "high.priority"], ["High", "a_b", "-a", "a\n"]),
    "name": (["demo"], ["demo\n", "Demo"]),
    "distributed.nccl.socketIfname": (
        ["", "eth0", "^docker,lo", "=eth0", "ib0,eth1"],
        ["eth0 ", "$(x)", "a;b"],
    ),
    "storage.nfs.server": (
        ["nfs.example.internal", "10.0.0.5", "fd00::5"],
        ["nfs server", "-nfs", 'nfs"', ""],
    ),
    "storage.nfs.path": (["/exports/llm"], ["exports", '/x"y', "/a`b`"]),
    "model.path": (
        ["/storage/models/Llama 3 (8B)"],
        ["relative/x", "/storage/$(id)", "/storage/a'b", "/a\\b"],
    ),
    "data.register.qa.file": (
        ["qa.json", "sub/qa.jsonl", "a..b.json"],
        ["/etc/x", "../x", "a/../../x", "a/..", ""],
    ),
    "tracking.mlflow.runName": (["run 1: lr=1e-4 (final)"], ["", "a\x00b", "a\x1bb", "a\x85b"]),
    "tracking.mlflow.credentialsSecret.tokenKey": (["token", "MLFLOW.token_1"], ["a b", "a/b", ""]),
    "serve.extraArgs[0]": (['--override-generation-config={"temperature": 0.5}'], ["", "--x\ny"]),
}


def _set(document: dict, dotted: str, value: object) -> dict:  # type: ignore[type-arg]
    node = document
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    if last.endswith("[0]"):
        node[last[:-3]] = [value]
    else:
        node[last] = value
    return document


@pytest.mark.parametrize("field", sorted(SPEC_STRINGS))
def test_string_patterns_admit_real_values_and_refuse_malformed_ones(field: str) -> None:
    base = yaml.safe_load(MINIMAL)
    if field.startswith("data.register"):
        base["data"] = {"datasets": ["qa"]}
    if field.startswith("tracking"):
        base["tracking"] = {
            "mlflow": {"trackingUri": "http://mlflow:5000", "credentialsSecret": {"name": "m"}}
        }
    if field.startswith("storage"):
        base["storage"] = {"nfs": {"server": "nfs", "path": "/x"}}
    if field.startswith("model.hub"):
        base["model"]["hub"] = {"id": "org/model"}
    good, bad = SPEC_STRINGS[field]
    for value in good:
        assert schema_problems(_set(copy.deepcopy(base), field, value)) == [], (field, value)
    for value in bad:
        assert schema_problems(_set(copy.deepcopy(base), field, value)), (field, value)


def test_node_selector_and_toleration_keys_follow_the_label_key_rule() -> None:
    ok = MINIMAL + (
        "resources: {nodeSelector: {pool: gpu, nvidia.com/gpu.product: A100, llamafactory-k8s/real-node: 'true'},"
        " tolerations: [{key: nvidia.com/gpu, operator: Exists}, {operator: Exists}]}\n"
    )
    spec_from_text(ok, "spec.yaml")
    for key in ("'a b'", "'Nvidia.com/gpu'", "'/x'", "'x/'", "'" + "a" * 64 + "'"):
        with pytest.raises(SpecError):
            spec_from_text(MINIMAL + f"resources: {{nodeSelector: {{{key}: v}}}}\n", "spec.yaml")


# ------------------------------------------------------------------- bounds of the loader (hostile files)


def _alias_bomb(levels: int) -> str:
    """Each level is a list of nine aliases of the one before: 9**levels strings from a few lines."""
    lines = ["llamafactoryArgs:", "  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return MINIMAL + "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_anything_expands_it() -> None:
    assert problems_of(_alias_bomb(9)) == [
        ("$", "refused YAML: aliases expand the document by more than 10000 nodes")
    ]


def test_ordinary_aliases_are_still_read() -> None:
    assert parse_yaml("a: &x {b: [1, 2]}\nc: *x\nd: {<<: *x, e: 3}\n", "spec.yaml") == {
        "a": {"b": [1, 2]},
        "c": {"b": [1, 2]},
        "d": {"b": [1, 2], "e": 3},
    }


def test_a_recursive_alias_is_refused() -> None:
    assert problems_of(MINIMAL + "llamafactoryArgs: {x: &loop [1, *loop]}\n") == [
        ("$", "refused YAML: an alias refers to a node that contains it (a recursive structure)")
    ]


@pytest.mark.parametrize("anchor", ["", "# R&D's experiment\n"], ids=["a tree", "a text with an &"])
def test_deep_nesting_is_refused(anchor: str) -> None:
    """Refused whether the loader walks the text as a tree (no `&` in it) or as a graph that may share nodes."""
    deep = "llamafactoryArgs: {x: " + "[" * 70 + "]" * 70 + "}\n"
    assert problems_of(anchor + MINIMAL + deep) == [("$", "refused YAML: nested deeper than 64 levels")]
    within = deep.replace("[" * 70, "[" * 62).replace("]" * 70, "]" * 62)  # 64 levels with the spec's two
    assert spec_from_text(anchor + MINIMAL + within, "spec.yaml").raw["llamafactoryArgs"]["x"]


def test_a_spec_larger_than_a_mebibyte_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_text(MINIMAL + "#" * (1 << 20))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert [p.message for p in info.value.problems] == ["the spec is larger than 1024 KiB"]


def test_a_byte_that_is_not_utf8_is_located(tmp_path: Path) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == f"{path}::$: not UTF-8: byte 0xe9 at offset 9 cannot be decoded"


@pytest.mark.parametrize(
    "content",
    [_alias_bomb(9).encode(), b"name: caf\xe9\n", ("#" * (1 << 20) + "\n").encode(), b"a: &x [*x]\n"],
    ids=["alias bomb", "latin-1", "too large", "recursive"],
)
def test_the_cli_answers_a_hostile_file_with_one_line_and_exit_1(tmp_path: Path, content: bytes) -> None:
    from click.testing import CliRunner

    from generator.cli import cli

    path = tmp_path / "experiment.yaml"
    path.write_bytes(content)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.output.startswith(f"{path}::$: ")
    assert result.output.count("\n") == 1
