"""Golden cases: every folder under tests/cases/valid and tests/cases/invalid is a test.

valid/<name>/experiment.yaml renders to the values files beside it (one per enabled component: webui, train,
merge, eval, vllm, adapter).
invalid/<name>/experiment.yaml fails with exactly the problems in expected.txt (JSON path and message), and
`lfk render` on it writes nothing. `pytest --update-golden` rewrites the expected files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from generator.cli import cli
from generator.core.problems import errors
from generator.core.render import render
from generator.core.rules import validate
from generator.core.spec import load_spec
from generator.errors import SpecError

CASES = Path(__file__).resolve().parent.parent / "cases"
VALID = sorted(p.name for p in (CASES / "valid").iterdir() if p.is_dir())
INVALID = sorted(p.name for p in (CASES / "invalid").iterdir() if p.is_dir())


def problem_lines(spec_path: Path) -> list[str]:
    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        problems = exc.problems
    else:
        problems = validate(spec)
    return [p.format("experiment.yaml") for p in problems]


@pytest.mark.parametrize("name", VALID)
def test_valid_case_renders_its_golden_values(name: str, update_golden: bool) -> None:
    folder = CASES / "valid" / name
    spec = load_spec(folder / "experiment.yaml")
    assert errors(validate(spec)) == []
    results = render(spec, folder)
    for r in results:  # Helm reads the text; the chart's schema was checked on the data
        assert yaml.safe_load(r.text) == r.values, r.component
    rendered = {f"{r.component}.yaml": r.text for r in results}
    if update_golden:
        for old in folder.glob("*.yaml"):
            if old.name != "experiment.yaml":
                old.unlink()
        for file_name, text in rendered.items():
            (folder / file_name).write_text(text, encoding="utf-8")
    expected = {
        p.name: p.read_text(encoding="utf-8") for p in folder.glob("*.yaml") if p.name != "experiment.yaml"
    }
    assert rendered == expected


@pytest.mark.parametrize("name", INVALID)
def test_invalid_case_reports_expected_problems(name: str, update_golden: bool) -> None:
    folder = CASES / "invalid" / name
    lines = problem_lines(folder / "experiment.yaml")
    if update_golden:
        (folder / "expected.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    expected = (folder / "expected.txt").read_text(encoding="utf-8").splitlines()
    assert lines == expected
    assert any(": warning: " not in line for line in lines), "an invalid case must have an error"
    for line in expected:
        assert "::$" in line, f"every problem names a JSON path: {line}"


@pytest.mark.parametrize("name", INVALID)
def test_invalid_case_writes_nothing(name: str, tmp_path: Path) -> None:
    # The whole tree travels: some rules read the experiments beside this one (a merge over a neighbour's model).
    shutil.copytree(CASES / "invalid", tmp_path / "invalid", ignore=shutil.ignore_patterns("expected.txt"))
    folder = tmp_path / "invalid" / name
    spec = folder / "experiment.yaml"
    old = {"train.yaml": "# committed values, untouched\n"}
    (folder / "train.yaml").write_text(old["train.yaml"])
    result = CliRunner().invoke(cli, ["render", str(spec)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in folder.iterdir()) == ["experiment.yaml", "train.yaml"]
    assert (folder / "train.yaml").read_text() == old["train.yaml"]
    for line in (CASES / "invalid" / name / "expected.txt").read_text().splitlines():
        assert line.split("::", 1)[1] in result.output
