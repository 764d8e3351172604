"""A per-user cache for work that only depends on the project's own files: compiled schema validators and
compiled Jinja templates. Keyed by content hash, so a changed schema or template is never served stale.
Everything here is an optimisation: when the cache cannot be written, the same work is done in memory."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import tempfile
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llamafactory-k8s"


def _store(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


@functools.cache
def fast_validator(schema_path: Path) -> Callable[[Any], Any]:
    """A fastjsonschema validator of the schema, its generated code cached on disk.

    It raises on the first problem only; callers use it to answer "valid?" quickly and fall back to
    jsonschema for the complete, located list of problems. `use_default=False`: it must not fill in data.
    """
    text = schema_path.read_text(encoding="utf-8")
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    cached = cache_dir() / "validators" / f"{schema_path.stem.replace('.', '_')}_{key}.py"
    try:
        code = cached.read_text(encoding="utf-8")
    except OSError:
        import fastjsonschema

        code = fastjsonschema.compile_to_code(json.loads(text), use_default=False)
        with contextlib.suppress(OSError):
            _store(cached, code)
    module = types.ModuleType(f"lfk_validator_{key}")
    exec(compile(code, str(cached), "exec"), module.__dict__)  # noqa: S102 - code generated from our own schema
    # the root schema's function comes first; its name is derived from the schema's $id
    entry = re.search(r"^def (validate\w*)\(", code, re.MULTILINE)
    if entry is None:
        raise RuntimeError(f"no validator function in the code generated for {schema_path}")
    validate: Callable[[Any], Any] = getattr(module, entry.group(1))
    return validate


def is_valid(schema_path: Path, document: Any) -> bool:
    try:
        fast_validator(schema_path)(document)
    except Exception:  # fastjsonschema's JsonSchemaValueException, or anything it cannot decide
        return False
    return True


def jinja_bytecode_cache() -> Any:
    """Jinja's own bytecode cache in the same folder, or None when it cannot be created."""
    import jinja2

    folder = cache_dir() / "jinja"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return jinja2.FileSystemBytecodeCache(str(folder))
