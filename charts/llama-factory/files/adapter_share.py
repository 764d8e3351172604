"""An adapter shared through another experiment's vLLM (serve.source: shared).

register:   check that vLLM can load the adapter beside others (else exit 3: merge instead, and why; exit 1, which
            the Job retries, while the training has not written it), refuse a name another experiment has
            registered, write its entry into the host's registry (atomically), and wait until every running
            replica of the host has loaded this registration (their adapter-sync sidecars report in
            <registry>/.status/, naming the registration they saw).
unregister: remove the entry, when it is this experiment's (helm uninstall's pre-delete hook), and wait until no
            replica serves it (at most WAIT_SECONDS: an uninstall is never held).

Only the standard library: it runs in the vLLM image. Environment: ADAPTER_NAME, ADAPTER_PATH, REGISTRY,
MAX_LORA_RANK, EXPERIMENT, RUN_ID, WAIT_SECONDS, STATUS_FRESH_SECONDS.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

CANNOT_SHARE = 3  # the Job's podFailurePolicy fails at once: a retry would find the same adapter
MERGE_INSTEAD = "merge instead: serve it with serve.source: merged (a vLLM of its own)"
# modules vLLM's LoRA layers do not replace: their trained copies would be dropped
EMBEDDINGS = ("embed_tokens", "lm_head", "wte", "word_embeddings", "embed_out")


def safetensors_names(path: Path) -> list[str]:
    """Tensor names in a .safetensors file, from its JSON header (8-byte little-endian length, then JSON)."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header: dict[str, Any] = json.loads(f.read(length))
    return [k for k in header if k != "__metadata__"]


def problems(adapter: Path, max_rank: int) -> list[str]:
    """Why vLLM cannot load this adapter at run time (empty: it can)."""
    config_file = adapter / "adapter_config.json"
    if not config_file.is_file():
        return [f"no adapter_config.json in {adapter}: the training has not written its adapter"]
    config = json.loads(config_file.read_text(encoding="utf-8"))
    found = []
    if config.get("peft_type", "LORA") != "LORA":
        found.append(f"a {config['peft_type']} adapter: vLLM loads LoRA adapters only")
    rank = int(config.get("r", 0))
    if rank > max_rank:
        found.append(f"rank {rank} is above the host's --max-lora-rank {max_rank}")
    if config.get("modules_to_save"):
        found.append(f"whole modules trained beside it (modules_to_save: {config['modules_to_save']})")
    if config.get("use_dora"):
        found.append("a DoRA adapter, which vLLM does not serve")
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else targets
    if embedded := sorted(t for t in targets if t.split(".")[-1] in EMBEDDINGS):
        found.append(f"LoRA on the embeddings ({', '.join(embedded)}): vLLM loads LoRA on linear layers only")
    weights = adapter / "adapter_model.safetensors"
    if weights.is_file():
        names = safetensors_names(weights)
        if any(part in EMBEDDINGS for n in names for part in n.split(".") if "lora_" not in n):
            found.append("trained embedding or output weights (a resized vocabulary)")
    elif not (adapter / "adapter_model.bin").is_file():
        found.append(f"no adapter weights in {adapter}")
    return found


def statuses(registry: Path, fresh_seconds: float) -> list[dict[str, Any]]:
    """What each host replica's sidecar reported lately (older files are replicas that are gone)."""
    found = []
    now = time.time()
    for path in sorted((registry / ".status").glob("*.json")):
        try:
            status = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if now - float(status.get("time", 0)) <= fresh_seconds:
            found.append(status)
    return found


def write_entry(registry: Path, entry: dict[str, Any]) -> Path:
    registry.mkdir(parents=True, exist_ok=True)
    target = entry_file(registry, entry["name"])
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(entry, indent=1), encoding="utf-8")
    tmp.replace(target)
    return target


def entry_file(registry: Path, name: str) -> Path:
    """A served name may hold `/` or `:`: the file is named after it quoted (the sidecar reads the name inside)."""
    return registry / f"{urllib.parse.quote(name, safe='')}.json"


def entry_of(registry: Path, name: str) -> dict[str, Any] | None:
    try:
        entry: dict[str, Any] = json.loads(entry_file(registry, name).read_text(encoding="utf-8"))
        return entry
    except (OSError, ValueError):
        return None


def register(env: dict[str, str]) -> int:
    name, adapter, registry = env["ADAPTER_NAME"], Path(env["ADAPTER_PATH"]), Path(env["REGISTRY"])
    experiment = env.get("EXPERIMENT", "")
    if not (adapter / "adapter_config.json").is_file():  # not (yet) there: a retry may find it
        print(f"no adapter_config.json in {adapter}: has the training finished?", flush=True)
        return 1
    found = problems(adapter, int(env["MAX_LORA_RANK"]))
    if found:
        for problem in found:
            print(f"cannot share {adapter}: {problem}", flush=True)
        print(MERGE_INSTEAD, flush=True)
        return CANNOT_SHARE
    other = entry_of(registry, name)
    if other and other.get("experiment") not in (experiment, None):
        print(f"cannot share {adapter}: the name {name} is registered by experiment {other['experiment']}; "
              "give this one another serve.servedModelName", flush=True)  # fmt: skip
        return CANNOT_SHARE
    entry = {"name": name, "path": str(adapter), "experiment": experiment, "runId": env.get("RUN_ID", ""),
             "registered": time.time()}  # fmt: skip
    target = write_entry(registry, entry)
    print(f"registered {name} -> {adapter} in {target}", flush=True)
    deadline = time.monotonic() + float(env.get("WAIT_SECONDS", "600"))
    fresh = float(env.get("STATUS_FRESH_SECONDS", "30"))
    while time.monotonic() < deadline:
        replicas = statuses(registry, fresh)
        # what each replica says about this registration (a status of an earlier one does not count)
        mine = [
            m if (m := s["adapters"].get(name) or {}).get("registered") == entry["registered"] else {}
            for s in replicas
        ]
        if refused := next((m["error"] for m in mine if m.get("error")), None):
            if (entry_of(registry, name) or {}).get("registered") == entry["registered"]:
                target.unlink(missing_ok=True)  # never left registered: every replica would try it again
            print(f"cannot share {adapter}: {refused}", flush=True)
            print(MERGE_INSTEAD, flush=True)
            return CANNOT_SHARE
        if mine and all(m.get("loaded") for m in mine):
            pods = ", ".join(s["pod"] for s in replicas)
            print(f"{name} is loaded on every running replica ({pods})", flush=True)
            return 0
        time.sleep(2)
    print(
        f"no running replica of the host loaded {name} within {env.get('WAIT_SECONDS', '600')} s "
        f"(is the host's vLLM running, with serve.sharedAdapters? its sidecars report in {registry}/.status)",
        flush=True,
    )
    return 1


def unregister(env: dict[str, str]) -> int:
    name, registry = env["ADAPTER_NAME"], Path(env["REGISTRY"])
    entry = entry_of(registry, name)
    if entry and entry.get("experiment") not in (env.get("EXPERIMENT", ""), None):
        print(
            f"{name} is registered by experiment {entry['experiment']}, not this one: left as it is",
            flush=True,
        )
        return 0
    entry_file(registry, name).unlink(missing_ok=True)
    removed = time.time()
    print(f"unregistered {name} from {registry}", flush=True)
    deadline = time.monotonic() + float(env.get("WAIT_SECONDS", "120"))
    fresh = float(env.get("STATUS_FRESH_SECONDS", "30"))
    while time.monotonic() < deadline:
        replicas = statuses(registry, fresh)
        if not replicas:
            print("no replica of the host is running: nothing to unload", flush=True)
            return 0
        current = [s for s in replicas if s.get("time", 0) > removed]
        if current and len(current) == len(replicas) and not any(name in s["adapters"] for s in current):
            print(f"{name} is unloaded from every running replica", flush=True)
            return 0
        time.sleep(2)
    print(
        f"warning: a replica of the host still lists {name}; its sidecar unloads it when it runs", flush=True
    )
    return 0  # never hold an uninstall: the entry is gone, so every sidecar unloads it


def main(argv: list[str]) -> int:
    if argv[1:] == ["register"]:
        return register(dict(os.environ))
    if argv[1:] == ["unregister"]:
        return unregister(dict(os.environ))
    print("usage: adapter_share.py register|unregister", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
