"""Writing rendered values next to the spec: atomically, or only comparing (`--check`)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .components import NAMES
from .render import HEADER_MARK, Rendered


@dataclass
class WriteResult:
    written: list[Path] = field(default_factory=list)  # files whose content changed (or would change)
    removed: list[Path] = field(default_factory=list)  # generated files of components no longer enabled
    diffs: list[str] = field(default_factory=list)  # unified diffs, in check mode

    @property
    def stale(self) -> bool:
        return bool(self.written or self.removed)


def atomic_write(path: Path, text: str | bytes) -> None:
    """Replace path with text in one step. The new file keeps the old one's mode (or gets the usual 0644 less
    the umask): mkstemp's 0600 would lock the pods' user out of a file written on shared storage."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _generated_leftovers(out_dir: Path, rendered: list[Rendered]) -> list[Path]:
    keep = {r.component for r in rendered}
    leftovers = []
    for component in NAMES:
        path = out_dir / f"{component}.yaml"
        if component not in keep and (text := _read(path)) is not None and text.startswith(HEADER_MARK):
            leftovers.append(path)
    return leftovers


def write(rendered: list[Rendered], out_dir: Path, check: bool = False) -> WriteResult:
    """Write each release's values to ``out_dir/<component>.yaml``; with ``check``, only report differences.

    Everything was rendered and validated before this is called, so a failure cannot leave a mix of old and
    new files behind except through the filesystem itself; each file is replaced atomically.
    """
    result = WriteResult()
    for item in rendered:
        path = out_dir / f"{item.component}.yaml"
        current = _read(path)
        if current == item.text:
            continue
        result.written.append(path)
        if check:
            import difflib  # only when a committed file differs

            result.diffs.append(
                "".join(
                    difflib.unified_diff(
                        (current or "").splitlines(keepends=True),
                        item.text.splitlines(keepends=True),
                        fromfile=f"{path} (committed)",
                        tofile=f"{path} (rendered)",
                    )
                )
            )
    result.removed = _generated_leftovers(out_dir, rendered)
    if check:
        result.diffs += [
            f"{p}: generated for a component the spec no longer enables\n" for p in result.removed
        ]
        return result
    for item in rendered:
        path = out_dir / f"{item.component}.yaml"
        if path in result.written:
            atomic_write(path, item.text)
    for path in result.removed:
        path.unlink()
    return result
