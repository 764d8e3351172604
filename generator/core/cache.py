"""A per-user cache for work that only depends on the project's own files: compiled schema validators. Keyed
by content hash, so a changed schema is never served stale.
Everything here is an optimisation: when the cache cannot be written, the same work is done in memory."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import marshal
import os
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llamafactory-k8s"


def _store(path: Path, data: bytes) -> None:
    import tempfile  # only when something is stored: a warm cache never writes

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# bump when what is stored (or how it is checked) changes, so older files are never read
_FORMAT = "3"


def _digest(key: str, content: bytes) -> str:
    return hashlib.sha256(f"{_FORMAT}\0{key}\0".encode() + content).hexdigest()


def _trusted(path: Path) -> bool:
    """Only a file of this user that nobody else can write is ever read back (a shared XDG_CACHE_HOME)."""
    try:
        info = path.stat()
    except OSError:
        return False
    return info.st_uid == os.getuid() and not info.st_mode & 0o022


def _read_verified(stored: Path, key: str) -> bytes | None:
    """The stored bytes if they are exactly what was stored under this key: the digest stored beside them
    matches. A truncated, edited or foreign file gives None, and the work is done afresh."""
    digest_file = stored.with_suffix(".sha256")
    if not (_trusted(stored) and _trusted(digest_file)):
        return None
    try:
        data = stored.read_bytes()
        expected = digest_file.read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        return None
    return data if hmac.compare_digest(_digest(key, data), expected) else None


def _store_verified(stored: Path, key: str, data: bytes) -> None:
    with contextlib.suppress(OSError):  # an optimisation: a cache that cannot be written is not an error
        _store(stored, data)
        _store(stored.with_suffix(".sha256"), (_digest(key, data) + "\n").encode())


@functools.cache
def fast_validator(schema_path: Path) -> Callable[[Any], Any]:
    """A fastjsonschema validator of the schema, its compiled code cached on disk.

    It raises on the first problem only; callers use it to answer "valid?" quickly and fall back to
    jsonschema for the complete, located list of problems. `use_default=False`: it must not fill in data.
    Generating the code and compiling it costs more than the rest of `lfk validate`, so the compiled code is
    stored (this interpreter's marshal format) under a key that covers the schema's text, the fastjsonschema
    version that generates it and the interpreter, and executed only after its digest checks out.
    """
    stored, key = validator_file(schema_path)
    code = _loaded_code(stored, key)
    if code is None:
        import fastjsonschema

        schema = json.loads(schema_path.read_text(encoding="utf-8"))
        generated = fastjsonschema.compile_to_code(schema, use_default=False)
        code = compile(_lazy_patterns(generated), f"<validator of {schema_path.name}>", "exec")
        _store_verified(stored, key, marshal.dumps(code))
    module = types.ModuleType(f"lfk_validator_{key[:16]}")
    module.__dict__[LAZY_PATTERN] = LazyPattern
    exec(code, module.__dict__)  # noqa: S102 - generated from our own schema, verified
    # the root schema's function is defined first; the others are the functions of its $defs
    for name, value in module.__dict__.items():
        if name.startswith("validate") and isinstance(value, types.FunctionType):
            validate: Callable[[Any], Any] = value
            return validate
    raise RuntimeError(f"no validator function in the code generated for {schema_path}")


def validator_file(schema_path: Path) -> tuple[Path, str]:
    """Where the schema's compiled validator is stored, and its key: the schema's text, the fastjsonschema
    version that generates the code and the interpreter that compiled it."""
    import fastjsonschema

    text = schema_path.read_text(encoding="utf-8")
    tag = f"{fastjsonschema.VERSION}\0{sys.implementation.cache_tag}"
    key = hashlib.sha256(f"{tag}\0{text}".encode()).hexdigest()
    return cache_dir() / "validators" / f"{schema_path.stem.replace('.', '_')}_{key[:16]}.marshal", key


def _loaded_code(stored: Path, key: str) -> types.CodeType | None:
    data = _read_verified(stored, key)
    if data is None:
        return None
    with contextlib.suppress(ValueError, EOFError, TypeError):
        code = marshal.loads(data)  # noqa: S302 - our own compiled code, digest verified
        if isinstance(code, types.CodeType):
            return code
    return None


class LazyPattern:
    """A regular expression compiled on first use. The generated validators compile every pattern of the
    schema when loaded, most of which a given document never reaches; compiling them costs more than the
    validation."""

    def __init__(self, *args: Any) -> None:
        self._args = args

    def __getattr__(self, name: str) -> Any:
        """search, match, ...: the compiled pattern's, kept on the instance so the next call goes straight to it."""
        value = getattr(re.compile(*self._args), name)
        setattr(self, name, value)
        return value


LAZY_PATTERN = "_lfk_lazy_pattern"
_PATTERN_TABLE = re.compile(r"^REGEX_PATTERNS = \{\n(.*?)^\}", re.MULTILINE | re.DOTALL)


def _lazy_patterns(code: str) -> str:
    """The validator's code with its table of patterns (REGEX_PATTERNS, fastjsonschema's) made lazy."""
    table = _PATTERN_TABLE.search(code)
    if table is None:
        return code
    lazy = table.group(1).replace(": re.compile(", f": {LAZY_PATTERN}(")
    return code[: table.start(1)] + lazy + code[table.end(1) :]


def is_valid(schema_path: Path, document: Any) -> bool:
    try:
        fast_validator(schema_path)(document)
    except Exception:  # fastjsonschema's JsonSchemaValueException, or anything it cannot decide
        return False
    return True
