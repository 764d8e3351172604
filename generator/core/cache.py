"""A per-user cache for work that only depends on the project's own files: compiled schema validators and
compiled Jinja templates. Keyed by content hash, so a changed schema or template is never served stale.
Everything here is an optimisation: when the cache cannot be written, the same work is done in memory."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
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


def _read_verified(cached: Path, key: str) -> str | None:
    """The cached code if it is exactly what was stored for this key: its digest, stored beside it, matches.
    A truncated, edited or foreign file gives None, and the code is generated afresh."""
    digest_file = cached.with_suffix(".sha256")
    if not (_trusted(cached) and _trusted(digest_file)):
        return None
    try:
        code = cached.read_text(encoding="utf-8")
        expected = digest_file.read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        return None
    return code if hmac.compare_digest(_digest(key, code), expected) else None


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
    code = _read_verified(cached, key)
    if code is None:
        code = fastjsonschema.compile_to_code(json.loads(text), use_default=False)
        with contextlib.suppress(OSError):
            _store(cached, code)
            _store(cached.with_suffix(".sha256"), _digest(key, code) + "\n")
    module = types.ModuleType(f"lfk_validator_{key}")
    exec(compile(code, str(cached), "exec"), module.__dict__)  # noqa: S102 - generated from our own schema, verified
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
