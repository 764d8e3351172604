#!/usr/bin/env python3
"""The real node's figures: `lfk cluster up` with the real node to a Ready node, and the tiny-cpu example
end to end (its data tokenized once, train, preempted after its first checkpoint by an eviction, resumed,
merged, scored by the evaluation gate, served by vLLM on CPU, answering), each step timed from `lfk run`'s own
progress lines; vLLM at two replicas under a bounded load with one replica deleted (requests, failures,
latency percentiles); then a second experiment's adapter loaded into that vLLM (serve.source: shared) and unloaded.
A benchmark, not a test: it prints.

    .venv/bin/python hack/bench-node.py          (make bench-node; needs root, make node-tools images)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator.cluster import lifecycle, nodes, storage  # noqa: E402
from generator.cluster.state import State  # noqa: E402
from generator.core.facts import derive  # noqa: E402
from generator.core.spec import load_spec  # noqa: E402
from generator.core.storage import local  # noqa: E402
from generator.ops import kube  # noqa: E402
from generator.project import CHART_DIR, helm_binary  # noqa: E402
from tests.node.conftest import as_guest_of_tiny_cpu, as_shared_host, variant  # noqa: E402
from tests.support import serving_load, tiny  # noqa: E402

TINY = ROOT / "values" / "tiny-cpu" / "experiment.yaml"
HELM_TEST = "helm test (a chat completion from a pod through the Service, the prompts compared)"
FIRST_ANSWER_TARGET_S = 150
LFK = str(Path(sys.executable).parent / "lfk")


def evict_after_first_checkpoint(
    api: object, output: Path, release: str, namespace: str, found: dict[str, float]
) -> None:
    """Evict the training pod through the API once its first checkpoint is complete."""
    while True:
        if any((p / "trainer_state.json").is_file() for p in output.glob("checkpoint-*")):
            for pod in kube.pods(api, namespace, {kube.INSTANCE: release, kube.COMPONENT: "train"}):
                if pod["status"].get("phase") == "Running":
                    name = pod["metadata"]["name"]
                    kube.request(api, "POST", f"/api/v1/namespaces/{namespace}/pods/{name}/eviction", json={
                        "apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace},
                        "deleteOptions": {"gracePeriodSeconds": 1},
                    })  # fmt: skip
                    found["evicted"] = time.monotonic()
                    return
        time.sleep(0.05)


def watch_hooks(api: object, release: str, namespace: str, seen: dict[str, list[float]]) -> None:
    """When each of the train release's hook pods (preflight, tokenize) was first and last seen: hook pods are
    deleted once they succeed, so their own timestamps do not outlive them."""
    while True:
        now = time.monotonic()
        for hook in ("train-preflight", "train-tokenize"):
            try:
                found = kube.pods(api, namespace, {kube.INSTANCE: release, kube.COMPONENT: hook})
            except Exception:  # noqa: BLE001 - the cluster is going down at the end of the benchmark
                return
            if found:
                seen.setdefault(hook, [now, now])[1] = now
        time.sleep(0.2)


def timed_run(
    argv: list[str], env: dict[str, str], steps: tuple[tuple[str, str], ...]
) -> list[tuple[str, float]] | None:
    """Run an lfk command, echoing it; the time from its start (or the step before) to the first line matching
    each step's pattern. None when it fails."""
    start = time.monotonic()
    run = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    assert run.stdout is not None
    marks: dict[str, float] = {}
    for line in run.stdout:
        print(line, end="", flush=True)
        for step, pattern in steps:
            if step not in marks and re.search(pattern, line):
                marks[step] = time.monotonic()
    if run.wait() != 0:
        print(f"{' '.join(argv[1:3])} failed")
        return None
    figures, previous = [], start
    for step, at in marks.items():
        figures.append((step, at - previous))
        previous = at
    return figures


def shared_adapters(state: State, env: dict[str, str]) -> list[tuple[str, float]] | None:
    """Many adapters on one vLLM: tiny-cpu's vLLM becomes a shared host, a second experiment trains and has
    its adapter loaded into it (no vLLM of its own), then is uninstalled (unloaded)."""
    folder = Path(tempfile.mkdtemp(prefix="lfk-bench-shared-"))
    namespace = derive(load_spec(TINY)).namespace
    kube.request(state.api(), "POST", f"/api/v1/namespaces/{namespace}/secrets", json={
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tiny-api-key"}, "stringData": {"token": "bench"},
    })  # fmt: skip
    host, guest = (
        variant(folder, "tiny-cpu", as_shared_host),
        variant(folder, "tiny-guest", as_guest_of_tiny_cpu),
    )
    figures = timed_run([LFK, "run", str(host), "--components", "vllm"], env, (
        ("shared host: vLLM restarted with runtime LoRA loading and its sidecar", r"^vllm: deployment \S+ available"),
        ("  its helm test", r"^vllm: helm test passed"),
    ))  # fmt: skip
    # the 2-core node holds vLLM and the guest's training only without LlamaBoard
    helm = [helm_binary(), "--kubeconfig", str(state.kubeconfig), "-n", namespace]
    subprocess.run([*helm, "uninstall", "tiny-cpu-webui", "--wait"], check=True, capture_output=True)
    guest_steps = timed_run([LFK, "run", str(guest)], env, (
        ("guest: training (6 steps, preflight hook)", r"^train: job \S+ complete"),
        ("guest: adapter Job (checks, registers, every replica loaded it)", r"^adapter: job \S+ complete"),
        ("guest: helm test under its own name through the host's Service", r"^adapter: helm test passed"),
    ))  # fmt: skip
    if figures is None or guest_steps is None:
        return None
    start = time.monotonic()
    subprocess.run([*helm, "uninstall", "tiny-guest-adapter", "--wait"], check=True, capture_output=True)
    return [
        *figures,
        *guest_steps,
        ("guest: helm uninstall (unregistered, unloaded)", time.monotonic() - start),
    ]


def served_under_a_killed_replica(state: State, facts: Any) -> tuple[str, float]:
    """tiny-cpu's vLLM at two replicas, a bounded load through its Service from a pod, one replica deleted
    in the middle (tests/support/serving_load.py); the figures, and back to one replica."""
    helm = [helm_binary(), "--kubeconfig", str(state.kubeconfig), "-n", facts.namespace]
    values = str(TINY.parent / "vllm.yaml")
    release = facts.releases["vllm"]
    spec = load_spec(TINY).data
    placement = {
        "nodeSelector": spec["resources"]["nodeSelector"],
        "tolerations": spec["resources"]["tolerations"],
    }
    start = time.monotonic()
    subprocess.run([*helm, "upgrade", release, str(CHART_DIR), "-f", values, "--set", "vllm.replicas=2",
                    "--set", "vllm.resources.requests.cpu=300m", "--set", "vllm.resources.requests.memory=2Gi",
                    "--wait", "--timeout", "600s"], check=True, capture_output=True)  # fmt: skip
    try:
        # helm's --wait counts a Deployment ready at replicas - maxUnavailable: wait for both replicas
        while kube.deployment(state.api(), facts.namespace, release)["status"].get("readyReplicas") != 2:
            time.sleep(1)
        figures = serving_load.run_with_a_replica_killed(
            state.api(), facts.namespace, release, facts.served_name, spec["images"]["vllm"], placement
        )
    finally:
        subprocess.run([*helm, "upgrade", release, str(CHART_DIR), "-f", values, "--wait", "--timeout", "600s"],
                       check=True, capture_output=True)  # fmt: skip
    return figures.summary(), time.monotonic() - start


def main() -> int:
    facts = derive(load_spec(TINY))
    notes: list[str] = []
    directory = Path(tempfile.mkdtemp(prefix="lfk-bench-node-"))
    figures: list[tuple[str, float]] = []
    try:
        start = time.monotonic()
        state, _ = lifecycle.up(directory, nodes.default_nodes(1), real_node=True, report=print)
        figures.append(
            (
                "lfk cluster up with the real node, to a Ready node (images already imported)",
                time.monotonic() - start,
            )
        )
        root = storage.folder(state, storage.DEFAULT_NAMESPACE)
        start = time.monotonic()
        tiny.prepare(root)
        figures.append(("tiny model and dataset onto the storage", time.monotonic() - start))

        found: dict[str, float] = {}
        output = local(root, facts.output_dir)
        watcher = threading.Thread(
            target=evict_after_first_checkpoint,
            args=(state.api(), output, facts.releases["train"], facts.namespace, found),
            daemon=True,
        )
        watcher.start()
        hooks: dict[str, list[float]] = {}
        threading.Thread(
            target=watch_hooks,
            args=(state.api(), facts.releases["train"], facts.namespace, hooks),
            daemon=True,
        ).start()
        env = {**os.environ, "KUBECONFIG": str(state.kubeconfig), "LFK_HELM": helm_binary()}
        start = time.monotonic()
        steps = timed_run([LFK, "run", str(TINY)], env, (
            ("train (preflight and tokenize hooks, training, eviction, resumed training)", r"^train: job \S+ complete"),
            ("merge (export, verification, publication)", r"^merge: job \S+ complete"),
            ("evaluation gate (base and merged model answer, scored)", r"^eval: job \S+ complete"),
            ("vLLM on CPU until its probes pass", r"^vllm: deployment \S+ available"),
            (HELM_TEST, r"^vllm: helm test passed"),
            ("LlamaBoard until ready", r"^webui: deployment \S+ available"),
        ))  # fmt: skip
        if steps is None:
            return 1
        figures += steps
        # the steps up to and including helm test's answer, which is the first one served
        to_answer = sum(seconds for _, seconds in steps[: 1 + [s for s, _ in steps].index(HELM_TEST)])
        figures.append(
            (f"lfk run to the first answer, helm test's (target <= {FIRST_ANSWER_TARGET_S} s)", to_answer)
        )
        for hook, what in (
            ("train-preflight", "the preflight hook"),
            ("train-tokenize", "the tokenize hook"),
        ):
            if hook in hooks:
                first, last = hooks[hook]
                figures.append((f"  of which: {what}, its pod seen for (0.2 s polls)", last - first))
        if "evicted" in found:
            figures.append(
                ("  of which: start to the eviction after the first checkpoint", found["evicted"] - start)
            )

        forward = subprocess.Popen(
            [LFK, "ui", str(TINY), "vllm", "--port", "18123"], env=env, stdout=subprocess.DEVNULL
        )
        try:
            asked = time.monotonic()
            body = {
                "model": facts.served_name,
                "messages": [{"role": "user", "content": "Czym jest LoRA?"}],
                "max_tokens": 16,
            }
            request = urllib.request.Request("http://127.0.0.1:18123/v1/chat/completions", json.dumps(body).encode(),
                                             {"Content-Type": "application/json"})  # fmt: skip
            while True:
                try:
                    with urllib.request.urlopen(request, timeout=60) as response:
                        json.load(response)
                    break
                except OSError:
                    time.sleep(0.2)
            figures.append(
                (
                    "an answer through lfk ui's port-forward (forward set-up included)",
                    time.monotonic() - asked,
                )
            )
        finally:
            forward.terminate()
            forward.wait(timeout=30)
        figures.append(("the tiny experiment end to end (lfk run + the answer)", time.monotonic() - start))
        summary, seconds = served_under_a_killed_replica(state, facts)
        figures.append(("vLLM at 2 replicas, 120 requests through its Service, one replica deleted", seconds))
        notes.append(f"under load with a replica deleted: {summary}")
        shared = shared_adapters(state, env)
        if shared is None:
            return 1
        figures += shared
    finally:
        stop = time.monotonic()
        lifecycle.down(directory)
        figures.append(("lfk cluster down (pods, node, host restored)", time.monotonic() - stop))
    print()
    for step, seconds in figures:
        print(f"{step:<80} {seconds:7.1f} s")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
