"""The contract (charts/llama-factory/files/contract.json) against every copy of its facts outside the pods
and the templates: the generator's constants, the chart's values.yaml defaults and Chart.yaml, both JSON
schemas, the spec's default images, the pinned LLaMA-Factory extra and its snapshot. A fact changed in the
contract and not in one of these fails here, naming the copy."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from generator.core import components, contract, facts, gitops, lfinfo, storage
from generator.core.rules import llamafactory as llamafactory_rules
from generator.core.spec import load_spec
from generator.ops import diagnose, reader, readiness
from generator.project import CHART_DIR, REPO_ROOT, SPEC_SCHEMA

CONTRACT = json.loads((CHART_DIR / "files" / "contract.json").read_text(encoding="utf-8"))
VALUES = yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))
CHART = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text(encoding="utf-8"))
CHART_SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
SPEC = json.loads(Path(SPEC_SCHEMA).read_text(encoding="utf-8"))


def at(document: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        document = document[key]
    return document


def enums_of(schema: Any, key: str) -> list[list[Any]]:
    """Every `enum` of a property named `key`, anywhere in a JSON schema."""
    found: list[list[Any]] = []
    if isinstance(schema, dict):
        for name, sub in schema.get("properties", {}).items():
            if name == key and isinstance(sub, dict) and "enum" in sub:
                found.append(sub["enum"])
        for value in schema.values():
            found += enums_of(value, key)
    elif isinstance(schema, list):
        for value in schema:
            found += enums_of(value, key)
    return found


def test_the_generator_reads_the_contract_file_of_the_chart() -> None:
    assert contract.CONTRACT == CONTRACT
    assert contract.CONTRACT_FILE == CHART_DIR / "files" / "contract.json"


@pytest.mark.parametrize(
    ("constant", "key"),
    [
        (storage.STORAGE_ROOT, "root"),
        (storage.MODELS_DIR, "models"),
        (storage.MERGED_DIR, "merged"),
        (storage.OUTPUT_DIR, "output"),
        (storage.TOKENIZED_DIR, "tokenized"),
        (storage.LLAMABOARD_DIR, "llamaboard"),
        (storage.SERVING_DIR, "serving"),
    ],
)
def test_storage_paths_equal_the_contract(constant: str, key: str) -> None:
    assert constant == CONTRACT["storage"][key]


def test_every_storage_path_lies_under_the_root() -> None:
    root = CONTRACT["storage"]["root"]
    for key, path in CONTRACT["storage"].items():
        assert key == "root" or path.startswith(root + "/"), key


def test_the_generators_copies_of_facts_equal_the_contract() -> None:
    exits, versions = CONTRACT["exitCodes"], CONTRACT["versions"]
    copies = {
        "webui port": components.COMPONENTS["webui"].port,
        "vllm port": components.COMPONENTS["vllm"].port,
        "vllm port (service url)": facts.VLLM_PORT,
        "lora ranks": list(facts.VLLM_LORA_RANKS),
        "tokenized marker": reader.TOKENIZED_NOTE,
        "components": list(components.NAMES),
        "exit codes": [diagnose.CONFIG_ERROR_EXIT, diagnose.GPU_OOM_EXIT, diagnose.KILLED_EXIT],
        "gate exit": diagnose.GATE_FAILED_EXIT,
        "fail at once": list(contract.FAIL_AT_ONCE),
        "merge ratios": [readiness.MERGE_MIN_SIZE_RATIO, readiness.MERGE_MAX_SIZE_RATIO],
        "llamafactory snapshot": lfinfo.SNAPSHOT_VERSION,
        "llamafactory-plus tag": llamafactory_rules.PLUS_IMAGE.rsplit(":", 1)[1],
    }
    expected = {
        "webui port": CONTRACT["ports"]["webui"],
        "vllm port": CONTRACT["ports"]["vllm"],
        "vllm port (service url)": CONTRACT["ports"]["vllm"],
        "lora ranks": CONTRACT["vllm"]["loraRanks"],
        "tokenized marker": CONTRACT["files"]["tokenizedMarker"],
        "components": CONTRACT["components"],
        "exit codes": [exits["configError"], exits["gpuOutOfMemory"], exits["memoryKilled"]],
        "gate exit": exits["gateFailed"],
        "fail at once": [exits[name] for name in CONTRACT["failAtOnce"]],
        "merge ratios": [CONTRACT["merge"]["minSizeRatio"], CONTRACT["merge"]["maxSizeRatio"]],
        "llamafactory snapshot": versions["llamafactory"],
        "llamafactory-plus tag": versions["llamafactory"],
    }
    assert copies == expected


def test_the_exit_codes_the_diagnosis_names_are_the_contracts() -> None:
    """The advice quotes the code it read, so a changed code changes the words too."""
    pod = {"spec": {"containers": [{"name": "c"}]}, "status": {"containerStatuses": [
        {"name": "c", "state": {"terminated": {"exitCode": CONTRACT["exitCodes"]["configError"]}}}
    ]}}  # fmt: skip
    advice = diagnose.explain(pod, "", "train")
    assert advice is not None and f"(exit {CONTRACT['exitCodes']['configError']})" in advice


def test_gitops_objects_carry_the_contracts_part_of_and_the_experiment_as_the_chart_does() -> None:
    derived = facts.derive(load_spec(REPO_ROOT / "values" / "tiny-cpu" / "experiment.yaml"))
    assert gitops.labels(derived) == {
        "app.kubernetes.io/part-of": CONTRACT["labels"]["partOf"],
        "llamafactory-k8s/experiment": "tiny-cpu",
    }
    # the chart's own labels use the same key for the experiment (templates/_names.tpl)
    names = (CHART_DIR / "templates" / "_names.tpl").read_text(encoding="utf-8")
    assert "llamafactory-k8s/experiment:" in names


# ------------------------------------------------------------------------------------------ the chart's copies
def test_values_yaml_defaults_equal_the_contract() -> None:
    assert at(VALUES, "webui.port") == CONTRACT["ports"]["webui"]
    assert at(VALUES, "webui.service.port") == CONTRACT["ports"]["webui"]
    assert at(VALUES, "vllm.port") == CONTRACT["ports"]["vllm"]
    assert at(VALUES, "vllm.service.port") == CONTRACT["ports"]["vllm"]
    assert at(VALUES, "vllm.image.tag") == "v" + CONTRACT["versions"]["vllm"]
    assert at(VALUES, "webui.workingDir") == CONTRACT["storage"]["llamaboard"]
    assert at(VALUES, "train.tokenize.root") == CONTRACT["storage"]["tokenized"]
    assert at(VALUES, "merge.verify.minSizeRatio") == CONTRACT["merge"]["minSizeRatio"]
    assert at(VALUES, "merge.verify.maxSizeRatio") == CONTRACT["merge"]["maxSizeRatio"]
    for name in CONTRACT["components"]:  # one block per component, each with its switch
        assert "enabled" in VALUES[name], name


def test_chart_yaml_pins_the_contracts_versions() -> None:
    assert CHART["appVersion"] == CONTRACT["versions"]["llamafactory"]
    images = CHART.get("annotations", {}).get("artifacthub.io/images", "")
    assert f"hiyouga/llamafactory:{CONTRACT['versions']['llamafactory']}" in images
    assert f"vllm/vllm-openai:v{CONTRACT['versions']['vllm']}" in images


def test_both_schemas_offer_exactly_the_contracts_lora_ranks() -> None:
    chart_enums = enums_of(CHART_SCHEMA, "maxLoraRank")
    spec_enums = enums_of(SPEC, "maxLoraRank")
    assert chart_enums and spec_enums
    for enum in chart_enums + spec_enums:
        assert enum == CONTRACT["vllm"]["loraRanks"]


def test_both_schemas_offer_exactly_the_contracts_gate_metrics() -> None:
    from generator.core.contract import (
        GATE_AGAINST_CHANCE,
        GATE_GENERATION_METRICS,
        GATE_LIKELIHOOD_METRICS,
        GATE_LOWER_IS_BETTER,
    )

    metrics = [*GATE_GENERATION_METRICS, *GATE_LIKELIHOOD_METRICS]
    enums = enums_of(CHART_SCHEMA, "metric") + enums_of(SPEC, "metric")
    assert len(enums) == 2 and all(enum == metrics for enum in enums)
    assert set(GATE_LOWER_IS_BETTER) | set(GATE_AGAINST_CHANCE) <= set(GATE_LIKELIHOOD_METRICS)


def test_the_spec_schemas_default_images_are_the_contracts_versions() -> None:
    images = SPEC["properties"]["images"]["properties"]
    assert images["llamafactory"]["default"] == f"hiyouga/llamafactory:{CONTRACT['versions']['llamafactory']}"
    assert images["vllm"]["default"] == f"vllm/vllm-openai:v{CONTRACT['versions']['vllm']}"


def test_the_pinned_llamafactory_package_and_its_snapshot_are_the_contracts_version() -> None:
    version = CONTRACT["versions"]["llamafactory"]
    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(rf'"llamafactory=={re.escape(version)}"', pyproject)
    assert lfinfo.snapshot_path(version).is_file()
    assert lfinfo.info().version == version
