"""Hostile input for the spec and the chart values: the strings and numbers an attacker with commit rights
would try, every place of a JSON Schema where they can go, and the comparison of a render made with them
against a clean render.

A hostile value is harmless when it is refused, or when it lands as one whole scalar of an output whose shape
did not change. It is harmful when it adds a key the output never has (YAML injection; a value may still
take the template down another branch that uses keys the clean output has elsewhere), when it
appears inside a longer string (a shell script, a config file pasted as text, a command line), or when a
number that no manifest can hold (NaN, infinity, beyond 64 bits) reaches the output.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

# every string a spec or values file may carry to break out of where it lands
HOSTILE_STRINGS: dict[str, str] = {
    "newline-yaml": "x\nhostPID: true",
    "colon-yaml": "a: b",
    "double-quote": '"',
    "single-quote": "'",
    "subshell": "$(touch /tmp/pwned)",
    "backticks": "`touch /tmp/pwned`",
    "dotdot": "../../etc",
    "nul": "a\x00b",
    "long": "A" * 100_000,
    "template": "{{ .Values }}",
    "leading-dash": "--trust-remote-code",
    "short-flag": "-e",
    "line-separator": "x\u2028hostPID: true",
}
HOSTILE_NUMBERS: dict[str, float | int] = {
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "1e308": 1e308,
    "-1": -1,
    "2**63": 2**63,
}
# the three that break most: a new YAML key, a command substitution, a value read as a flag
CHART_VARIANTS = ("newline-yaml", "subshell", "leading-dash")

ITEM = "*"  # a location's part: any item of an array
KEY = "<key>"  # a location's part: the value under any key of a map

INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Location:
    """A place of a schema that holds a string or a number: ``parts`` names it (``*``: any array item,
    ``<key>``: any key of a map); kind ``key`` is the map's own keys."""

    parts: tuple[str, ...]
    kind: str  # "string", "number" or "key"

    @property
    def label(self) -> str:
        text = "$" + "".join(f"[{p}]" if p == ITEM else f".{p}" for p in self.parts)
        return text + ".<name>" if self.kind == "key" else text


def _resolve(node: Any, root: dict[str, Any]) -> dict[str, Any]:
    """The node with its $ref (to #/$defs/... or #/definitions/...) merged in, recursively."""
    if not isinstance(node, dict):
        return {}
    seen = 0
    while "$ref" in node and seen < 32:
        ref = node["$ref"]
        target: Any = root
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        seen += 1
    resolved: dict[str, Any] = node
    return resolved


def _types(node: dict[str, Any]) -> set[str]:
    declared = node.get("type")
    types = set(declared if isinstance(declared, list) else [declared] if declared else [])
    for value in node.get("enum", []) + ([node["const"]] if "const" in node else []):
        if isinstance(value, str):
            types.add("string")
        elif isinstance(value, bool):
            types.add("boolean")
        elif isinstance(value, int | float):
            types.add("number")
    if "integer" in types:
        types.add("number")
    return types


def locations(schema: dict[str, Any]) -> list[Location]:
    """Every location of the schema that takes a string or a number (anyOf/oneOf/allOf branches merged),
    map keys included; in schema order, each once."""
    found: dict[tuple[tuple[str, ...], str], None] = {}

    def walk(node: Any, parts: tuple[str, ...], depth: int) -> None:
        node = _resolve(node, schema)
        if not node or depth > 12:
            return
        branches = [node] + [
            _resolve(b, schema) for c in ("anyOf", "oneOf", "allOf") for b in node.get(c, [])
        ]
        types: set[str] = set()
        properties: dict[str, Any] = {}
        for branch in branches:
            types |= _types(branch)
            properties.update(branch.get("properties", {}))
        if "string" in types:
            found[(parts, "string")] = None
        if "number" in types:
            found[(parts, "number")] = None
        for name, sub in properties.items():
            walk(sub, (*parts, name), depth + 1)
        for branch in branches:
            extra = branch.get("additionalProperties")
            is_map = isinstance(extra, dict) or ("propertyNames" in branch and extra is not False)
            if is_map:
                found[(parts, "key")] = None
                if isinstance(extra, dict) and extra:
                    walk(extra, (*parts, KEY), depth + 1)
                else:
                    # a map of anything (passed through as is): its string values count too
                    found[((*parts, KEY), "string")] = None
            items = branch.get("items")
            if isinstance(items, dict):
                walk(items, (*parts, ITEM), depth + 1)

    walk(schema, (), 0)
    return [Location(parts, kind) for parts, kind in found]


# -- outputs: scalars, shape, scripts ---------------------------------------------------------------------------

Path_ = tuple[str | int, ...]


def _structured(text: str) -> Any:
    """A multi-line string that holds YAML or JSON (a config file in a ConfigMap): its data; None otherwise."""
    if "\n" not in text.strip() and not text.lstrip().startswith(("{", "[")):
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict | list) and data else None


def scalars(doc: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """Every scalar with its path; a string holding YAML/JSON is descended into (its path gets ``|``)."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from scalars(value, (*path, str(key)))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from scalars(value, (*path, index))
    else:
        if isinstance(doc, str) and (inner := _structured(doc)) is not None:
            yield from scalars(inner, (*path, "|"))
            return
        yield path, doc


def shape(doc: Any, names: Iterable[str] = ()) -> set[str]:
    """The key paths of a document, list indices collapsed to ``[]``, YAML/JSON strings descended into; each
    key that is one of ``names`` is written ``<V>`` (the value under test may become a key)."""
    names = {n for n in names if n}
    out: set[str] = set()

    def key_text(key: Any) -> str:
        return "<V>" if str(key) in names else str(key)

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            out.add(prefix + "{}")
            for key, value in node.items():
                walk(value, f"{prefix}.{key_text(key)}")
        elif isinstance(node, list):
            out.add(prefix + "[]")
            for value in node:
                walk(value, prefix + "[]")
        elif isinstance(node, str) and (inner := _structured(node)) is not None:
            walk(inner, prefix + "|")
        else:
            out.add(prefix)

    walk(doc, "")
    return out


SHELL_SYNTAX = re.compile(r"\$\(|\$\{|`|&&|\|\||;\s|^\s*(set|exec|export|if|for|echo|cd)\b|#!/", re.MULTILINE)


def in_script(path: Path_, value: str, doc: Any) -> bool:
    """Whether a string is shell code: the item after ``-c`` in a list, or multi-line text with shell syntax."""
    if path and isinstance(path[-1], int) and path[-1] > 0:
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        if isinstance(parent, list) and parent[path[-1] - 1] in ("-c", "-ec", "-ce", "-exc", "-euc"):
            return True
    return "\n" in value and bool(SHELL_SYNTAX.search(value))


def _lookup(doc: Any, path: Path_) -> Any:
    """The scalar at a path of :func:`scalars`, None when there is none."""
    node: Any = doc
    for part in path:
        if part == "|":
            node = _structured(node) if isinstance(node, str) else None
            continue
        if not isinstance(node, dict | list):
            return None
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):  # no such key or item
            return None
    return node


def _parent_doc(doc: Any, path: Path_) -> tuple[Any, Path_]:
    """The innermost document a scalar path lies in (past its last ``|``) and the path inside it."""
    if "|" not in path:
        return doc, path
    cut = len(path) - 1 - list(reversed(path)).index("|")
    return _structured(_lookup(doc, path[:cut])), path[cut + 1 :]


def offences(clean: dict[str, Any], hostile: dict[str, Any], value: Any, clean_value: Any) -> list[str]:
    """What is wrong with the hostile output (documents by name) against the clean one, made with
    ``clean_value`` where the hostile one has ``value``: a changed shape, the value inside a longer string
    (``script`` when that string is shell code), a number no manifest holds."""
    found: list[str] = []
    names = [n for n in (clean_value, value) if isinstance(n, str)]
    # a short value (`"`, `-e`) can be in any string by chance (a hash): it counts where the clean value was
    distinctive = isinstance(value, str) and len(value) >= 6
    known = {_last_key(p) for doc in clean.values() for p in shape(doc, names)}
    for doc_name in sorted(set(clean) | set(hostile)):
        if doc_name not in hostile:
            found.append(f"{doc_name}: missing from the output")
            continue
        if doc_name not in clean:
            found.append(f"{doc_name}: appears in the output")
            continue
        before, after = shape(clean[doc_name]), shape(hostile[doc_name])
        if before != after and names:
            before, after = shape(clean[doc_name], names), shape(hostile[doc_name], names)
        # a key path of a name the clean output never uses is the value's own: injected YAML. Known names
        # on new paths are another branch of the template (a model path off the storage asks for the token)
        added = sorted(p for p in after - before if _last_key(p) not in known)
        if added:
            found.append(f"{doc_name}: new keys: {_short(added)}")
        for path, scalar in scalars(hostile[doc_name]):
            old = _lookup(clean[doc_name], path)
            if isinstance(value, str) and isinstance(scalar, str) and value in scalar and scalar != value:
                if isinstance(old, str) and old.count(value) == scalar.count(value):
                    continue  # there before: not the hostile value
                if not distinctive and not (isinstance(old, str) and str(clean_value) in old):
                    continue
                inner_doc, inner_path = _parent_doc(hostile[doc_name], path)
                kind = "script" if in_script(inner_path, scalar, inner_doc) else "embedded"
                found.append(f"{doc_name}: {kind} at {_dotted(path)}: {_snippet(scalar, value)}")
            elif scalar != old and _not_representable(scalar):
                found.append(f"{doc_name}: number {scalar!r} at {_dotted(path)}")
    return found


def _last_key(key_path: str) -> str:
    """The last key of a :func:`shape` path (``.a.b[]`` -> ``b``)."""
    return re.split(r"[.|]", key_path.removesuffix("{}").replace("[]", ""))[-1]


def _not_representable(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, int):
        return not -INT64_MAX - 1 <= value <= INT64_MAX
    return False


def _dotted(path: Path_) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _short(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(_clip(i, 60) for i in items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}]"


def _clip(text: str, width: int) -> str:
    text = json.dumps(text, ensure_ascii=True)[1:-1]
    return text if len(text) <= width else text[: width - 3] + "..."


def _snippet(scalar: str, value: str) -> str:
    at = scalar.find(value)
    start = max(at - 30, 0)
    return _clip(("..." if start else "") + scalar[start : at + min(len(value), 40) + 30], 110)


def describe_value(value: Any, width: int = 40) -> str:
    """A hostile value (or a message) as one short line."""
    if isinstance(value, str):
        return _clip(value, width) + (f" ({len(value)} chars)" if len(value) > width else "")
    return repr(value)


def plain_string(node: dict[str, Any], name: str) -> str | None:
    """A plain value that a string schema takes (its own name first), for a place left empty."""
    if "enum" in node:
        return next((v for v in node["enum"] if isinstance(v, str) and v), None)
    own = name.removesuffix("_tag").lower()
    for candidate in (own, *PLAIN_STRINGS):
        fits = re.search(node.get("pattern", ""), candidate) and len(candidate) >= node.get("minLength", 0)
        if fits and candidate not in node.get("not", {}).get("enum", []):
            return candidate
    return None


# plain strings to try, in turn, for a place left empty, when its own name does not fit its pattern
PLAIN_STRINGS = ("lfk", "ui.example.com", "https://auth.example.com/", "/storage/lfk", "example.com/lfk", "1")


def report(config: Any, title: str, rows: list[tuple[str, str, str]], outcomes: dict[str, int]) -> None:
    """How the cases ended and the table of offending ones, on the terminal past output capturing (at the
    end of a module)."""
    reporter = config.pluginmanager.getplugin("terminalreporter")
    capture = config.pluginmanager.getplugin("capturemanager")
    if reporter is None or not outcomes:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        counts = ", ".join(f"{n} {what}" for what, n in sorted(outcomes.items()))
        reporter.write_line("")
        reporter.write_line(f"{title}: {counts}; {len(rows)} offences")
        if rows:
            reporter.write_line(table(rows))


def table(rows: list[tuple[str, str, str]]) -> str:
    """Offending cases as an aligned table: location, variant, what happened."""
    if not rows:
        return ""
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [f"{'location':<{width[0]}}  {'variant':<{width[1]}}  what happened"]
    lines += [f"{a:<{width[0]}}  {b:<{width[1]}}  {c}" for a, b, c in rows]
    return "\n".join(lines)


# -- instances: putting a value at a location -------------------------------------------------------------------


def present(doc: Any, parts: tuple[str, ...]) -> int:
    """How many leading parts of a location exist in a document (``*``: a non-empty list, ``<key>``: a
    non-empty map)."""
    node, depth = doc, 0
    for part in parts:
        if part == ITEM and isinstance(node, list) and node:
            node = node[0]
        elif part == KEY and isinstance(node, dict) and node:
            node = next(iter(node.values()))
        elif part not in (ITEM, KEY) and isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return depth
        depth += 1
    return depth


def place(
    doc: dict[str, Any], parts: tuple[str, ...], value: Any, example: Any, new_key: str
) -> tuple[dict[str, Any], tuple[str | int, ...]]:
    """A copy of the document with the value at the location, and the concrete path where it went. Missing
    parents are made from ``example(pattern)`` (a whole valid object, or None for an empty one); a missing
    map entry is added under ``new_key``."""
    out = copy.deepcopy(doc)
    node: Any = out
    concrete: list[str | int] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        pattern = parts[: i + 1]
        if part == ITEM:
            if not node:
                node.append(value if last else _made(example, pattern, parts[i + 1]))
            key: str | int = 0
        elif part == KEY:
            if not node:
                node[new_key] = value if last else _made(example, pattern, parts[i + 1])
            key = next(iter(node))
        else:
            if part not in node:
                node[part] = value if last else _made(example, pattern, parts[i + 1])
            key = part
        concrete.append(key)
        if last:
            node[key] = value
        else:
            node = node[key]
    return out, tuple(concrete)


def _made(example: Any, pattern: tuple[str, ...], next_part: str) -> Any:
    made = example(pattern)
    if made is None:
        made = [] if next_part == ITEM else {}
    return copy.deepcopy(made)


def examples(docs: Iterable[Any]) -> dict[tuple[str, ...], Any]:
    """The first value seen at every location pattern of some documents (for whole objects too)."""
    seen: dict[tuple[str, ...], Any] = {}

    def walk(node: Any, parts: tuple[str, ...]) -> None:
        seen.setdefault(parts, node)
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, (*parts, str(key)))
                walk(value, (*parts, KEY))
        elif isinstance(node, list):
            for item in node:
                walk(item, (*parts, ITEM))

    for doc in docs:
        walk(doc, ())
    return seen


def schema_at(schema: dict[str, Any], parts: tuple[str, ...]) -> dict[str, Any]:
    """The (resolved, branches merged) schema of a location pattern; {} when the schema does not say."""
    node = _resolve(schema, schema)
    for part in parts:
        branches = [node] + [
            _resolve(b, schema) for c in ("anyOf", "oneOf", "allOf") for b in node.get(c, [])
        ]
        nxt: Any = None
        for branch in branches:
            if part in branch.get("properties", {}):
                nxt = branch["properties"][part]
            elif part == ITEM and isinstance(branch.get("items"), dict):
                nxt = branch["items"]
            elif part != ITEM and isinstance(branch.get("additionalProperties"), dict):
                nxt = branch["additionalProperties"]  # <key>, or a concrete key of a map
            if nxt is not None:
                break
        node = _resolve(nxt, schema) if nxt is not None else {}
    return node
