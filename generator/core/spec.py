"""Loading an experiment spec: YAML -> dict, schema validation, schema defaults filled in."""

from __future__ import annotations

import copy
import difflib
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..errors import SpecError
from ..project import SPEC_SCHEMA
from . import cache
from .problems import Problem, json_path

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError


@dataclass(frozen=True)
class Spec:
    """A loaded spec. ``raw`` is what the person wrote; ``data`` has the schema's defaults filled in."""

    source: str
    raw: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def folder(self) -> Path:
        return Path(self.source).parent


# libyaml's parser when PyYAML has it (ten times faster), the pure-Python one otherwise
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):  # type: ignore[misc,valid-type]
    """A safe loader that refuses duplicate keys: the second one would silently win otherwise."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=deep)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(source, [Problem("$", f"not valid YAML{where}: {problem}")]) from None


@functools.cache
def experiment_schema() -> dict[str, Any]:
    with SPEC_SCHEMA.open(encoding="utf-8") as f:
        schema: dict[str, Any] = json.load(f)
    return schema


@functools.cache
def _validator() -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(experiment_schema())


def _narrow(error: ValidationError) -> ValidationError:
    """For anyOf/oneOf, report the branch that came closest rather than 'is not valid under any'."""
    from jsonschema.exceptions import best_match

    if error.context:
        best = best_match(error.context)
        if best is not None:
            return _narrow(best)
    return error


def _closest(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    return f"did you mean {close[0]!r}?" if close else ""


def _problems_of(error: ValidationError) -> list[Problem]:
    """One schema error as problems located at the key itself: each unknown key, each missing one."""
    storage = error.validator == "oneOf" and error.schema is experiment_schema()["$defs"]["storage"]
    # neither or both given, rather than a mistake inside one of them
    if storage and all(
        not e.relative_path and e.validator in ("required", "not") for e in error.context or []
    ):
        return [Problem(json_path(error.absolute_path), "set exactly one of `nfs` or `existingClaim`")]
    error = _narrow(error)
    parts = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        schema = error.schema if isinstance(error.schema, dict) else {}
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        hint = f"allowed here: {', '.join(allowed)}" if allowed else ""
        return [
            Problem(json_path([*parts, key]), "unknown key", _closest(key, allowed) or hint) for key in extra
        ]
    if error.validator == "required" and isinstance(error.instance, dict):
        required: list[str] = list(error.validator_value)  # type: ignore[arg-type]
        missing = [k for k in required if k not in error.instance]
        return [Problem(json_path([*parts, key]), "is required") for key in missing]
    return [Problem(json_path(parts), error.message)]


def schema_problems(document: Any) -> list[Problem]:
    """Every schema violation, each located by its JSON path, sorted by path.

    A compiled validator answers the common case (valid) in microseconds; only a spec with problems pays
    for jsonschema, which finds all of them and where they are.
    """
    if cache.is_valid(SPEC_SCHEMA, document):
        return []
    problems: set[Problem] = set()
    for error in _validator().iter_errors(document):
        problems.update(_problems_of(error))
    return sorted(problems, key=lambda p: (p.path, p.message))


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        resolved = dict(experiment_schema()["$defs"][ref.removeprefix("#/$defs/")])
        resolved.update({k: v for k, v in schema.items() if k != "$ref"})
        return resolved
    return schema


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Fill in the ``default`` of every absent property, recursively (into defaults too)."""
    schema = _resolve(schema)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        out = {}
        for key, sub in props.items():
            sub = _resolve(sub)
            if key in value:
                out[key] = apply_defaults(value[key], sub)
            elif "default" in sub:
                out[key] = apply_defaults(copy.deepcopy(sub["default"]), sub)
        extra = schema.get("additionalProperties")
        for key in value:
            if key not in props:
                out[key] = apply_defaults(value[key], extra) if isinstance(extra, dict) else value[key]
        return out
    return value


def load_spec(path: str | Path) -> Spec:
    """Read and schema-check a spec; raise SpecError listing every schema problem at once."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(source, [Problem("$", f"cannot read the spec: {exc.strerror or exc}")]) from None
    return spec_from_text(text, source)


def spec_from_text(text: str, source: str) -> Spec:
    document = parse_yaml(text, source)
    if not isinstance(document, dict):
        raise SpecError(source, [Problem("$", "the spec must be a YAML mapping (key: value)")])
    problems = schema_problems(document)
    if problems:
        raise SpecError(source, problems)
    return Spec(source=source, raw=document, data=apply_defaults(document, experiment_schema()))
