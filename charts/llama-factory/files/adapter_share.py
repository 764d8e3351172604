"""An adapter shared through another experiment's vLLM (serve.source: shared).

register:   check that vLLM can load the adapter beside others (else exit 3: merge instead, and why; exit 1, which
            the Job retries, while the training has not written it), refuse a name another experiment has
            registered, write its entry into the host's registry (atomically), and wait until every running
            replica of the host has loaded this registration (their adapter-sync sidecars report in
            <registry>/.status/, naming the registration they saw).
unregister: remove the entry, when it is this experiment's (helm uninstall's pre-delete hook), and wait until no
            replica serves it (at most WAIT_SECONDS: an uninstall is never held).

Its inputs are held to what the host's sidecar accepts (adapter_sync.py), so a registration it would refuse
fails here at once, with why: a served name of the spec's form, the experiment's name, an adapter folder
that resolves to a run's folder in this experiment's own folder under OUTPUT_ROOT. What it reads from the
storage (another entry, the sidecars' reports) is read as untrusted: regular files of bounded size and shape.

Only the standard library: it runs in the vLLM image. Environment: ADAPTER_NAME, ADAPTER_PATH, REGISTRY,
OUTPUT_ROOT, MAX_LORA_RANK, EXPERIMENT, RUN_ID, WAIT_SECONDS, STATUS_FRESH_SECONDS.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

# the sidecar's own rules (beside this script in /scripts): an entry it would refuse is never written
from adapter_sync import EXPERIMENT, MAX_ENTRY_BYTES, NAME, RUN_ID, confine
from podlib import EXIT, OUTPUT_ROOT, atomic_write, read_regular, safetensors_header

# the Job's podFailurePolicy fails at once: a retry would find the same adapter
CANNOT_SHARE = EXIT["configError"]
MERGE_INSTEAD = "merge instead: serve it with serve.source: merged (a vLLM of its own)"
# modules vLLM's LoRA layers do not replace: their trained copies would be dropped
EMBEDDINGS = ("embed_tokens", "lm_head", "wte", "word_embeddings", "embed_out")
MAX_STATUS_BYTES = 1 << 20  # one replica's report: a few hundred bytes per adapter
MAX_CONFIG_BYTES = 1 << 20


def read_json(path: Path, limit: int) -> Any:
    """A JSON file someone else may have written: a regular file (not a link, a FIFO or a device) of at most
    limit bytes; else ValueError (OSError when it is not there)."""
    try:
        data = read_regular(path, limit)
    except ValueError as exc:
        raise ValueError(f"{path.name}: {exc}") from None
    return json.loads(data)


def input_problems(env: dict[str, str]) -> list[str]:
    """Why the host's sidecar would refuse this registration (empty: it would take it)."""
    found = []
    for key, pattern in (("ADAPTER_NAME", NAME), ("EXPERIMENT", EXPERIMENT), ("RUN_ID", RUN_ID)):
        if not pattern.fullmatch(env.get(key, "")):
            found.append(f"{key} {env.get(key, '')[:80]!r} is not of the form {pattern.pattern}")
    if not found:
        try:
            confine(env["ADAPTER_PATH"], env["EXPERIMENT"], env.get("OUTPUT_ROOT") or OUTPUT_ROOT)
        except ValueError as exc:
            found.append(f"the adapter folder {exc}")
    return found


def safetensors_names(path: Path) -> list[str]:
    """Tensor names in a .safetensors file, from its JSON header."""
    return list(safetensors_header(path))


def problems(adapter: Path, max_rank: int) -> list[str]:
    """Why vLLM cannot load this adapter at run time (empty: it can)."""
    config_file = adapter / "adapter_config.json"
    if not config_file.is_file():
        return [f"no adapter_config.json in {adapter}: the training has not written its adapter"]
    try:
        config = read_json(config_file, MAX_CONFIG_BYTES)
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        return [f"an unreadable adapter_config.json in {adapter}: {exc}"]
    found = []
    if config.get("peft_type", "LORA") != "LORA":
        found.append(f"a {config['peft_type']} adapter: vLLM loads LoRA adapters only")
    rank = config.get("r", 0)
    if isinstance(rank, bool) or not isinstance(rank, int):
        return [f"adapter_config.json gives the rank r as {json.dumps(rank)[:40]}, not a whole number"]
    if rank > max_rank:
        found.append(f"rank {rank} is above the host's --max-lora-rank {max_rank}")
    if config.get("modules_to_save"):
        found.append(f"whole modules trained beside it (modules_to_save: {config['modules_to_save']})")
    if config.get("use_dora"):
        found.append("a DoRA adapter, which vLLM does not serve")
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else targets if isinstance(targets, list) else []
    targets = [t for t in targets if isinstance(t, str)]
    if embedded := sorted(t for t in targets if t.split(".")[-1] in EMBEDDINGS):
        found.append(f"LoRA on the embeddings ({', '.join(embedded)}): vLLM loads LoRA on linear layers only")
    weights = adapter / "adapter_model.safetensors"
    if weights.is_file():
        try:
            names = safetensors_names(weights)
        except (OSError, ValueError, struct.error) as exc:
            return [*found, f"unreadable adapter weights: {exc}"]
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
            status = read_json(path, MAX_STATUS_BYTES)
        except (OSError, ValueError):
            continue
        if not (  # a report of another shape is not a sidecar's
            isinstance(status, dict)
            and isinstance(status.get("pod"), str)
            and isinstance(status.get("time"), int | float)
            and math.isfinite(status["time"])
            and isinstance(status.get("adapters"), dict)
            and all(isinstance(a, dict) for a in status["adapters"].values())
            and isinstance(status.get("refused", []), list)
            and all(isinstance(r, dict) for r in status.get("refused", []))
        ):
            continue
        if now - float(status["time"]) <= fresh_seconds:
            found.append(status)
    return found


def refusal(status: dict[str, Any], name: str, registered: float) -> str | None:
    """Why a replica refused this registration: vLLM refused to load it, or the sidecar refused its entry."""
    mine = status["adapters"].get(name) or {}
    if mine.get("registered") == registered and mine.get("error"):
        return str(mine["error"])
    for refused in status.get("refused", []):
        if refused.get("name") == name and refused.get("registered") == registered:
            return f"the host refused the registration: {refused.get('error')}"
    return None


def write_entry(registry: Path, entry: dict[str, Any]) -> Path:
    target = entry_file(registry, entry["name"])
    atomic_write(target, json.dumps(entry, indent=1))
    return target


def entry_file(registry: Path, name: str) -> Path:
    """A served name may hold `/` or `:`: the file is named after it quoted (the sidecar reads the name inside)."""
    return registry / f"{urllib.parse.quote(name, safe='')}.json"


def entry_of(registry: Path, name: str) -> dict[str, Any] | None:
    try:
        entry = read_json(entry_file(registry, name), MAX_ENTRY_BYTES)
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) else None


def register(env: dict[str, str]) -> int:
    name, adapter, registry = env["ADAPTER_NAME"], Path(env["ADAPTER_PATH"]), Path(env["REGISTRY"])
    experiment = env.get("EXPERIMENT", "")
    if found := input_problems(env):  # the same values again would be refused again: no retry
        for problem in found:
            print(f"cannot register {name[:200]!r}: {problem}", flush=True)
        return CANNOT_SHARE
    if not (adapter / "adapter_config.json").is_file():  # not (yet) there: a retry may find it
        print(f"no adapter_config.json in {adapter}: has the training finished?", flush=True)
        return EXIT["failed"]
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
    entry: dict[str, Any] = {"name": name, "path": str(adapter), "experiment": experiment,
                             "runId": env.get("RUN_ID", ""), "registered": time.time()}  # fmt: skip
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
        if refused := next(filter(None, (refusal(s, name, entry["registered"]) for s in replicas)), None):
            if (entry_of(registry, name) or {}).get("registered") == entry["registered"]:
                target.unlink(missing_ok=True)  # never left registered: every replica would try it again
            print(f"cannot share {adapter}: {refused}", flush=True)
            print(MERGE_INSTEAD, flush=True)
            return CANNOT_SHARE
        if mine and all(m.get("loaded") for m in mine):
            pods = ", ".join(s["pod"] for s in replicas)
            print(f"{name} is loaded on every running replica ({pods})", flush=True)
            return EXIT["ok"]
        time.sleep(2)
    print(
        f"no running replica of the host loaded {name} within {env.get('WAIT_SECONDS', '600')} s "
        f"(is the host's vLLM running, with serve.sharedAdapters? its sidecars report in {registry}/.status)",
        flush=True,
    )
    return EXIT["failed"]


def unregister(env: dict[str, str]) -> int:
    name, registry = env["ADAPTER_NAME"], Path(env["REGISTRY"])
    entry = entry_of(registry, name)
    if entry and entry.get("experiment") not in (env.get("EXPERIMENT", ""), None):
        print(
            f"{name} is registered by experiment {entry['experiment']}, not this one: left as it is",
            flush=True,
        )
        return EXIT["ok"]
    entry_file(registry, name).unlink(missing_ok=True)
    removed = time.time()
    print(f"unregistered {name} from {registry}", flush=True)
    deadline = time.monotonic() + float(env.get("WAIT_SECONDS", "120"))
    fresh = float(env.get("STATUS_FRESH_SECONDS", "30"))
    while time.monotonic() < deadline:
        replicas = statuses(registry, fresh)
        if not replicas:
            print("no replica of the host is running: nothing to unload", flush=True)
            return EXIT["ok"]
        current = [s for s in replicas if s.get("time", 0) > removed]
        if current and len(current) == len(replicas) and not any(name in s["adapters"] for s in current):
            print(f"{name} is unloaded from every running replica", flush=True)
            return EXIT["ok"]
        time.sleep(2)
    print(
        f"warning: a replica of the host still lists {name}; its sidecar unloads it when it runs", flush=True
    )
    return EXIT["ok"]  # never hold an uninstall: the entry is gone, so every sidecar unloads it


def main(argv: list[str]) -> int:
    if argv[1:] == ["register"]:
        return register(dict(os.environ))
    if argv[1:] == ["unregister"]:
        return unregister(dict(os.environ))
    print("usage: adapter_share.py register|unregister", file=sys.stderr)
    return EXIT["usage"]


if __name__ == "__main__":
    sys.exit(main(sys.argv))
