"""Every string of the committed values files, set in turn to something hostile, is refused by the chart or
lands harmlessly in its manifests. Rendered by the real helm (3).

The locations are the string values the generator writes (values/*/<component>.yaml, experiment.yaml
aside), each tried once, in the first file that has it, and only where values.schema.json takes a string (or
leaves the value free); plus places those files leave empty that a person may fill: pod labels and
annotations, pip packages, a priority class, nodeSelector keys. Each gets the three variants that break most
(a newline followed by a YAML key, a command substitution, a value that reads as a flag), written with a safe
YAML dumper into the values file passed with -f, so no --set parsing gets in the way.

A case passes when helm refuses the values (non-zero exit, the error naming the location, a parent of it
or the value), or when the manifests (per kind/name) are the clean render's but for key paths whose key
names the clean render uses too (another branch of a template, never injected YAML; list indices collapsed,
YAML/JSON strings such as ConfigMap files descended into), and the hostile string appears only as a whole
value (an env var's value, one argv item), never inside a `-c` script, a config file pasted as text or a
longer string. The three variants of a location run at once (about 190 locations, 580 helm runs: about
2 minutes). A table of every offending case is printed at the end of the module.
"""

from __future__ import annotations

import collections
import copy
import itertools
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import hostile

from .conftest import CHART, Helm

ROOT = CHART.parents[1]
CHART_SCHEMA = yaml.safe_load((CHART / "values.schema.json").read_text(encoding="utf-8"))
VALUES_FILES = sorted(p for p in (ROOT / "values").glob("*/*.yaml") if p.name != "experiment.yaml")
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# values the committed files leave empty, with a clean value: (file, path, clean value)
ADDED: list[tuple[str, tuple[str, ...], Any]] = [
    (f"llama31-qa/{c}.yaml", (c, field), value)
    for c in ("train", "vllm", "webui", "merge")
    for field, value in (("podLabels", {"team": "a"}), ("podAnnotations", {"owner": "a"}))
] + [
    ("llama31-qa/train.yaml", ("train", "pipPackages"), ["mlflow==2.16.0"]),
    ("tiny-cpu/eval.yaml", ("eval", "pipPackages"), ["mlflow==2.16.0"]),
    ("llama31-qa/train.yaml", ("train", "priorityClassName"), "training"),
    ("llama31-qa/vllm.yaml", ("vllm", "priorityClassName"), "serving"),
]
# maps whose keys are tried too (their own keys become label, annotation and selector keys)
KEYED = ("nodeSelector", "podLabels", "podAnnotations")
HASH_SUFFIX = re.compile(r"-[0-9a-f]{8}$")


@dataclass(frozen=True)
class Case:
    file: str  # relative to values/
    path: tuple[str | int, ...]  # the concrete place of the value (kind "key": of the map)
    kind: str  # "value" or "key"

    @property
    def label(self) -> str:
        text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.path).lstrip(".")
        return text + ".<key>" if self.kind == "key" else text


def _load(file: str) -> dict[str, Any]:
    """A committed values file with the places it leaves empty filled: ADDED, and every empty string the
    schema lets take a plain value (a set priorityClassName adds a key: the clean render must have it)."""
    data: dict[str, Any] = yaml.load((ROOT / "values" / file).read_text(encoding="utf-8"), Loader=LOADER)  # noqa: S506
    for added_file, path, value in ADDED:
        if added_file == file:
            _set(data, path, copy.deepcopy(value))
    for found, value in list(hostile.scalars(data)):
        if value == "" and "|" not in found and isinstance(found[-1], str):
            node = hostile.schema_at(
                CHART_SCHEMA, tuple(hostile.ITEM if isinstance(p, int) else p for p in found)
            )
            plain = hostile.plain_string(node, found[-1]) if node.get("type") == "string" else None
            if plain is not None:
                _set(data, found, plain)
    return data


def _set(doc: Any, path: tuple[str | int, ...], value: Any) -> None:
    for part in path[:-1]:
        doc = doc[part]
    doc[path[-1]] = value


def _get(doc: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _takes_string(path: tuple[str | int, ...]) -> bool:
    parts = tuple(hostile.ITEM if isinstance(p, int) else p for p in path)
    node = hostile.schema_at(CHART_SCHEMA, parts)
    declared = node.get("type")
    types = set(declared if isinstance(declared, list) else [declared] if declared else [])
    return not types or "string" in types  # free-form (a LLaMA-Factory config) or a string


def _cases() -> list[Case]:
    seen: set[tuple[str | int, ...]] = set()
    cases: list[Case] = []
    for file in VALUES_FILES:
        rel = f"{file.parent.name}/{file.name}"
        data = _load(rel)
        for path, value in hostile.scalars(data):
            if "|" in path or not isinstance(value, str):
                continue
            pattern = tuple(hostile.ITEM if isinstance(p, int) else p for p in path)
            if pattern in seen or not _takes_string(path):
                continue
            seen.add(pattern)
            cases.append(Case(rel, path, "value"))
            if len(path) >= 2 and path[-2] in KEYED and (*pattern[:-1], hostile.KEY) not in seen:
                seen.add((*pattern[:-1], hostile.KEY))
                cases.append(Case(rel, path[:-1], "key"))
    return cases


CASES = _cases()
OFFENDING: list[tuple[str, str, str]] = []
OUTCOMES: collections.Counter[str] = collections.Counter()  # refused / rendered / offending


@dataclass
class Rendered:
    code: int
    stderr: str
    docs: dict[str, Any]


class Renderer:
    """helm template of a values file (release <experiment>-<component>), the clean ones cached."""

    def __init__(self, helm: Helm, root: Path) -> None:
        self.helm, self.root = helm, root
        self.clean: dict[str, Rendered] = {}
        self.counter = itertools.count()  # one file per render: renders run in threads

    def render(self, file: str, values: dict[str, Any]) -> Rendered:
        path = self.root / f"values-{next(self.counter)}.yaml"
        path.write_text(yaml.dump(values, Dumper=DUMPER, sort_keys=False), encoding="utf-8")
        release = f"{file.split('/')[0]}-{Path(file).stem}"[:53]
        args = [str(self.helm.binary), "template", release, str(CHART), "-n", "llm-training", "-f", str(path)]
        result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
        path.unlink()
        docs: dict[str, Any] = {}
        if result.returncode == 0:
            for doc in yaml.load_all(result.stdout, Loader=LOADER):  # noqa: S506
                if doc:
                    name = str((doc.get("metadata") or {}).get("name"))
                    # a Job's name ends in a hash of its pod template, which any value changes
                    docs[f"{doc.get('kind')}/{HASH_SUFFIX.sub('-<hash>', name)}"] = doc
        return Rendered(result.returncode, result.stderr, docs)

    def clean_render(self, file: str) -> Rendered:
        if file not in self.clean:
            self.clean[file] = self.render(file, _load(file))
        return self.clean[file]


@pytest.fixture(scope="module")
def renderer(
    helm3: Helm, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Renderer]:
    yield Renderer(helm3, tmp_path_factory.mktemp("hostile-values"))
    hostile.report(request.config, "hostile chart values", OFFENDING, OUTCOMES)


def refused_at(stderr: str, path: tuple[str | int, ...], value: str) -> bool:
    """Whether helm's error names the location or a parent of it (at least two levels deep), as a JSON
    pointer (the schema's errors) or dotted (the templates' own `fail` messages), or quotes the value."""
    if repr(value) in stderr or f"'{value}'" in stderr or f'"{value}"' in stderr:
        return True
    shortest = min(2, len(path))
    for length in range(len(path), shortest - 1, -1):
        parts = [str(p) for p in path[:length]]
        pointer = "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)
        if f"'{pointer}'" in stderr or f"{pointer}:" in stderr or ".".join(parts) in stderr:
            return True
    return False


def judge(case: Case, clean: Rendered, run: Rendered, value: str, clean_value: Any) -> list[str]:
    if run.code != 0:
        if "panic" in run.stderr or "goroutine" in run.stderr:
            return ["helm crashed: " + hostile.describe_value(run.stderr.strip().splitlines()[0])]
        path = case.path if case.kind == "value" else (*case.path, value)
        if not refused_at(run.stderr, path, value):
            return [f"refused, but not at {case.label}: {hostile.describe_value(run.stderr.strip()[-200:])}"]
        return []
    return hostile.offences(clean.docs, run.docs, value, clean_value)


def _variant_values(data: dict[str, Any], case: Case, value: str) -> tuple[dict[str, Any], Any]:
    """A copy of the values with the hostile value at the case's place, and the clean value it replaces."""
    out = copy.deepcopy(data)
    if case.kind == "key":
        mapping = _get(out, case.path)
        clean_key = next(iter(mapping))
        mapping[value] = mapping.pop(clean_key)
        return out, clean_key
    clean_value = _get(out, case.path)
    _set(out, case.path, value)
    return out, clean_value


@pytest.mark.parametrize("case", CASES, ids=[c.file.replace(".yaml", "") + ":" + c.label for c in CASES])
def test_hostile_value_is_refused_or_harmless(renderer: Renderer, case: Case) -> None:
    clean = renderer.clean_render(case.file)
    assert clean.code == 0, f"the clean values of {case.file} do not render:\n{clean.stderr}"
    data = _load(case.file)
    variants = {name: hostile.HOSTILE_STRINGS[name] for name in hostile.CHART_VARIANTS}
    made = {name: _variant_values(data, case, value) for name, value in variants.items()}
    with ThreadPoolExecutor(len(made)) as pool:
        runs = dict(
            zip(made, pool.map(lambda v: renderer.render(case.file, v[0]), made.values()), strict=True)
        )
    rows = []
    for name, run in runs.items():
        found = judge(case, clean, run, variants[name], made[name][1])
        ended = "refused" if run.code else "rendered"
        OUTCOMES[f"{ended}, offending" if found else ended] += 1
        rows += [(f"{case.file}:{case.label}", name, what) for what in found]
    OFFENDING.extend(rows)
    assert not rows, "\n" + hostile.table(rows)
