"""Sidecar of a shared vLLM (serve.sharedAdapters): keeps the adapters its replica has loaded equal to the
registry on the storage.

Other experiments' adapter Jobs (serve.source: shared) write one JSON file per adapter into the registry. Each
round this loads what is registered and not loaded (or loaded from another path) through vLLM's runtime LoRA
API (VLLM_ALLOW_RUNTIME_LORA_UPDATING), unloads what is loaded and no longer registered, and writes what it
sees to <registry>/.status/<pod>.json, which the adapter Jobs read. Every replica runs its own sidecar, so a
replica that restarts loads them all again. Only the standard library: it runs in the vLLM image.

Whoever can write the storage can write a registry file, so nothing in one is trusted: an entry has exactly the
keys adapter_share.py writes, each of its own shape; its adapter must resolve (symlinks followed) to a run's
folder inside its own experiment's folder under OUTPUT_ROOT; two entries claiming one name keep the one
registered first; a name the host serves itself is never taken. A refused entry is logged, never loaded, and
listed with why under `refused` in the status, where its adapter Job reads it.

Environment: REGISTRY, OUTPUT_ROOT (the storage's training output folder), VLLM_URL, STATIC_ADAPTERS (names
given by --lora-modules, never unloaded), SYNC_INTERVAL_SECONDS, VLLM_API_KEY, HOSTNAME.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from podlib import OUTPUT_ROOT, VLLM_PORT, atomic_write, read_regular

Registry = dict[str, dict[str, Any]]
Refusal = dict[str, Any]

# an entry is a handful of short strings: anything larger is not one
MAX_ENTRY_BYTES = 4096
# the spec's servedModelName, short enough for the entry's file name (quoted) to fit in 255 bytes
NAME = re.compile(r"[A-Za-z0-9][-A-Za-z0-9_.:/]{0,199}")
EXPERIMENT = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")  # the spec's name: a DNS label
RUN_ID = re.compile(r"[A-Za-z0-9._-]{0,64}")
REQUIRED = {"name", "path", "experiment", "registered"}
KEYS = REQUIRED | {"runId"}


def read_entry(path: Path) -> dict[str, Any]:
    """One registry file's entry, or ValueError saying why it is not one. Only a regular file is opened (a
    link, a FIFO or a device could point anywhere or block the sidecar), and no more than an entry's size."""
    data = read_regular(path, MAX_ENTRY_BYTES, "an entry")
    try:
        entry = json.loads(data)
    except ValueError as exc:  # UnicodeDecodeError too
        raise ValueError(f"not JSON: {exc}") from None
    check_entry(entry)
    return entry  # type: ignore[no-any-return]


def check_entry(entry: Any) -> None:
    """ValueError unless the entry has exactly the keys adapter_share.py writes, each of its shape."""
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    if unexpected := sorted(set(entry) - KEYS):
        raise ValueError(f"unexpected keys: {', '.join(map(str, unexpected))[:200]}")
    if missing := sorted(REQUIRED - set(entry)):
        raise ValueError(f"missing keys: {', '.join(missing)}")
    for key, pattern in (("name", NAME), ("experiment", EXPERIMENT), ("runId", RUN_ID)):
        value = entry.get(key, "")
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ValueError(f"{key} {json.dumps(value)[:80]} is not of the form {pattern.pattern}")
    if not isinstance(entry["path"], str):
        raise ValueError("path is not a string")
    when = entry["registered"]
    if isinstance(when, bool) or not isinstance(when, int | float) or not math.isfinite(when) or when <= 0:
        raise ValueError(f"registered {json.dumps(when)[:40]} is not a time")


def confine(path: str, experiment: str, root: str) -> str:
    """The folder an adapter path resolves to (`..` and symlinks followed), when that is a run's folder inside
    the experiment's own folder under root; else ValueError saying where it leads."""
    if not path.startswith("/"):
        raise ValueError(f"{path[:200]} is not an absolute path")
    real_root, real = os.path.realpath(root), os.path.realpath(path)  # ValueError on a NUL byte
    parts = os.path.relpath(real, real_root).split(os.sep)
    if parts[0] in (".", ".."):
        raise ValueError(f"{path[:200]} leads to {real[:200]}, not into the training output folder {root}")
    if parts[0] != experiment:
        raise ValueError(
            f"{path[:200]} leads into experiment {parts[0]}'s output folder, not into {experiment}'s"
        )
    if len(parts) < 2:
        raise ValueError(
            f"{path[:200]} is experiment {experiment}'s folder itself, not a run's adapter in it"
        )
    return real


def registered(
    registry: Path, root: str = OUTPUT_ROOT, reserved: set[str] | frozenset[str] = frozenset()
) -> tuple[Registry, list[Refusal]]:
    """(name -> entry of every accepted entry, its path resolved; the refused files, each with why). Of two
    entries claiming one name the one registered first is kept (then the first file name); a name in reserved
    (what the host serves itself) is refused."""
    candidates: list[tuple[float, str, dict[str, Any]]] = []
    refused: list[Refusal] = []

    def refuse(file: str, entry: Any, why: str) -> None:
        ok = isinstance(entry, dict) and isinstance(entry.get("name"), str) and NAME.fullmatch(entry["name"])
        refused.append({
            "file": file,
            "name": entry["name"] if ok else None,
            "registered": entry.get("registered") if ok else None,
            "error": why,
        })  # fmt: skip

    for path in sorted(registry.glob("*.json")):
        entry: Any = None
        try:
            entry = read_entry(path)
            real = confine(entry["path"], entry["experiment"], root)
        except FileNotFoundError:  # removed since the listing: gone next round too
            continue
        except (OSError, ValueError) as exc:
            refuse(path.name, entry, str(exc))
            continue
        candidates.append((float(entry["registered"]), path.name, {**entry, "path": real}))
    entries: Registry = {}
    files: dict[str, str] = {}
    for _, file, entry in sorted(candidates, key=lambda c: (c[0], c[1])):
        name = entry["name"]
        if name in reserved:
            refuse(file, entry, f"{name} is a name the host's vLLM serves itself")
        elif name in entries:
            first = entries[name]
            refuse(file, entry, f"the name {name} is already registered by {files[name]} "
                                f"(experiment {first['experiment']}), which was registered first")  # fmt: skip
        else:
            entries[name], files[name] = entry, file
    return entries, refused


def plan(
    wanted: dict[str, str], loaded: dict[str, str], static: set[str]
) -> tuple[list[tuple[str, str]], list[str]]:
    """(adapters to load as (name, path), names to unload), from name -> path of both sides."""
    load = [(n, p) for n, p in sorted(wanted.items()) if n not in static and loaded.get(n) != p]
    unload = [n for n in sorted(loaded) if n not in wanted and n not in static]
    return load, unload


def request(url: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if key := os.environ.get("VLLM_API_KEY"):
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, headers=headers, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=300) as response:  # a load reads the adapter from NFS
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def served_models(vllm: str) -> tuple[dict[str, str], set[str]]:
    """(name -> path of the adapters the server has loaded (the models with a parent), the names of the models
    it serves without one: its base model)."""
    code, text = request(f"{vllm}/v1/models")
    if code != 200:
        raise ConnectionError(f"GET /v1/models answered {code}: {text[:200]}")
    models = json.loads(text)["data"]
    adapters = {m["id"]: m.get("root", "") for m in models if m.get("parent")}
    return adapters, {m["id"] for m in models if not m.get("parent")}


def error_text(text: str) -> str:
    try:
        return str(json.loads(text)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return text.strip()[:500]


def write_status(
    folder: Path, pod: str, adapters: dict[str, dict[str, Any]], refused: list[Refusal] | None = None
) -> None:
    document = {"pod": pod, "time": time.time(), "adapters": adapters, "refused": refused or []}
    atomic_write(folder / f"{pod}.json", json.dumps(document))


class Sync:
    def __init__(self, registry: Path, vllm: str, static: set[str], pod: str, root: str = OUTPUT_ROOT):
        self.registry, self.vllm, self.static, self.pod, self.root = registry, vllm, static, pod, root
        # (name, path, registered) that vLLM refused: tried again only once the entry is written again
        self.refused: dict[tuple[str, str, float], str] = {}
        self.said: set[tuple[str, str]] = set()  # refused registry files already logged (file, why)

    def round(self) -> None:
        loaded, own = served_models(self.vllm)
        entries, refused = registered(self.registry, self.root, self.static | own)
        said = {(r["file"], r["error"]) for r in refused}
        for file, why in sorted(said - self.said):
            print(f"refused {file}: {why}", flush=True)
        self.said = said
        wanted = {n: str(e["path"]) for n, e in entries.items()}
        load, unload = plan(wanted, loaded, self.static)
        for name in unload:
            code, text = request(f"{self.vllm}/v1/unload_lora_adapter", {"lora_name": name})
            if code == 200:
                del loaded[name]
            print(
                f"unloaded {name}" if code == 200 else f"unload {name}: {code} {error_text(text)}", flush=True
            )
        for name, path in load:
            key = (name, path, float(entries[name]["registered"]))
            if key in self.refused:
                continue
            body = {"lora_name": name, "lora_path": path, "load_inplace": name in loaded}
            code, text = request(f"{self.vllm}/v1/load_lora_adapter", body)
            if code == 200:
                loaded[name] = path
                print(f"loaded {name} from {path}", flush=True)
            else:
                self.refused[key] = f"vLLM refused the adapter ({code}): {error_text(text)}"
                print(f"load {name} from {path}: {self.refused[key]}", flush=True)
            # after every load: a round of slow loads does not look like a replica that is gone
            write_status(self.registry / ".status", self.pod, self.status(entries, loaded), refused)
        # what vLLM answered this round (the next round's /v1/models corrects anything else)
        write_status(self.registry / ".status", self.pod, self.status(entries, loaded), refused)

    def status(self, entries: Registry, loaded: dict[str, str]) -> dict[str, dict[str, Any]]:
        """Per adapter, registered or still loaded: the registration it answers (its `registered` time, which
        the adapter Job matches), the path it is loaded from, and vLLM's refusal if any."""
        status: dict[str, dict[str, Any]] = {}
        for name in sorted((set(entries) | set(loaded)) - self.static):
            entry = entries.get(name)
            if entry is None:  # unregistered, and still loaded: the unload failed
                status[name] = {"registered": None, "path": loaded[name], "loaded": False, "error": None}
                continue
            key = (name, str(entry["path"]), float(entry["registered"]))
            status[name] = {
                "registered": entry["registered"],
                "path": loaded.get(name),
                "loaded": loaded.get(name) == key[1],
                "error": self.refused.get(key),
            }
        return status


def stop(signum: int, frame: Any) -> None:
    """SIGTERM ends the sidecar at once. As its container's first process it would otherwise ignore the signal
    (the kernel's rule for PID 1 without a handler), and every deleted replica would wait out its whole grace
    period (a minute) before the node gave its CPU and memory to the next one."""
    print("adapter-sync: stopping (SIGTERM)", flush=True)
    sys.exit(0)


def main() -> int:
    signal.signal(signal.SIGTERM, stop)
    registry = Path(os.environ["REGISTRY"])
    root = os.environ.get("OUTPUT_ROOT") or OUTPUT_ROOT
    vllm = os.environ.get("VLLM_URL", f"http://127.0.0.1:{VLLM_PORT}").rstrip("/")
    static = {n for n in os.environ.get("STATIC_ADAPTERS", "").split(",") if n}
    interval = float(os.environ.get("SYNC_INTERVAL_SECONDS", "5"))
    pod = os.environ.get("HOSTNAME") or socket.gethostname()
    sync = Sync(registry, vllm, static, pod, root)
    print(f"adapter-sync: {registry} -> {vllm} every {interval:g} s, adapters from {root}", flush=True)
    if not os.environ.get("VLLM_API_KEY"):
        print("warning: no VLLM_API_KEY: anyone who reaches vLLM's port can load adapters", flush=True)
    said = ""
    while True:
        try:
            sync.round()
            said = ""
        except Exception as exc:  # noqa: BLE001 - the sidecar never stops: its crash would take the pod out of service
            # vLLM still loading its model or restarting, the storage unwritable, an answer it cannot read
            why = (
                f"waiting for vLLM: {exc}"
                if isinstance(exc, OSError | ConnectionError)
                else f"round failed: {exc!r}"
            )
            if why != said:
                print(why, flush=True)
            said = why
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
