"""The chart against its contract (files/contract.json): every example's and every ci/ scenario's manifests,
rendered by the real helm, use the contract's exit codes, label, storage root and ports, and every pod that
runs a script gets all of files/ (contract.json included) from a ConfigMap, never from its environment."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CHART, Helm

ROOT = CHART.parents[1]
CONTRACT = json.loads((CHART / "files" / "contract.json").read_text(encoding="utf-8"))
VALUES_FILES = sorted(p for p in ROOT.glob("values/*/*.yaml") if p.name != "experiment.yaml")
SCENARIOS = sorted((CHART / "ci").glob("*.yaml"))
# what .helmignore keeps out of the packaged chart (Python's caches of the scripts)
IGNORED_SUFFIXES = {".pyc", ".tmp"}


def chart_files(chart: Path = CHART) -> dict[str, str]:
    """files/* as the chart ships them: name -> text."""
    return {
        p.name: p.read_text(encoding="utf-8")
        for p in sorted((chart / "files").iterdir())
        if p.is_file() and p.suffix not in IGNORED_SUFFIXES and p.name != ".DS_Store"
    }


def codes(*names: str, contract: dict[str, Any] = CONTRACT) -> set[int]:
    return {contract["exitCodes"][n] for n in names}


def fail_at_once(contract: dict[str, Any] = CONTRACT) -> set[int]:
    return codes(*contract["failAtOnce"], contract=contract)


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) of every mapping below node."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def pod_specs(node: Any) -> list[dict[str, Any]]:
    """Every pod spec below node (a mapping with containers), whatever the workload's kind."""
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            found.append(node)
        for value in node.values():
            found += pod_specs(value)
    elif isinstance(node, list):
        for value in node:
            found += pod_specs(value)
    return found


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def render(helm: Helm, values_file: Path, chart: Path = CHART) -> list[dict[str, Any]]:
    out = helm.run(
        "template", "contract", str(chart), "--namespace", "ns", "--values", str(values_file)
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module", params=VALUES_FILES + SCENARIOS, ids=lambda p: f"{p.parent.name}/{p.name}")
def manifests(request: pytest.FixtureRequest, helm3: Helm) -> list[dict[str, Any]]:
    return render(helm3, request.param)


# ---------------------------------------------------------------------------------------------- the checks
def exit_code_problems(docs: list[dict[str, Any]], contract: dict[str, Any] = CONTRACT) -> list[str]:
    """podFailurePolicy rules that fail a Job at once on codes other than the contract's for that container:
    failAtOnce, plus gateFailed for the gate; a configuration error only for the download and the adapter."""
    expected = {
        "download": codes("configError", contract=contract),
        "adapter": codes("configError", contract=contract),
        "eval": fail_at_once(contract) | codes("gateFailed", contract=contract),
    }
    problems = []
    for key, policy in walk(docs):
        if key != "podFailurePolicy":
            continue
        for rule in policy["rules"]:
            on = rule.get("onExitCodes")
            if rule["action"] != "FailJob" or not on or on["operator"] != "In":
                continue
            want = expected.get(on["containerName"], fail_at_once(contract))
            if set(on["values"]) != want:
                problems.append(f"{on['containerName']}: fails at once on {on['values']}, not {sorted(want)}")
    return problems


def label_problems(docs: list[dict[str, Any]], contract: dict[str, Any] = CONTRACT) -> list[str]:
    """Objects without the contract's part-of label, and selectors or labels with another value."""
    part_of = contract["labels"]["partOf"]
    problems = [
        f"{d['kind']} {d['metadata']['name']}: no part-of label {part_of}"
        for d in docs
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") != part_of
    ]
    problems += [
        f"a part-of label {v!r}" for k, v in walk(docs) if k == "app.kubernetes.io/part-of" and v != part_of
    ]
    return problems


def storage_problems(docs: list[dict[str, Any]], contract: dict[str, Any] = CONTRACT) -> list[str]:
    """Mounts of the storage volume elsewhere than the contract's root (a subPath lives below it)."""
    root = contract["storage"]["root"]
    problems = []
    for pod in pod_specs(docs):
        for container in containers(pod):
            for mount in container.get("volumeMounts", []):
                if mount["name"] != "storage":
                    continue
                path = mount["mountPath"]
                if path != root and not (mount.get("subPath") and path.startswith(root + "/")):
                    problems.append(f"{container['name']}: storage at {path}, not {root}")
    return problems


def script_problems(docs: list[dict[str, Any]], files: dict[str, str]) -> list[str]:
    """ConfigMaps that lack a file of files/ (or hold another text), scripts volumes that do not bring every
    file from a ConfigMap of the release, and containers that write a script out of their environment."""
    problems = []
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    for name, cm in config_maps.items():
        data = cm.get("data", {})
        problems += [f"ConfigMap {name}: no {f}" for f in files if f not in data]
        problems += [
            f"ConfigMap {name}: {f} differs from files/{f}"
            for f, text in files.items()
            if f in data and data[f].rstrip("\n") != text.rstrip("\n")
        ]
        if "contract.json" in data and json.loads(data["contract.json"]) != json.loads(
            files["contract.json"]
        ):
            problems.append(f"ConfigMap {name}: another contract")
    for pod in pod_specs(docs):
        for volume in pod.get("volumes", []):
            if volume["name"] != "scripts":
                continue
            source = volume["configMap"]
            keys = {item["key"] for item in source.get("items", [])} or set(files)
            if source["name"] not in config_maps:
                problems.append(f"scripts volume: ConfigMap {source['name']} is not rendered")
            if keys != set(files):
                problems.append(
                    f"scripts volume of {source['name']}: {sorted(keys)}, not every file of files/"
                )
        for container in containers(pod):
            argv = [*container.get("command", []), *container.get("args", [])]
            if any("printf" in str(a) for a in argv):
                problems.append(f"{container['name']}: printf in its command {argv}")
            for env in container.get("env", []):
                if any(env.get("value") and env["value"].strip() == t.strip() for t in files.values()):
                    problems.append(f"{container['name']}: a script in its environment ({env['name']})")
    return problems


# ---------------------------------------------------------------------------------------------- the tests
def test_jobs_fail_at_once_on_the_contracts_exit_codes(manifests: list[dict[str, Any]]) -> None:
    assert not exit_code_problems(manifests)


def test_every_object_is_labelled_part_of_the_contracts_project(manifests: list[dict[str, Any]]) -> None:
    assert not label_problems(manifests)


def test_the_storage_is_mounted_at_the_contracts_root(manifests: list[dict[str, Any]]) -> None:
    assert not storage_problems(manifests)


def test_every_scripts_config_map_carries_every_file_and_the_contract(
    manifests: list[dict[str, Any]],
) -> None:
    assert not script_problems(manifests, chart_files())


def test_scripts_start_from_the_mounted_folder(manifests: list[dict[str, Any]]) -> None:
    """Every container that runs a script of files/ runs it from /scripts, which a scripts volume mounts."""
    files = chart_files()
    for pod in pod_specs(manifests):
        mounted = {v["name"] for v in pod.get("volumes", []) if "configMap" in v}
        for container in containers(pod):
            argv = [str(a) for a in [*container.get("command", []), *container.get("args", [])]]
            named = [a for a in argv if a.removeprefix("/scripts/") in files]
            if named:
                assert "scripts" in mounted, f"{container['name']} runs {named} without the scripts volume"
                assert {"name": "scripts", "mountPath": "/scripts", "readOnly": True} in container[
                    "volumeMounts"
                ]


def test_the_values_default_ports_are_the_contracts() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    ports = CONTRACT["ports"]
    assert values["webui"]["port"] == values["webui"]["service"]["port"] == ports["webui"]
    assert values["vllm"]["port"] == values["vllm"]["service"]["port"] == ports["vllm"]


def test_every_component_of_the_contract_is_a_section_of_the_values() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    for component in CONTRACT["components"]:
        assert "enabled" in values[component], component


def test_the_templates_follow_a_changed_contract(helm3: Helm, tmp_path: Path) -> None:
    """The templates read the facts from contract.json rather than holding copies: a chart whose contract
    says otherwise renders otherwise, and the checks above find the old values wrong."""
    chart = tmp_path / "llama-factory"
    shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    changed = json.loads((chart / "files" / "contract.json").read_text(encoding="utf-8"))
    changed["labels"]["partOf"] = "another-project"
    changed["storage"]["root"] = "/mnt/shared"
    changed["exitCodes"]["configError"] = 13
    changed["failAtOnce"] = ["configError", "gpuOutOfMemory"]
    (chart / "files" / "contract.json").write_text(json.dumps(changed, indent=2) + "\n", encoding="utf-8")
    docs = render(helm3, CHART / "ci" / "all-components-values.yaml", chart)

    assert not exit_code_problems(docs, changed)
    assert not label_problems(docs, changed)
    assert not storage_problems(docs, changed)
    assert not script_problems(docs, chart_files(chart))
    # and the checks can fail: the same manifests against the chart's own contract
    assert exit_code_problems(docs)
    assert label_problems(docs)
    assert storage_problems(docs)
    assert script_problems(docs, chart_files())  # contract.json differs


def test_a_script_written_out_of_the_environment_is_found() -> None:
    """The check itself, on a container of the kind the hook Jobs had before."""
    files = {"download.py": "print('hello')\n", "contract.json": "{}"}
    pod = {
        "containers": [
            {
                "name": "download",
                "command": ["/bin/bash", "-c", "printf '%s' \"$DOWNLOAD_SCRIPT\" > /tmp/download.py"],
                "env": [{"name": "DOWNLOAD_SCRIPT", "value": "print('hello')\n"}],
            }
        ],
        "volumes": [{"name": "scripts", "configMap": {"name": "missing", "items": [{"key": "download.py"}]}}],
    }
    found = "\n".join(script_problems([{"kind": "Job", "metadata": {"name": "j"}, "spec": pod}], files))
    for expected in ("printf", "a script in its environment", "is not rendered", "not every file"):
        assert expected in found, found
