"""What the pods' scripts share: the contract (contract.json beside this file, which the generator and the
chart's templates read too) and the few helpers every script would otherwise write again: a file written
whole or not at all, a bounded read of a file someone else may have written, a safetensors header.

Standard library only and Python 3.9+: it runs in every image the chart uses (LLaMA-Factory, vLLM, plain
Python). The scripts import it from their own folder (/scripts in the pods). Run as a program it prints one
contract value, for the shell scripts:

    python3 podlib.py exitCodes.gpuOutOfMemory     -> 4
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

CONTRACT: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parent / "contract.json").read_text(encoding="utf-8")
)
EXIT: dict[str, int] = {name: int(code) for name, code in CONTRACT["exitCodes"].items()}
STORAGE: dict[str, str] = dict(CONTRACT["storage"])
OUTPUT_ROOT: str = STORAGE["output"]
TOKENIZED_MARKER: str = CONTRACT["files"]["tokenizedMarker"]
MIN_SIZE_RATIO: float = float(CONTRACT["merge"]["minSizeRatio"])
MAX_SIZE_RATIO: float = float(CONTRACT["merge"]["maxSizeRatio"])
VLLM_PORT: int = int(CONTRACT["ports"]["vllm"])
# the safetensors format's own limit on its JSON header
MAX_SAFETENSORS_HEADER = 100 << 20


def contract_value(dotted: str) -> Any:
    """A contract value by its dotted key (`merge.minSizeRatio`); KeyError naming the key when absent."""
    value: Any = CONTRACT
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"{dotted} is not in contract.json")
        value = value[part]
    return value


def atomic_write(path: str | os.PathLike[str], data: str | bytes, mode: int = 0o644) -> None:
    """Write path whole or not at all: a new temporary file of a random name in the same folder (never opened
    through a link left in its place), flushed to disk, then renamed over path. Readers see the old file or the
    new one; a failure leaves the old one and no temporary file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes it 0600: other pods (other users) read these files
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_regular(path: str | os.PathLike[str], limit: int, what: str = "the file") -> bytes:
    """The bytes of a file someone else may have written: a regular file only (a link, a FIFO or a device
    could point anywhere or block), and no more than limit bytes; else ValueError saying why (OSError when it
    cannot be opened)."""
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("not a regular file (a link, a folder or a device)")
    if info.st_size > limit:
        raise ValueError(f"{info.st_size} bytes: {what} has at most {limit}")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"more than {limit} bytes: {what} has at most {limit}")
    return data


def safetensors_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The tensors of a .safetensors file (name -> dtype, shape, offsets) from its header (8-byte
    little-endian length, then JSON), without reading the weights; ValueError when it is not one."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{Path(path).name}: too short for a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length > MAX_SAFETENSORS_HEADER:
            raise ValueError(f"{Path(path).name}: a header of {length} bytes is not a safetensors header")
        header = json.loads(f.read(length))  # ValueError (UnicodeDecodeError too) on a broken one
    if not isinstance(header, dict):
        raise ValueError(f"{Path(path).name}: its header is not a JSON object")
    header.pop("__metadata__", None)
    return header


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: podlib.py KEY (a dotted contract key, e.g. exitCodes.configError)", file=sys.stderr)
        return EXIT["usage"]
    try:
        value = contract_value(argv[0])
    except KeyError as exc:
        print(f"podlib: {exc.args[0]}", file=sys.stderr)
        return EXIT["usage"]
    print(value if isinstance(value, str) else json.dumps(value))
    return EXIT["ok"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
