"""The per-user cache: the compiled validators that answer "valid?" fast agree with jsonschema on every spec
and values file we have; a cached validator is reused only when its digest matches, and a damaged one (or a
tampered template bytecode) is never executed."""

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
        stored = list((tmp_path / "llamafactory-k8s" / "validators").glob("experiment_schema_*.py"))
        assert len(stored) == 1
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


def stored_code(schema: Path) -> tuple[Path, str]:
    """The cached validator file of the schema and the key it is stored under."""
    [code] = (schema.parent / "cache" / "llamafactory-k8s" / "validators").glob("small_schema_*.py")
    return code, code.stem.rsplit("_", 1)[1]


def test_a_cached_validator_is_reused_when_its_digest_matches(cold_cache: Path) -> None:
    cache.fast_validator(cold_cache)
    code, key = stored_code(cold_cache)
    marker = cold_cache.parent / "reused"
    # the same edit with its digest stored beside it is what reusing the cache looks like
    edited = code.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n"
    code.write_text(edited)
    code.with_suffix(".sha256").write_text(cache._digest(key, edited) + "\n")
    cache.fast_validator.cache_clear()
    cache.fast_validator(cold_cache)
    assert marker.exists()


@pytest.mark.parametrize("damage", ["tampered", "truncated", "digest missing", "writable by others"])
def test_a_damaged_cached_validator_is_never_executed_and_is_rebuilt(cold_cache: Path, damage: str) -> None:
    cache.fast_validator(cold_cache)
    code, key = stored_code(cold_cache)
    original = code.read_text()
    marker = cold_cache.parent / "executed"
    tampered = f"open({str(marker)!r}, 'w').close()\n" + original
    if damage == "tampered":
        code.write_text(tampered)
    elif damage == "truncated":
        code.write_text(tampered[: len(tampered) // 2])
    elif damage == "digest missing":
        code.write_text(tampered)
        code.with_suffix(".sha256").unlink()
    else:  # the right digest, but anyone could have replaced the file
        code.write_text(tampered)
        code.with_suffix(".sha256").write_text(cache._digest(key, tampered) + "\n")
        code.chmod(0o666)
    cache.fast_validator.cache_clear()
    assert cache.is_valid(cold_cache, {"name": "x"}) is True  # still a working validator
    assert cache.is_valid(cold_cache, {}) is False
    assert not marker.exists()
    assert code.read_text() == original  # rebuilt in place


def stored_compiled(schema: Path) -> tuple[Path, str]:
    """The cached compiled form of the schema's validator and the key its digest is taken under."""
    code, _ = stored_code(schema)
    [compiled] = code.parent.glob(f"{code.stem}.*.marshal")
    return compiled, f"{code.name}\0{compiled.name.split('.')[1]}"


def test_the_compiled_validator_is_reused_when_its_digest_matches(cold_cache: Path) -> None:
    cache.fast_validator(cold_cache)
    compiled, key = stored_compiled(cold_cache)
    marker = cold_cache.parent / "compiled-reused"
    code, _ = stored_code(cold_cache)
    edited = marshal.dumps(compile(code.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n", "x", "exec"))
    compiled.write_bytes(edited)
    compiled.with_suffix(".sha256").write_text(cache._digest(key, edited) + "\n")
    cache.fast_validator.cache_clear()
    cache.fast_validator(cold_cache)
    assert marker.exists()  # read back, not compiled again from the source


@pytest.mark.parametrize("damage", ["tampered", "truncated", "writable by others"])
def test_a_damaged_compiled_validator_is_never_loaded_and_is_rebuilt(cold_cache: Path, damage: str) -> None:
    cache.fast_validator(cold_cache)
    compiled, key = stored_compiled(cold_cache)
    original = compiled.read_bytes()
    marker = cold_cache.parent / "executed"
    tampered = marshal.dumps(compile(f"open({str(marker)!r}, 'w').close()", "x", "exec"))
    if damage == "tampered":
        compiled.write_bytes(tampered)
    elif damage == "truncated":
        compiled.write_bytes(original[: len(original) // 2])
    else:  # the right digest, but anyone could have replaced the file
        compiled.write_bytes(tampered)
        compiled.with_suffix(".sha256").write_text(cache._digest(key, tampered) + "\n")
        compiled.chmod(0o666)
    cache.fast_validator.cache_clear()
    assert cache.is_valid(cold_cache, {"name": "x"}) is True
    assert cache.is_valid(cold_cache, {}) is False
    assert not marker.exists()
    assert compiled.read_bytes() == original  # rebuilt in place


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


def test_a_tampered_template_bytecode_is_never_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jinja2

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def render() -> str:
        env = jinja2.Environment(
            loader=jinja2.DictLoader({"t": "{{ 1 + 1 }}"}), bytecode_cache=cache.jinja_bytecode_cache()
        )
        return env.get_template("t").render()

    assert render() == "2"
    [stored] = (tmp_path / "llamafactory-k8s" / "jinja").glob("*.cache")
    # bytecode of another template, in the same file format: valid for jinja, but not what was stored
    other = jinja2.Environment(loader=jinja2.DictLoader({"t": "{{ 40 + 2 }}"}))
    bucket = jinja2.bccache.Bucket(
        other, "t", jinja2.bccache.FileSystemBytecodeCache().get_source_checksum("{{ 1 + 1 }}")
    )
    bucket.code = compile(other.compile("{{ 40 + 2 }}", raw=True), "t", "exec")
    stored.write_bytes(bucket.bytecode_to_string())
    assert render() == "2"
