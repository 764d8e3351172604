"""Loading an experiment spec: YAML -> dict, schema validation, schema defaults filled in."""

from __future__ import annotations

import copy
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
class Upstream:
    """An experiment whose result this one starts from (model.from, or PPO's reward model experiment)."""

    name: str
    source: str  # its spec file
    run_id: str
    use: str  # merged | adapter | reward
    result: str  # the folder on the storage this experiment reads
    stage: str  # its training stage
    jobs: tuple[str, ...]  # its components that must have completed for the result to be there
    before: tuple[Upstream, ...] = ()  # the experiments it starts from in turn
    model_names: tuple[str, ...] = ()  # the hub id and path its model is known by (the catalogue's shapes)


@dataclass(frozen=True)
class Spec:
    """A loaded spec. ``raw`` is what the person wrote; ``data`` has the schema's defaults filled in (and, for
    a spec that starts from another experiment, that experiment's result: ``upstreams``)."""

    source: str
    raw: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)
    upstreams: tuple[Upstream, ...] = ()

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
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *base`: merged below by the safe constructor, its keys may be overridden here
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=deep)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


# Bounds on what a spec file may make the loader do. A spec is a page of YAML written by a person; anything
# far beyond that is a mistake or an attack (an alias "bomb" expands to billions of nodes from a few lines).
MAX_SPEC_BYTES = 1 << 20
MAX_DEPTH = 64  # nesting of mappings and sequences
MAX_ALIAS_EXPANSION = 10_000  # nodes that aliases add over the ones written out


def _node_problem(root: yaml.Node) -> str | None:
    """Why the composed document is refused (a cycle, too deep, aliases expanding too far), or None.

    Aliases make the node graph a DAG (or a cycle: an anchor can be used inside its own node); every later
    step (schema, defaults, rules, render) walks the tree it expands to. So count the expanded tree without
    building it: each distinct node once, post-order, without recursion.
    """
    size: dict[int, int] = {}  # id(node) -> nodes in its expanded subtree
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            children = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if depth[key] > MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
            continue
        if key in size:
            continue
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                return "an alias refers to a node that contains it (a recursive structure)"
            if id(child) not in size:
                stack.append((child, False))
    distinct = len(size)
    if size[id(root)] - distinct > MAX_ALIAS_EXPANSION:
        return f"aliases expand the document by more than {MAX_ALIAS_EXPANSION} nodes"
    return None


def _too_deep(root: yaml.Node) -> str | None:
    """_node_problem for a tree (no aliases): its depth, counted level by level."""
    level, depth = [root], 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        level = [child for node in level for child in _children(node)]
    return None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def parse_yaml(text: str, source: str) -> Any:
    """One YAML document, safely: duplicate keys, deep nesting, recursive or exploding aliases refused."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(source, [Problem("$", f"larger than {MAX_SPEC_BYTES // 1024} KiB")])
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        # no `&`, no anchor, so no alias: the document is a tree and only its depth can be too much
        problem = _node_problem(node) if "&" in text else _too_deep(node)
        if problem:
            raise SpecError(source, [Problem("$", f"refused YAML: {problem}")])
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(source, [Problem("$", f"not valid YAML{where}: {problem}")]) from None
    finally:
        loader.dispose()


def read_bounded(path: str | Path, source: str, limit: int = MAX_SPEC_BYTES, what: str = "the spec") -> str:
    """A user's text file as text: at most `limit` bytes, UTF-8; SpecError naming what is wrong otherwise."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise SpecError(source, [Problem("$", f"cannot read {what}: {exc.strerror or exc}")]) from None
    if len(data) > limit:
        raise SpecError(source, [Problem("$", f"{what} is larger than {limit // 1024} KiB")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            source,
            [
                Problem(
                    "$", f"not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} cannot be decoded"
                )
            ],
        ) from None


def load_yaml_file(path: str | Path, what: str = "the file", limit: int = MAX_SPEC_BYTES) -> Any:
    """A YAML file a user wrote (spec, values, kubeconfig), read and parsed within the bounds above."""
    source = str(path)
    return parse_yaml(read_bounded(path, source, limit, what), source)


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
    import difflib  # only for a spec with an unknown key

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


def load_spec(path: str | Path, chain: tuple[str, ...] = ()) -> Spec:
    """Read and schema-check a spec; raise SpecError listing every schema problem at once. chain: the specs
    that start from this one, being loaded (a loop is refused)."""
    source = str(path)
    return spec_from_text(read_bounded(path, source), source, chain)


def spec_from_text(text: str, source: str, chain: tuple[str, ...] = ()) -> Spec:
    document = parse_yaml(text, source)
    if not isinstance(document, dict):
        raise SpecError(source, [Problem("$", "the spec must be a YAML mapping (key: value)")])
    problems = schema_problems(document)
    if problems:
        raise SpecError(source, problems)
    data = apply_defaults(document, experiment_schema())
    upstreams: tuple[Upstream, ...] = ()
    if "from" in data["model"] or "experiment" in data["stage"].get("ppo", {}).get("rewardModel", {}):
        from .chain import resolve  # reads the other specs: only for a spec that starts from one

        upstreams, problems = resolve(data, source, chain)
        if problems:
            raise SpecError(source, problems)
    return Spec(source=source, raw=document, data=data, upstreams=upstreams)
