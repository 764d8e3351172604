#!/usr/bin/env python3
"""Generates charts/llama-factory/values.schema.json from values.yaml and its comments.

    hack/chart-schema.py           rewrite the schema
    hack/chart-schema.py --check   exit 1 when the committed schema is stale (the chart tier runs this)

Each key's type comes from its default and its description from its comment (chart_values.py reads both);
`# @schema {...}` lines add what the default cannot tell. Maps reject unknown keys unless their annotation sets
additionalProperties. An empty map or list, or a null default, without an annotation is an error rather than a
guess. A `(type)` opening a `# --` comment is the README's type column (helm-docs reads it, make chart-docs):
it is not part of the description and must be a type the schema allows. The values.yaml header documents the
syntax.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import sys
from typing import Any

import yaml
from chart_values import CHART, VALUES, AnnotationError, Comments, Key, read

SCHEMA = CHART / "values.schema.json"
Schema = dict[str, Any]

# Helm hands every chart a `global` map (a parent chart's globals); a strict root must accept it.
GLOBAL: Schema = {
    "description": "Helm's global values (accepted, unused).",
    "type": "object",
    "additionalProperties": True,
    "default": {},
}
# helm-docs' `(type)` at the start of a description, and the JSON type each of its type names stands for
README_TYPE = re.compile(r"^\((?P<name>[^)]*)\)\s*")
README_TYPES = {
    "int": "integer", "float": "number", "string": "string", "bool": "boolean", "list": "array", "object": "object"
}  # fmt: skip
# keywords placed by the generator itself, around those an annotation brings
FIRST, LAST = ("description", "type"), ("additionalProperties", "properties", "items", "default")


class SchemaError(ValueError):
    """values.yaml does not say enough (or says something contradictory) for the schema."""


def merged(base: Schema, over: Schema) -> Schema:
    """`over` laid onto `base`: maps merge key by key (so `properties` merge per property), the rest replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class Generator:
    def __init__(self, comments: Comments) -> None:
        empty: Schema = {}
        self.definitions = {
            name: functools.reduce(merged, parts, empty) for name, parts in comments.definitions.items()
        }
        self.keys = {key.path: key for key in comments.keys}
        self.used: set[tuple[str, ...]] = set()

    def expand(self, schema: Schema, seen: tuple[str, ...] = ()) -> Schema:
        """`schema` with every `{"$ref": "#/$defs/NAME"}` replaced by the shape (the shape first, the rest over it)."""
        out: Schema = {}
        ref = schema.get("$ref")
        if ref is not None:
            name = ref.removeprefix("#/$defs/")
            if name == ref or name not in self.definitions:
                raise SchemaError(f"unknown $ref {ref!r} (shapes: {', '.join(sorted(self.definitions))})")
            if name in seen:
                raise SchemaError(f"shape {name!r} refers to itself")
            out = self.expand(self.definitions[name], (*seen, name))
        rest: Schema = {}
        for key, value in schema.items():
            if key == "$ref":
                continue
            if key == "properties" and isinstance(value, dict):
                rest[key] = {k: self.expand(v, seen) if isinstance(v, dict) else v for k, v in value.items()}
            elif key in ("items", "not", "additionalProperties") and isinstance(value, dict):
                rest[key] = self.expand(value, seen)
            elif key in ("anyOf", "oneOf", "allOf") and isinstance(value, list):
                rest[key] = [self.expand(v, seen) for v in value]
            else:
                rest[key] = value
        return merged(out, rest)

    def annotation(self, path: tuple[str, ...], inherited: Schema) -> tuple[Schema, Key | None]:
        key = self.keys.get(path)
        schema = self.expand(inherited)
        if key is not None:
            self.used.add(path)
            for fragment in key.schema:
                schema = merged(schema, self.expand(fragment))
        return schema, key

    def node(self, path: tuple[str, ...], value: Any, inherited: Schema) -> Schema:
        """The schema of one key: inferred from its default `value`, then the annotation laid over it."""
        where = ".".join(path)
        given, key = self.annotation(path, inherited)
        fallback = given.pop("description", "")  # a shape's description serves when the comment says nothing
        description = ((key.description or key.note) if key else "") or fallback
        readme_type = README_TYPE.match(description)
        if readme_type:
            description = description[readme_type.end() :]
        if not description:
            raise SchemaError(f"{where} has no description: give it a `# --` comment")
        out: Schema = {"description": description}
        properties = given.pop("properties", None)
        inferred: Schema = {}
        if isinstance(value, dict):
            inferred["type"] = "object"
            if "additionalProperties" in given and given["additionalProperties"] is not False:
                if properties is not None:  # constraints on optional keys of a free-form map
                    inferred["properties"] = properties
            elif not value and properties is None:
                raise SchemaError(
                    f"{where}: an empty map tells nothing; annotate its keys with"
                    ' `# @schema {"additionalProperties": {...}}` (free-form) or {"properties": {...}}'
                )
            else:
                inferred["additionalProperties"] = False
                props = {k: self.node((*path, k), v, (properties or {}).get(k, {})) for k, v in value.items()}
                for k, sub in (properties or {}).items():
                    props.setdefault(k, sub)
                inferred["properties"] = props
        elif isinstance(value, list):
            inferred["type"] = "array"
            if "items" not in given:
                kinds = {json_type(v) for v in value}
                if len(kinds) != 1 or kinds & {"object", "array", "null"}:
                    raise SchemaError(
                        f'{where}: annotate the list\'s items: `# @schema {{"items": {{...}}}}`'
                    )
                inferred["items"] = {"type": kinds.pop()}
        elif value is None:
            if "type" not in given:
                raise SchemaError(f'{where}: a null default needs `# @schema {{"type": [..., "null"]}}`')
        else:
            inferred["type"] = json_type(value)
        out.update({**inferred, **given, "default": value})
        if readme_type:
            allowed = out.get("type", [])
            allowed = [allowed] if isinstance(allowed, str) else allowed
            if README_TYPES.get(readme_type["name"]) not in allowed:
                raise SchemaError(
                    f"{where}: the README type ({readme_type['name']}) is not one the schema allows ({allowed})"
                )
        return tidy(out)

    def schema(self, values: dict[str, Any]) -> Schema:
        properties: Schema = {"global": GLOBAL}
        properties.update((k, self.node((k,), v, {})) for k, v in values.items())
        unused = [k for k in self.keys.values() if k.schema and k.path not in self.used]
        if unused:
            lines = ", ".join(f"{k.dotted} (line {k.line})" for k in unused)
            raise SchemaError(f"annotations inside a free-form map are never read: {lines}")
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$comment": "Generated from values.yaml by hack/chart-schema.py (make chart-schema): do not edit.",
            "title": "llama-factory chart values",
            "type": "object",
            "additionalProperties": False,
            "properties": properties,
        }


def tidy(schema: Schema) -> Schema:
    """The keywords in one order everywhere (description and type first; properties, items and default last),
    nested schemas too; a default keeps the order of values.yaml."""
    out = {k: schema[k] for k in FIRST if k in schema}
    out.update((k, v) for k, v in schema.items() if k not in FIRST and k not in LAST)
    out.update((k, schema[k]) for k in LAST if k in schema)
    for key, value in out.items():
        if key == "properties":
            out[key] = {name: tidy(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = tidy(value)
        elif key in ("anyOf", "oneOf", "allOf"):
            out[key] = [tidy(sub) for sub in value]
    return out


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "null"


def check_defaults(schema: Schema, values: dict[str, Any]) -> None:
    """The defaults must pass the schema made from them: an annotation that contradicts its default is a bug."""
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(schema).iter_errors(values), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n".join(f"  {'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
        raise SchemaError(f"values.yaml's own defaults break the generated schema:\n{lines}")


def generate(text: str) -> str:
    """The schema file's text for the values.yaml `text`."""
    values = yaml.safe_load(text)
    schema = Generator(read(text)).schema(values)
    check_defaults(schema, values)
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    try:
        fresh = generate(VALUES.read_text(encoding="utf-8"))
    except (SchemaError, AnnotationError) as err:
        print(f"{VALUES}: {err}", file=sys.stderr)
        return 1
    current = SCHEMA.read_text(encoding="utf-8") if SCHEMA.exists() else ""
    if "--check" in sys.argv:
        if fresh != current:
            print(f"{SCHEMA} is stale (values.yaml changed since): run `make chart-schema`", file=sys.stderr)
            return 1
        return 0
    if fresh != current:
        SCHEMA.write_text(fresh, encoding="utf-8")
        print(f"updated {SCHEMA}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
