"""The compiled validators that answer "valid?" fast must agree with jsonschema on every spec we have."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from generator.core import cache
from generator.core.render import chart_values_validator
from generator.core.spec import _validator
from generator.project import CHART_SCHEMA, SPEC_SCHEMA

ROOT = Path(__file__).resolve().parents[2]


def parses(path: Path) -> bool:
    try:
        yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return False
    return True


# specs that are YAML at all (the validators only ever see parsed documents)
SPECS = [
    p
    for p in sorted(ROOT.glob("tests/cases/*/*/experiment.yaml"))
    + sorted(ROOT.glob("values/*/experiment.yaml"))
    if parses(p)
]
VALUES = sorted(p for p in ROOT.glob("values/*/*.yaml") if p.name != "experiment.yaml") + sorted(
    p for p in ROOT.glob("tests/cases/valid/*/*.yaml") if p.name != "experiment.yaml"
)


def documents(path: Path) -> object:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(ROOT)))
def test_fast_and_full_spec_validators_agree(path: Path) -> None:
    document = documents(path)
    assert cache.is_valid(SPEC_SCHEMA, document) == _validator().is_valid(document)


@pytest.mark.parametrize("path", VALUES, ids=lambda p: str(p.relative_to(ROOT)))
def test_fast_and_full_chart_validators_agree(path: Path) -> None:
    document = documents(path)
    assert cache.is_valid(CHART_SCHEMA, document) is True
    assert chart_values_validator().is_valid(document)
    broken = {**document, "unknownTopLevelKey": 1}  # type: ignore[dict-item]
    assert cache.is_valid(CHART_SCHEMA, broken) is False


def test_a_cold_cache_compiles_and_stores_the_validator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache.fast_validator.cache_clear()
    try:
        assert cache.is_valid(SPEC_SCHEMA, {"name": "x"}) is False
        stored = list((tmp_path / "llamafactory-k8s" / "validators").glob("experiment_schema_*.py"))
        assert len(stored) == 1
    finally:
        cache.fast_validator.cache_clear()
