"""A bounded load on an OpenAI-compatible endpoint, run inside a pod (standard library only).

    python3 load_client.py URL MODEL REQUESTS CONCURRENCY

Sends exactly REQUESTS chat completions, at most CONCURRENCY at a time, each on a fresh connection (as a
client that does not keep connections alive would: a kept-alive connection stays pinned to one pod whatever
the Service's endpoints become). Prints one JSON line per request (`{"i", "start", "end", "ok", "error"}`,
wall-clock seconds, so the caller can compare them with when it deleted a pod on the same machine), then
`LOAD DONE`. Bounded in count and time: every request times out after 60 s.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.request

TIMEOUT_S = 60


def one_request(url: str, model: str, api_key: str) -> str:
    """'' when the answer is a chat completion with content, else what went wrong."""
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}
    ).encode()
    headers = {"Content-Type": "application/json", "Connection": "close"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(f"{url}/v1/chat/completions", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            answer = json.load(response)
    except Exception as exc:  # noqa: BLE001 - every failure is a lost request, named in the output
        return f"{type(exc).__name__}: {exc}"
    if answer.get("object") != "chat.completion" or not answer.get("choices"):
        return f"not a chat completion: {str(answer)[:200]}"
    return ""


def main() -> int:
    url, model, total, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    api_key = os.environ.get("API_KEY", "")
    lock = threading.Lock()
    next_index = [0]

    def worker() -> None:
        while True:
            with lock:
                if next_index[0] >= total:
                    return
                index = next_index[0]
                next_index[0] += 1
            start = time.time()
            error = one_request(url, model, api_key)
            line = {"i": index, "start": start, "end": time.time(), "ok": not error, "error": error}
            with lock:
                print(json.dumps(line), flush=True)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("LOAD DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
