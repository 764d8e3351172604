"""The per-user cache: the compiled validators that answer "valid?" fast agree with jsonschema on every spec
and values file we have; a cached validator is reused only when its digest matches, and a damaged one is
never executed."""

from __future__ import annotations

import marshal
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from generator.core import cache
from generator.core.render import chart_values_validator
from generator.core.spec import _validator, load_yaml_file
from generator.errors import SpecError
from generator.project import CHART_SCHEMA, SPEC_SCHEMA

ROOT = Path(__file__).resolve().parents[2]


def parses(path: Path) -> bool:
    try:
        load_yaml_file(path)
    except SpecError:  # not YAML, not UTF-8, or refused by the loader's bounds (an alias bomb)
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
        stored = list((tmp_path / "llamafactory-k8s" / "validators").glob("experiment_schema_*.marshal"))
        assert stored == [cache.validator_file(SPEC_SCHEMA)[0]]
        assert stored[0].with_suffix(".sha256").is_file()
    finally:
        cache.fast_validator.cache_clear()


SMALL_SCHEMA = '{"type": "object", "required": ["name"]}'


@pytest.fixture
def cold_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty cache folder and a schema of its own (the project's schema is not what is tested here)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    schema = tmp_path / "small.schema.json"
    schema.write_text(SMALL_SCHEMA)
    cache.fast_validator.cache_clear()
    yield schema
    cache.fast_validator.cache_clear()


def code_running(marker: Path, then: str = "") -> bytes:
    """Compiled code, in the stored format, that leaves a marker file when executed."""
    return marshal.dumps(compile(f"open({str(marker)!r}, 'w').close()\n{then}", "x", "exec"))


def test_the_compiled_validator_is_reused_when_its_digest_matches(cold_cache: Path) -> None:
    cache.fast_validator(cold_cache)
    stored, key = cache.validator_file(cold_cache)
    marker = cold_cache.parent / "reused"
    # other code with its digest stored beside it is what reusing the cache looks like
    edited = code_running(marker, "def validate(data): return data")
    stored.write_bytes(edited)
    stored.with_suffix(".sha256").write_text(cache._digest(key, edited) + "\n")
    cache.fast_validator.cache_clear()
    cache.fast_validator(cold_cache)
    assert marker.exists()  # read back, not generated and compiled again


def test_a_changed_schema_is_never_served_an_older_validator(cold_cache: Path) -> None:
    before, _ = cache.validator_file(cold_cache)
    cache.fast_validator(cold_cache)
    cold_cache.write_text('{"type": "object", "required": ["other"]}')
    cache.fast_validator.cache_clear()
    assert cache.validator_file(cold_cache)[0] != before
    assert cache.is_valid(cold_cache, {"name": "x"}) is False
    assert cache.is_valid(cold_cache, {"other": "x"}) is True


@pytest.mark.parametrize(
    "damage", ["tampered", "truncated", "digest missing", "writable by others", "not code"]
)
def test_a_damaged_compiled_validator_is_never_loaded_and_is_rebuilt(cold_cache: Path, damage: str) -> None:
    cache.fast_validator(cold_cache)
    stored, key = cache.validator_file(cold_cache)
    original = stored.read_bytes()
    marker = cold_cache.parent / "executed"
    tampered = code_running(marker)
    digest = stored.with_suffix(".sha256")
    if damage == "tampered":
        stored.write_bytes(tampered)
    elif damage == "truncated":
        stored.write_bytes(original[: len(original) // 2])
    elif damage == "digest missing":
        stored.write_bytes(tampered)
        digest.unlink()
    elif damage == "writable by others":  # the right digest, but anyone could have replaced the file
        stored.write_bytes(tampered)
        digest.write_text(cache._digest(key, tampered) + "\n")
        stored.chmod(0o666)
    else:  # the right digest over bytes that are not compiled code
        stored.write_bytes(b"not marshal data")
        digest.write_text(cache._digest(key, b"not marshal data") + "\n")
    cache.fast_validator.cache_clear()
    assert cache.is_valid(cold_cache, {"name": "x"}) is True  # still a working validator
    assert cache.is_valid(cold_cache, {}) is False
    assert not marker.exists()
    assert stored.read_bytes() == original  # rebuilt in place


def test_the_validators_patterns_are_compiled_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    schema = tmp_path / "pattern.schema.json"
    schema.write_text('{"type": "object", "properties": {"name": {"type": "string", "pattern": "^[a-z]+$"}}}')
    cache.fast_validator.cache_clear()
    try:
        patterns = cache.fast_validator(schema).__globals__["REGEX_PATTERNS"]
        assert patterns and all(isinstance(p, cache.LazyPattern) for p in patterns.values())
        assert cache.is_valid(schema, {"name": "abc"}) is True
        assert cache.is_valid(schema, {"name": "ABC"}) is False
        assert cache.is_valid(schema, {"name": "abc\n"}) is False  # fastjsonschema's `$` is the end of text
    finally:
        cache.fast_validator.cache_clear()
