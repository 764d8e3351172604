"""LLaMA-Factory's bundled demo datasets (alpaca_en_demo, identity, dpo_en_demo, ...): the sets its own
examples train on, shipped in its source package's data/ folder (and in its Docker image at /app/data), not in
its wheel. Their dataset_info.json entries are kept here as spec entries (data.register), from a snapshot of the
pinned version's source package (`hack/snapshot-llamafactory.py --bundled`); `lfk import` registers the ones a
config names and `lfk data sync --bundled` copies their files from that package onto the storage."""

from __future__ import annotations

import functools
import json
import tarfile
from pathlib import Path
from typing import Any

from .lfinfo import DATA_DIR, MEDIA_COLUMNS, SNAPSHOT_VERSION

# a demo file is under 2 MB; anything far larger in the package is not one of these
MAX_FILE_BYTES = 64 * 2**20


def snapshot_path(version: str = SNAPSHOT_VERSION) -> Path:
    return DATA_DIR / f"llamafactory-{version}-datasets.json"


@functools.cache
def datasets(version: str = SNAPSHOT_VERSION) -> dict[str, dict[str, Any]]:
    """Bundled set name -> its data.register entry (file, format, ranking, columns, tags)."""
    path = snapshot_path(version)
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as f:
        found: dict[str, dict[str, Any]] = json.load(f)["datasets"]
    return found


def spec_entry_of(info_entry: dict[str, Any]) -> dict[str, Any]:
    """A dataset_info.json entry as a spec's data.register entry."""
    entry: dict[str, Any] = {
        "file": info_entry["file_name"],
        "format": info_entry.get("formatting", "alpaca"),
    }
    if info_entry.get("ranking"):
        entry["ranking"] = True
    for key in ("columns", "tags"):
        if info_entry.get(key):
            entry[key] = dict(info_entry[key])
    return entry


def _data_member(tar: tarfile.TarFile, relative: str) -> tarfile.TarInfo:
    """The package's data/<relative> (llamafactory-X/data/...): a regular file of sensible size; KeyError when
    the package has none."""
    parts = relative.split("/")
    if not relative or relative.startswith("/") or ".." in parts or "\\" in relative:
        raise KeyError(f"{relative!r} is not a path inside the package's data folder")
    for member in tar.getmembers():
        top, _, rest = member.name.partition("/")
        if top and rest == f"data/{relative}":
            if not member.isreg() or member.size > MAX_FILE_BYTES:
                raise KeyError(f"{member.name} is not a data file")
            return member
    raise KeyError(f"no data/{relative} in the package")


def media_files(data: bytes, entry: dict[str, Any]) -> list[str]:
    """The images, videos and audio files the rows of a bundled set name (relative to the data folder), in
    order, once each; empty for a set without media columns or rows that are not a JSON list."""
    columns = [entry.get("columns", {}).get(medium) for medium in MEDIA_COLUMNS]
    columns = [c for c in columns if c]
    if not columns:
        return []
    try:
        rows = json.loads(data)
    except ValueError:
        return []
    found: dict[str, None] = {}
    for row in rows if isinstance(rows, list) else []:
        for column in columns:
            value = row.get(column) if isinstance(row, dict) else None
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str) and item:
                    found[item] = None
    return list(found)


def from_source_package(sdist: Path) -> dict[str, dict[str, Any]]:
    """The bundled sets of a llamafactory source package: the entries of its data/dataset_info.json that name a
    file the package holds (the others download from a hub)."""
    with tarfile.open(sdist) as tar:
        info_member = _data_member(tar, "dataset_info.json")
        info = json.loads(tar.extractfile(info_member).read())  # type: ignore[union-attr]
        found = {}
        for name, entry in info.items():
            file_name = entry.get("file_name")
            if not isinstance(file_name, str) or "/" in file_name:
                continue
            try:
                _data_member(tar, file_name)
            except KeyError:
                continue
            found[name] = spec_entry_of(entry)
    return found


def read_file(sdist: Path, file_name: str) -> bytes:
    """The bytes of data/<file_name> in the source package; KeyError when it has none."""
    with tarfile.open(sdist) as tar:
        member = _data_member(tar, file_name)
        handle = tar.extractfile(member)
        if handle is None:
            raise KeyError(f"data/{file_name} cannot be read")
        return handle.read()
