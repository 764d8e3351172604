"""Downloads the base model into the storage when its directory lacks config.json (the train release's
GPU-less download Job, a Helm hook that runs before the preflight and the training).

Idempotent, once per model: a complete model (config.json present) is left alone; one this script
downloaded records its repository and revision (.lfk-download.json), and another revision asked for the
same folder is refused (exit 3) rather than mixed in. The download goes to `<dir>.download`
(resumable across restarts) and is renamed into place only when complete, so a half-downloaded model never
looks like a model. When several pods start at once (one per node), one of them takes a lock directory
beside the model (mkdir is atomic, on NFS too) and downloads; the others wait for config.json. A lock nobody
has touched for ten minutes is stale and taken over. Hugging Face by default; ModelScope with
USE_MODELSCOPE_HUB=1. The token comes from HF_TOKEN (a Secret reference), never from the values.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time

from podlib import EXIT, atomic_write

STALE_LOCK_SECONDS = 600
POLL_SECONDS = 15


def main(repo_id: str, revision: str, target: str) -> int:
    config = os.path.join(target, "config.json")
    lock = target.rstrip("/") + ".download.lock"
    os.makedirs(os.path.dirname(lock.rstrip("/")) or "/", exist_ok=True)
    while True:
        if os.path.isfile(config):
            return already_there(repo_id, revision, target)
        try:
            os.mkdir(lock)
            break
        except FileExistsError:
            try:
                idle = time.time() - os.path.getmtime(lock)
            except FileNotFoundError:
                continue
            if idle > STALE_LOCK_SECONDS:
                print(f"download: taking over {lock}, untouched for {idle:.0f} s")
                shutil.rmtree(lock, ignore_errors=True)
                continue
            print(f"download: another pod is downloading {repo_id}; waiting for {config}", flush=True)
            time.sleep(POLL_SECONDS)
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(60):
            os.utime(lock)

    threading.Thread(target=heartbeat, daemon=True).start()
    try:
        return download(repo_id, revision, target)
    finally:
        stop.set()
        shutil.rmtree(lock, ignore_errors=True)


RECORD = ".lfk-download.json"


def already_there(repo_id: str, revision: str, target: str) -> int:
    try:
        with open(os.path.join(target, RECORD), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        print(f"download: {target} already has config.json; nothing to do")
        return EXIT["ok"]
    if (record.get("repo"), record.get("revision")) != (repo_id, revision):
        print(
            f"download: {target} holds {record.get('repo')}@{record.get('revision')}, not {repo_id}@{revision}: "
            "give this revision a folder of its own (model.path)",
            file=sys.stderr,
        )
        return EXIT["configError"]
    print(f"download: {target} already holds {repo_id}@{revision}; nothing to do")
    return EXIT["ok"]


def download(repo_id: str, revision: str, target: str) -> int:
    partial = target.rstrip("/") + ".download"
    os.makedirs(partial, exist_ok=True)
    print(f"download: {repo_id}@{revision} -> {partial}")
    if os.environ.get("USE_MODELSCOPE_HUB", "0").lower() in ("1", "true", "y"):
        from modelscope import snapshot_download as ms_download

        ms_download(repo_id, revision=None if revision == "main" else revision, local_dir=partial)
    else:
        from huggingface_hub import snapshot_download

        snapshot_download(
            repo_id, revision=revision, local_dir=partial, token=os.environ.get("HF_TOKEN") or None
        )
    if not os.path.isfile(os.path.join(partial, "config.json")):
        print(f"download: {repo_id} has no config.json; is it a Hugging Face model?", file=sys.stderr)
        return EXIT["configError"]
    shutil.rmtree(os.path.join(partial, ".cache"), ignore_errors=True)
    atomic_write(os.path.join(partial, RECORD), json.dumps({"repo": repo_id, "revision": revision}))
    if os.path.isdir(target):  # an empty or stray directory: keep it aside rather than delete data
        os.replace(target, target.rstrip("/") + ".replaced")
    os.replace(partial, target)
    print(f"download: complete in {target}")
    return EXIT["ok"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3]))
