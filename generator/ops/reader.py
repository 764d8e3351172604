"""Reading the storage without mounting it here: a short-lived pod (no GPU, read-only, the experiment's own
image) mounts the claim, prints what was asked (the end of a file, a folder listing) and is deleted."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import watch
from ..core.contract import TOKENIZED_MARKER
from ..core.storage import STORAGE_ROOT
from ..errors import KubeError
from . import kube
from .target import Target

LINES = 2000  # the end of a file a reader pod prints


def claim_of(target: Target) -> str:
    return str(
        target.spec.data["storage"].get("existingClaim") or f"{target.facts.releases['train']}-storage"
    )


def reader_pod(target: Target, command: list[str], name: str) -> dict[str, Any]:
    """A pod that runs a read-only command over the storage (printing what it finds) and exits."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": target.namespace,
            "labels": {kube.INSTANCE: target.facts.releases["train"], kube.COMPONENT: "reader"},
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "read",
                    "image": target.spec.data["images"]["llamafactory"],
                    "command": command,
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "64Mi"},
                        "limits": {"cpu": "200m", "memory": "128Mi"},
                    },
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "storage", "mountPath": STORAGE_ROOT, "readOnly": True}],
                }
            ],  # fmt: skip
            "volumes": [
                {
                    "name": "storage",
                    "persistentVolumeClaim": {"claimName": claim_of(target), "readOnly": True},
                }
            ],
            # wherever the experiment's pods may run (the storage may be reachable only there)
            "tolerations": target.spec.data["resources"]["tolerations"],
        },
    }


def read_through_pod(
    target: Target, command: list[str], timeout: float = 120, lines: int = LINES
) -> str | None:
    """What `command` printed in a reader pod that is deleted afterwards; None if it failed."""
    name = f"{target.facts.releases['train']}-read-{int(time.time() * 1000) % 100000}"[:63]
    pods = f"/api/v1/namespaces/{target.namespace}/pods"
    kube.request(target.api, "POST", pods, json=reader_pod(target, command, name))
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            phase = kube.request(target.api, "GET", f"{pods}/{name}").get("status", {}).get("phase")
            if phase == "Succeeded":
                return kube.pod_log_tail(target.api, target.namespace, name, lines=lines)
            if phase == "Failed":
                return None
            time.sleep(1)
        return None
    finally:
        try:
            kube.request(target.api, "DELETE", f"{pods}/{name}")
        except KubeError as exc:
            if exc.status != 404:
                raise


def read_file(target: Target, storage_path: str) -> str | None:
    """A file of the storage through the local mount; None without a mount or without the file."""
    path = target.local_path(storage_path)
    if path is None or not path.is_file():
        return None
    return path.read_text(encoding="utf-8", errors="replace")


# `checkpoint-STEP MTIME BYTES` per checkpoint folder (core.watch.parse_checkpoints reads it); du -sk is in
# both coreutils and busybox
LIST_CHECKPOINTS = (
    'cd "$1" 2>/dev/null || exit 0; for d in checkpoint-*; do [ -d "$d" ] || continue; '
    'echo "$d $(stat -c %Y "$d") $(( $(du -sk "$d" | cut -f1) * 1024 ))"; done'
)
TRAINER_LOG = "trainer_log.jsonl"
# files/tokenize_once.py: the run's note of its tokenized set, and what the set was made from beside it
TOKENIZED_NOTE = TOKENIZED_MARKER
SCORES_MARK = "--- lfk: evaluation ---"
DATA_MARK = "--- lfk: data ---"
LISTING_MARK = "--- lfk: checkpoints ---"
# the end of the trainer's log, the evaluation gate's scores ($2, when there is one), what the tokenized set
# was made from (dataset files and their sha256), then the checkpoint listing (last: it leaves the shell when
# the output folder does not exist yet): all from one reader pod
READ_TRAINING = (
    f'[ -f "$1/{TRAINER_LOG}" ] && tail -n {LINES} "$1/{TRAINER_LOG}"; echo; echo "{SCORES_MARK}"; '
    f'[ -n "$2" ] && [ -f "$2" ] && cat "$2"; echo; echo "{DATA_MARK}"; '
    f'[ -f "$1/{TOKENIZED_NOTE}" ] && cat "$(cat "$1/{TOKENIZED_NOTE}").json"; echo; echo "{LISTING_MARK}"; '
    + LIST_CHECKPOINTS
)


@dataclass(frozen=True)
class TrainingFiles:
    """What a run's output folder holds for `lfk status`; None where it could not be read from here."""

    log: str | None
    listing: str | None
    scores: str | None
    data: str | None = None  # the tokenized set's inputs (JSON), when the run tokenized once


def local_checkpoints(folder: Path) -> str:
    """The checkpoint listing of a folder on this machine, as LIST_CHECKPOINTS prints it in a pod."""
    return "\n".join(
        watch.listing_line(
            d.name, d.stat().st_mtime, sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
        )
        for d in folder.glob("checkpoint-*")
        if d.is_dir()
    )


def read_training(
    target: Target, output_dir: str, from_cluster: bool, scores_file: str | None = None
) -> TrainingFiles:
    """The end of an output folder's trainer_log.jsonl, the evaluation scores and the checkpoint listing:
    through the local mount, else (from_cluster) one reader pod for all three."""
    folder = target.local_path(output_dir)
    if folder is not None:
        listing = local_checkpoints(folder) if folder.is_dir() else ""
        scores = read_file(target, scores_file) if scores_file else None
        note = read_file(target, f"{output_dir}/{TOKENIZED_NOTE}")
        data = read_file(target, f"{note.strip()}.json") if note else None
        return TrainingFiles(read_file(target, f"{output_dir}/{TRAINER_LOG}"), listing, scores, data)
    if not from_cluster:
        return TrainingFiles(None, None, None)
    # the scores, the data's inputs and the listing may follow up to LINES log lines
    command = ["sh", "-c", READ_TRAINING, "read", output_dir, scores_file or ""]
    text = read_through_pod(target, command, lines=3 * LINES + 100)
    if text is None:
        return TrainingFiles(None, None, None)
    log, _, rest = text.partition(SCORES_MARK)
    scores, _, rest = rest.partition(DATA_MARK)
    data, _, listing = rest.partition(LISTING_MARK)
    return TrainingFiles(log.strip("\n") or None, listing, scores.strip() or None, data.strip() or None)
