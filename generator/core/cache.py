"""A per-user cache for work that only depends on the project's own files: compiled schema validators and
compiled Jinja templates. Keyed by content hash, so a changed schema or template is never served stale.
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


def _store_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# bump when what is stored (or how it is checked) changes, so older files are never read
_FORMAT = "2"


def _digest(key: str, content: str | bytes) -> str:
    data = content.encode() if isinstance(content, str) else content
    return hashlib.sha256(f"{_FORMAT}\0{key}\0".encode() + data).hexdigest()


def _trusted(path: Path) -> bool:
    """Only a file of this user that nobody else can write is ever read back (a shared XDG_CACHE_HOME)."""
    try:
        info = path.stat()
    except OSError:
        return False
    return info.st_uid == os.getuid() and not info.st_mode & 0o022


def _read_verified(cached: Path, key: str) -> tuple[bytes, str] | None:
    """The cached code (and its digest) if it is exactly what was stored for this key: its digest, stored
    beside it, matches. A truncated, edited or foreign file gives None, and the code is generated afresh."""
    digest_file = cached.with_suffix(".sha256")
    if not (_trusted(cached) and _trusted(digest_file)):
        return None
    try:
        code = cached.read_bytes()
        expected = digest_file.read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        return None
    digest = _digest(key, code)
    return (code, digest) if hmac.compare_digest(digest, expected) else None


@functools.cache
def fast_validator(schema_path: Path) -> Callable[[Any], Any]:
    """A fastjsonschema validator of the schema, its generated code cached on disk.

    It raises on the first problem only; callers use it to answer "valid?" quickly and fall back to
    jsonschema for the complete, located list of problems. `use_default=False`: it must not fill in data.
    The cached code is executed only after its digest checks out: the key covers the schema's text and the
    fastjsonschema version that generated it, the digest covers the code.
    """
    import fastjsonschema

    text = schema_path.read_text(encoding="utf-8")
    key = hashlib.sha256(f"{fastjsonschema.VERSION}\0{text}".encode()).hexdigest()[:16]
    cached = cache_dir() / "validators" / f"{schema_path.stem.replace('.', '_')}_{key}.py"
    found = _read_verified(cached, key)
    if found is None:
        generated = fastjsonschema.compile_to_code(json.loads(text), use_default=False)
        code, digest = generated.encode(), _digest(key, generated)
        with contextlib.suppress(OSError):
            _store(cached, generated)
            _store(cached.with_suffix(".sha256"), digest + "\n")
    else:
        code, digest = found
    module = types.ModuleType(f"lfk_validator_{key}")
    module.__dict__[LAZY_PATTERN] = LazyPattern
    exec(_compiled(cached, code, digest), module.__dict__)  # noqa: S102 - generated from our own schema, verified
    # the root schema's function comes first; its name is derived from the schema's $id
    entry = re.search(rb"^def (validate\w*)\(", code, re.MULTILINE)
    if entry is None:
        raise RuntimeError(f"no validator function in the code generated for {schema_path}")
    validate: Callable[[Any], Any] = getattr(module, entry.group(1).decode())
    return validate


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
_COMPILED_FORMAT = "lazy1"
_PATTERN_TABLE = re.compile(rb"^REGEX_PATTERNS = \{\n(.*?)^\}", re.MULTILINE | re.DOTALL)


def _lazy_patterns(code: bytes) -> bytes:
    """The validator's code with its table of patterns (REGEX_PATTERNS, fastjsonschema's) made lazy."""
    table = _PATTERN_TABLE.search(code)
    if table is None:
        return code
    lazy = table.group(1).replace(b": re.compile(", f": {LAZY_PATTERN}(".encode())
    return code[: table.start(1)] + lazy + code[table.end(1) :]


def _compiled(cached: Path, code: bytes, code_digest: str) -> types.CodeType:
    """The validator's code compiled, itself cached: compiling the spec schema's generated code costs more
    than the rest of `lfk validate`. Stored as this interpreter's marshal format under a name that carries the
    source's digest (an edited source is never paired with an older compiled form), and read back under the
    same checks as the source: this user's file, its digest beside it."""
    source_digest = code_digest[:16]
    # the name changes with the interpreter and with how the code is prepared (_COMPILED_FORMAT)
    tag = f"{sys.implementation.cache_tag}-{_COMPILED_FORMAT}"
    stored = cached.with_name(f"{cached.stem}.{source_digest}.{tag}.marshal")
    key = f"{cached.name}\0{source_digest}"
    digest_file = stored.with_suffix(".sha256")
    if _trusted(stored) and _trusted(digest_file):
        try:
            data = stored.read_bytes()
            expected = digest_file.read_text(encoding="ascii").strip()
        except (OSError, ValueError):
            data, expected = b"", ""
        if data and hmac.compare_digest(_digest(key, data), expected):
            with contextlib.suppress(ValueError, EOFError, TypeError):
                loaded = marshal.loads(data)  # noqa: S302 - our own compiled code, digest verified
                if isinstance(loaded, types.CodeType):
                    return loaded
    compiled = compile(_lazy_patterns(code), str(cached), "exec")
    with contextlib.suppress(OSError):
        data = marshal.dumps(compiled)
        _store_bytes(stored, data)
        _store(digest_file, _digest(key, data) + "\n")
    return compiled


def is_valid(schema_path: Path, document: Any) -> bool:
    try:
        fast_validator(schema_path)(document)
    except Exception:  # fastjsonschema's JsonSchemaValueException, or anything it cannot decide
        return False
    return True


def jinja_bytecode_cache() -> Any:
    """Jinja's bytecode cache in the same folder, or None when it cannot be created. Jinja unpickles and
    unmarshals what it finds there; so, as for the validators, a file is read back only when the digest
    stored beside it matches."""
    import jinja2

    class VerifiedBytecodeCache(jinja2.FileSystemBytecodeCache):
        def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
            path = Path(self._get_cache_filename(bucket))
            digest_file = path.with_suffix(".sha256")
            if not (_trusted(path) and _trusted(digest_file)):
                return
            try:
                data = path.read_bytes()
                expected = digest_file.read_text(encoding="ascii").strip()
            except (OSError, ValueError):
                return
            if hmac.compare_digest(_digest(bucket.key, data), expected):
                bucket.bytecode_from_string(data)

        def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
            path = Path(self._get_cache_filename(bucket))
            data = bucket.bytecode_to_string()
            with contextlib.suppress(OSError):
                _store_bytes(path, data)
                _store(path.with_suffix(".sha256"), _digest(bucket.key, data) + "\n")

    folder = cache_dir() / "jinja"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return VerifiedBytecodeCache(str(folder))
