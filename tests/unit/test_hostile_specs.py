"""Every string and number of the spec, set in turn to something hostile, is refused or lands harmlessly.

The locations come from schemas/experiment.schema.json itself ($ref, anyOf/oneOf/allOf followed; map keys
included), so a field added to the schema is covered without touching this file. Each location is tried on
the richest valid spec (tests/cases/valid, values/) that has it; when no spec has it, it is added to the one
that has most of its parents, with a value taken from another spec or the schema's default, and that clean
spec must validate and render first (the baseline).

Each case runs the real command line in-process, as a person would: `lfk render FILE --out DIR` (which
runs every check of `lfk validate` first) and, when render refuses, `lfk validate FILE`, on a file written
with a safe YAML dumper so the hostile value is what gets loaded. A case passes when

- both commands refuse it: exit 1, a problem naming `experiment.yaml::$.<the location>` (or a parent of it),
  no traceback (a spec that validates must render); or
- render succeeds and the values files parse as YAML; no new key path has a key name the baseline's files
  never use (injected YAML; list indices collapsed, YAML strings descended into); the hostile string is
  nowhere but a whole scalar (never inside a script, a command line or a longer string); and no number
  that a manifest cannot hold (NaN, infinity, beyond 64 bits) is rendered;

and it takes less than a few seconds (a hard deadline of 10 s per case).

The 100 000-character variant runs on every string location: the whole module takes well under a minute.
A table of every offending case is printed at the end of the module.
"""

from __future__ import annotations

import collections
import copy
import math
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from generator.cli import cli
from generator.core.problems import json_path
from tests.support import hostile

REPO = Path(__file__).resolve().parents[2]
SCHEMA = yaml.safe_load((REPO / "schemas" / "experiment.schema.json").read_text(encoding="utf-8"))
SPECS = sorted((REPO / "tests" / "cases" / "valid").glob("*/experiment.yaml")) + sorted(
    (REPO / "values").glob("*/experiment.yaml")
)
LOCATIONS = hostile.locations(SCHEMA)
# libyaml when PyYAML has it: the 100 000-character strings are slow to write in pure Python
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DEADLINE_S = 10  # the hard limit of one case (validate + render)
SLOW_S = 3.0  # a case slower than this is an offence: a spec must be refused or rendered at once

# a new entry of a map, for a map key under test: the key a clean spec would use, and its value
NEW_ENTRY: dict[tuple[str, ...], tuple[str, Any]] = {
    ("data", "register"): ("extra_set", {"file": "extra_set.json", "format": "alpaca"}),
    ("resources", "nodeSelector"): ("pool", "gpu"),
    ("llamafactoryArgs",): ("optim", "adamw_torch"),
}
# clean values for locations no spec sets and the schema gives no default for
FALLBACK: dict[tuple[str, ...], Any] = {
    ("merge", "exportDir"): "/storage/models/merged/exported",
    ("resources", "gpuResource"): "nvidia.com/gpu",
    ("distributed", "nccl", "socketIfname"): "eth0",
    ("tracking", "mlflow", "credentialsSecret", "usernameKey"): "username",
    ("tracking", "mlflow", "credentialsSecret", "passwordKey"): "password",
    ("resources", "tolerations", hostile.ITEM, "value"): "yes",
    # counts, not the dataset column of the same name
    ("serve", "mediaPerPrompt", "images"): 1,
    ("serve", "mediaPerPrompt", "videos"): 0,
    ("serve", "mediaPerPrompt", "audios"): 0,
}


class CaseTimeout(BaseException):
    """Raised by the alarm: a BaseException, so that click's runner does not catch it."""


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise CaseTimeout


@dataclass
class Run:
    validate: Result | None
    render: Result | None
    seconds: float
    docs: dict[str, Any] | None  # the rendered values files, parsed; None when render failed
    timed_out: bool = False
    unparsable: str = ""


@dataclass
class Baseline:
    folder: str  # the spec's folder name (a shared guest finds its host beside it)
    spec: dict[str, Any]
    docs: dict[str, Any]


class Workspace:
    """A copy of every valid spec, each in a folder of its own name, and the pipeline run on one of them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runner = CliRunner()
        self.originals: dict[str, str] = {}
        self.raw: dict[str, dict[str, Any]] = {}
        for spec in SPECS:
            folder = root / spec.parent.name
            folder.mkdir()
            text = spec.read_text(encoding="utf-8")
            (folder / "experiment.yaml").write_text(text, encoding="utf-8")
            self.originals[spec.parent.name] = text
            self.raw[spec.parent.name] = yaml.safe_load(text)
        self.examples = hostile.examples(self.raw.values())
        self.baselines: dict[hostile.Location, Baseline | str] = {}
        self.clean_runs: dict[tuple[str, str], Run] = {}  # many locations share a clean spec

    def run(self, folder: str, spec: dict[str, Any]) -> Run:
        path = self.root / folder / "experiment.yaml"
        out = self.root / "_out"
        shutil.rmtree(out, ignore_errors=True)
        text = yaml.dump(spec, Dumper=DUMPER, sort_keys=False)
        if (folder, text) in self.clean_runs:
            return self.clean_runs[(folder, text)]
        path.write_text(text, encoding="utf-8")
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        start = time.monotonic()
        validated = rendered = None
        try:
            signal.alarm(DEADLINE_S)
            rendered = self.runner.invoke(cli, ["render", str(path), "--out", str(out)])
            # render runs validate's checks first: validate itself is asked when render refuses, to tell
            # "invalid" from "valid but cannot be rendered"
            if rendered.exit_code != 0:
                validated = self.runner.invoke(cli, ["validate", str(path)])
        except CaseTimeout:
            return Run(validated, rendered, time.monotonic() - start, None, timed_out=True)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
            path.write_text(self.originals[folder], encoding="utf-8")
        seconds = time.monotonic() - start
        if rendered.exit_code != 0:
            return Run(validated, rendered, seconds, None)
        docs: dict[str, Any] = {}
        for file in sorted(out.glob("*.yaml")):
            try:
                docs[file.name] = yaml.load(file.read_text(encoding="utf-8"), Loader=LOADER)  # noqa: S506
            except yaml.YAMLError as exc:
                return Run(
                    validated, rendered, seconds, None, unparsable=f"{file.name}: {exc}".splitlines()[0]
                )
        return Run(validated, rendered, seconds, docs)

    # -- the clean spec of a location ---------------------------------------------------------------------------

    def example(self, parts: tuple[str, ...]) -> Any:
        """A clean value for a location: an object with its required fields only, else what a spec sets
        there, else the schema's default, else a plain value that fits the schema."""
        node = hostile.schema_at(SCHEMA, parts)
        if node.get("type") == "object" or "properties" in node:
            return {name: self.example((*parts, name)) for name in node.get("required", [])}
        if parts in self.examples:
            return self.examples[parts]
        if parts in FALLBACK:
            return FALLBACK[parts]
        if "default" in node:
            return node["default"]
        if node.get("enum"):
            return node["enum"][0]
        # the same name elsewhere (resources.shmSize for merge.resources.shmSize)
        for other, value in self.examples.items():
            if other and other[-1] == parts[-1] and not isinstance(value, dict | list):
                return value
        types = node.get("type")
        if types == "string":
            return hostile.plain_string(node, parts[-1])
        if types in ("number", "integer"):
            return max(node.get("minimum", 1), node.get("exclusiveMinimum", 0) + 1)
        return None

    def candidates(self, location: hostile.Location) -> list[str]:
        """Specs by how much of the location they have, then by how much they set: the richest first."""

        def richness(folder: str) -> int:
            return len(list(hostile.scalars(self.raw[folder])))

        depth = {f: hostile.present(self.raw[f], location.parts) for f in self.raw}
        return sorted(self.raw, key=lambda f: (-depth[f], -richness(f), f))

    def clean_spec(self, folder: str, location: hostile.Location) -> tuple[dict[str, Any], Any, Any]:
        """The clean spec of a location on one spec, the clean value there, and the new key (key locations)."""
        raw = self.raw[folder]
        if location.kind == "key":
            key, entry = NEW_ENTRY.get(
                location.parts, ("extra", self.example((*location.parts, hostile.KEY)))
            )
            existing = (
                _get(raw, location.parts)
                if hostile.present(raw, location.parts) == len(location.parts)
                else {}
            )
            spec, _ = self.place(raw, location.parts, {**(existing or {}), key: copy.deepcopy(entry)}, key)
            return spec, key, entry
        have = hostile.present(raw, location.parts) == len(location.parts)
        key = NEW_ENTRY.get(location.parts[:-1], ("extra", None))[0]
        value = _get(raw, location.parts) if have else self.example(location.parts)
        if value is None or isinstance(value, dict | list):
            value = self.example(location.parts)
        spec, _ = self.place(raw, location.parts, value, key)
        return spec, value, None

    def place(
        self, raw: dict[str, Any], parts: tuple[str, ...], value: Any, key: str
    ) -> tuple[dict[str, Any], Any]:
        return hostile.place(raw, parts, value, self.example, key)

    def baseline(self, location: hostile.Location) -> Baseline | str:
        """The clean spec of the location that validates and renders; a message when none does."""
        if location not in self.baselines:
            tried = []
            for folder in self.candidates(location):
                spec, _, _ = self.clean_spec(folder, location)
                run = self.run(folder, spec)
                if run.docs is not None:
                    self.baselines[location] = Baseline(folder, spec, run.docs)
                    self.clean_runs[(folder, yaml.dump(spec, Dumper=DUMPER, sort_keys=False))] = run
                    break
                out = [
                    line
                    for line in (run.render.output if run.render else "").splitlines()
                    if "warning: " not in line
                ]
                tried.append(f"{folder}: {out[0] if out else 'timed out'}")
            else:
                self.baselines[location] = "no clean spec renders: " + "; ".join(tried)
        return self.baselines[location]


def _get(doc: Any, parts: tuple[str, ...]) -> Any:
    for part in parts:
        if part == hostile.ITEM:
            doc = doc[0]
        elif part == hostile.KEY:
            doc = next(iter(doc.values()))
        else:
            doc = doc[part]
    return doc


def _concrete(doc: Any, parts: tuple[str, ...]) -> list[str | int]:
    """The location's path in a spec that has it: the first item of a list, the first key of a map."""
    out: list[str | int] = []
    part_: str | int
    for part in parts:
        if part == hostile.ITEM:
            doc, part_ = doc[0], 0
        elif part == hostile.KEY:
            part_ = next(iter(doc))
            doc = doc[part_]
        else:
            doc, part_ = doc[part], part
        out.append(part_)
    return out


def refused_at(output: str, path: list[Any]) -> bool:
    """Whether the output names an error at the path or at one of its parents (not at the root alone)."""
    for length in range(len(path), 0, -1):
        marker = f"experiment.yaml::{json_path(path[:length])}: "
        for line in output.splitlines():
            at = line.find(marker)
            if at >= 0 and not line[at + len(marker) :].startswith("warning: "):
                return True
    return False


def _first_error(output: str) -> str:
    """The first error of an output, from its JSON path on (the temporary file's path left out)."""
    lines = [line for line in output.splitlines() if line.strip() and ": warning: " not in line]
    if not lines:
        return "(no output)"
    return hostile.describe_value(lines[0].rpartition("experiment.yaml::")[2], 150)


def judge(run: Run, path: list[Any], baseline: Baseline, value: Any, clean_value: Any) -> list[str]:
    """What is wrong with one case; empty when it was refused cleanly or rendered harmlessly."""
    if run.timed_out:
        return [f"no answer within {DEADLINE_S} s"]
    assert run.render is not None
    found = []
    for name, result in (("validate", run.validate), ("render", run.render)):
        if result is None:
            continue
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            found.append(
                f"{name}: {type(result.exception).__name__}: {hostile.describe_value(str(result.exception), 100)}"
            )
        elif "Traceback" in result.output:
            found.append(f"{name}: a traceback in the output")
        elif result.exit_code not in (0, 1):
            found.append(f"{name}: exit {result.exit_code}")
    if run.seconds > SLOW_S:
        found.append(f"took {run.seconds:.1f} s")
    if found:
        return found
    r = run.render.exit_code
    v = run.validate.exit_code if run.validate is not None else 0
    if v == 0 and r != 0:
        return [f"validates, but render fails: {_first_error(run.render.output)}"]
    if v == 1 and run.validate is not None:
        if not refused_at(run.validate.output, path):
            return [f"refused, but not at {json_path(path)}: {_first_error(run.validate.output)}"]
        return []
    if run.unparsable:
        return [f"rendered YAML does not parse: {run.unparsable}"]
    assert run.docs is not None
    return hostile.offences(baseline.docs, run.docs, value, clean_value)


CASES = [
    pytest.param(location, variant, id=f"{location.label[2:]}:{variant}")
    for location in LOCATIONS
    for variant in (hostile.HOSTILE_NUMBERS if location.kind == "number" else hostile.HOSTILE_STRINGS)
]

OFFENDING: list[tuple[str, str, str]] = []
OUTCOMES: collections.Counter[str] = collections.Counter()  # refused / rendered / offending


@pytest.fixture(scope="module")
def workspace(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Workspace]:
    yield Workspace(tmp_path_factory.mktemp("hostile-specs"))
    hostile.report(request.config, "hostile specs", OFFENDING, OUTCOMES)


def untrainable_stage(location: hostile.Location) -> bool:
    """The location is a setting of a stage that lfk validate refuses for the deployed LLaMA-Factory."""
    from generator.core.contract import LLAMAFACTORY_VERSION
    from generator.core.rules.stages import UNTRAINABLE

    parts = location.parts
    return len(parts) > 2 and parts[0] == "stage" and parts[1] in UNTRAINABLE.get(LLAMAFACTORY_VERSION, {})


@pytest.mark.parametrize(("location", "variant"), CASES)
def test_hostile_value_is_refused_or_harmless(
    workspace: Workspace, location: hostile.Location, variant: str
) -> None:
    baseline = workspace.baseline(location)
    value = (hostile.HOSTILE_NUMBERS if location.kind == "number" else hostile.HOSTILE_STRINGS)[variant]
    if isinstance(baseline, str) and untrainable_stage(location):
        # no spec of a stage the deployed LLaMA-Factory cannot train validates: the value never renders
        folder = workspace.candidates(location)[0]
        spec, _ = workspace.place(workspace.clean_spec(folder, location)[0], location.parts, value, "extra")
        run = workspace.run(folder, spec)
        assert run.render is not None and run.render.exit_code == 1 and run.validate is not None
        assert run.validate.exit_code == 1 and "Traceback" not in run.render.output + run.validate.output
        OUTCOMES["refused"] += 1
        return
    if isinstance(baseline, str):
        pytest.fail(f"{location.label}: {baseline}")
    if location.kind == "key":
        _, clean_key, entry = workspace.clean_spec(baseline.folder, location)
        spec = copy.deepcopy(baseline.spec)
        mapping = _get(spec, location.parts)
        del mapping[clean_key]
        mapping[value] = copy.deepcopy(entry)
        path: list[Any] = [*_concrete(spec, location.parts), value]
        clean_value: Any = clean_key
    else:
        clean_value = _get(baseline.spec, location.parts)
        spec, _ = workspace.place(baseline.spec, location.parts, value, "extra")
        path = _concrete(spec, location.parts)
    run = workspace.run(baseline.folder, spec)
    found = judge(run, path, baseline, value, clean_value)
    ended = "refused" if run.render is None or run.render.exit_code else "rendered"
    OUTCOMES[f"{ended}, offending" if found else ended] += 1
    rows = [(location.label, variant, f"{what} [{baseline.folder}]") for what in found]
    OFFENDING.extend(rows)
    assert not found, f"hostile value {hostile.describe_value(value)}:\n" + hostile.table(rows)


def test_the_comparison_sees_an_injected_key_a_script_and_a_bad_number() -> None:
    """The judge of every case above can fail: values pasted into YAML, into a script, and NaN are caught,
    while the same value as a whole scalar passes."""
    value = hostile.HOSTILE_STRINGS["newline-yaml"]
    clean = {"a.yaml": {"pod": {"name": "ok", "args": ["-c", "run ok"], "lr": 0.1}}}
    whole = {"a.yaml": {"pod": {"name": value, "args": ["-c", "run ok"], "lr": 0.1}}}
    injected = {"a.yaml": {"pod": {"name": "x", "hostPID": True, "args": ["-c", "run ok"], "lr": 0.1}}}
    script = {"a.yaml": {"pod": {"name": "ok", "args": ["-c", f"run {value}"], "lr": 0.1}}}
    nan = {"a.yaml": {"pod": {"name": "ok", "args": ["-c", "run ok"], "lr": float("nan")}}}
    assert hostile.offences(clean, whole, value, "ok") == []
    assert any("new keys" in o and "hostPID" in o for o in hostile.offences(clean, injected, value, "ok"))
    assert any(
        o.startswith("a.yaml: script at pod.args[1]") for o in hostile.offences(clean, script, value, "ok")
    )
    assert any("number nan" in o for o in hostile.offences(clean, nan, math.nan, 0.1))


def test_every_string_and_number_of_the_schema_is_a_location() -> None:
    labels = {(loc.label, loc.kind) for loc in LOCATIONS}
    assert ("$.model.hub.revision", "string") in labels
    assert ("$.data.register.<key>.columns.prompt", "string") in labels
    assert ("$.resources.nodeSelector.<name>", "key") in labels
    assert ("$.training.learningRate", "number") in labels
    assert ("$.storage.size", "string") in labels and ("$.storage.size", "number") in labels
