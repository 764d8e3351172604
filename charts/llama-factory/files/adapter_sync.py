"""Sidecar of a shared vLLM (serve.sharedAdapters): keeps the adapters its replica has loaded equal to the
registry on the storage.

Other experiments' adapter Jobs (serve.source: shared) write one JSON file per adapter into the registry. Each
round this loads what is registered and not loaded (or loaded from another path) through vLLM's runtime LoRA
API (VLLM_ALLOW_RUNTIME_LORA_UPDATING), unloads what is loaded and no longer registered, and writes what it
sees to <registry>/.status/<pod>.json, which the adapter Jobs read. Every replica runs its own sidecar, so a
replica that restarts loads them all again. Only the standard library: it runs in the vLLM image.

Environment: REGISTRY, VLLM_URL, STATIC_ADAPTERS (names given by --lora-modules, never unloaded),
SYNC_INTERVAL_SECONDS, VLLM_API_KEY (optional), HOSTNAME.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

Registry = dict[str, dict[str, Any]]


def registered(registry: Path) -> Registry:
    """name -> entry, for every well-formed entry (a file being replaced is read next round; a malformed one,
    written by hand, is left out rather than stopping the sidecar)."""
    entries: Registry = {}
    for path in sorted(registry.glob("*.json")):
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (
            isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and entry["name"]
            and isinstance(entry.get("path"), str)
            and entry["path"].startswith("/")
            and isinstance(entry.get("registered"), int | float)
        ):
            entries[entry["name"]] = entry
    return entries


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


def loaded_adapters(vllm: str) -> dict[str, str]:
    """name -> path of the adapters the server has loaded (the models with a parent)."""
    code, text = request(f"{vllm}/v1/models")
    if code != 200:
        raise ConnectionError(f"GET /v1/models answered {code}: {text[:200]}")
    return {m["id"]: m.get("root", "") for m in json.loads(text)["data"] if m.get("parent")}


def error_text(text: str) -> str:
    try:
        return str(json.loads(text)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return text.strip()[:500]


def write_status(folder: Path, pod: str, adapters: dict[str, dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{pod}.json.tmp"
    tmp.write_text(json.dumps({"pod": pod, "time": time.time(), "adapters": adapters}), encoding="utf-8")
    tmp.replace(folder / f"{pod}.json")


class Sync:
    def __init__(self, registry: Path, vllm: str, static: set[str], pod: str):
        self.registry, self.vllm, self.static, self.pod = registry, vllm, static, pod
        # (name, path, registered) that vLLM refused: tried again only once the entry is written again
        self.refused: dict[tuple[str, str, float], str] = {}

    def round(self) -> None:
        entries = registered(self.registry)
        wanted = {n: str(e["path"]) for n, e in entries.items()}
        loaded = loaded_adapters(self.vllm)
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
            write_status(self.registry / ".status", self.pod, self.status(entries, loaded))
        # what vLLM answered this round (the next round's /v1/models corrects anything else)
        write_status(self.registry / ".status", self.pod, self.status(entries, loaded))

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


def main() -> int:
    registry = Path(os.environ["REGISTRY"])
    vllm = os.environ.get("VLLM_URL", "http://127.0.0.1:8000").rstrip("/")
    static = {n for n in os.environ.get("STATIC_ADAPTERS", "").split(",") if n}
    interval = float(os.environ.get("SYNC_INTERVAL_SECONDS", "5"))
    pod = os.environ.get("HOSTNAME") or socket.gethostname()
    sync = Sync(registry, vllm, static, pod)
    print(f"adapter-sync: {registry} -> {vllm} every {interval:g} s", flush=True)
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
