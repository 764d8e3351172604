#!/usr/bin/env python3
"""`make demo`: the guide's flow, for real where this machine can do it, simulated where it cannot, and saying
which is which.

1. validate, render and describe every example in values/;
2. start the local cluster (control plane, simulated GPU nodes, one real node; its context selected in your
   kubeconfig, as kind does);
3. the tiny-cpu example end to end on the real node: its model made on the spot (by `lfk exec`, in a pod of
   the training's image: this .venv has no torch), its data tokenized once,
   trained, merged, scored against the base model by the evaluation gate, served by real vLLM on CPU,
   LlamaBoard up; then one real question to vLLM, and its answer printed;
4. the guide's GPU example (llama31-qa) on the simulated GPU nodes: scheduled and admitted by the real control
   plane, while no container runs, as the output says.

Every step prints what it is doing and the time since the demo began. The cluster stays up afterwards.

    hack/demo.py [specs|cluster]     step 1 only, steps 2-4 only, or all four (the default)

`make demo` runs step 1 as soon as .venv has the generator, while the images and the node's tools still build
(it needs neither), then the rest once they are there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator.cluster.state import DEFAULT_STATE_DIR, State  # noqa: E402
from generator.cluster.storage import DEFAULT_NAMESPACE, folder  # noqa: E402

LFK = str(Path(sys.executable).parent / "lfk")
TINY = "values/tiny-cpu/experiment.yaml"
GUIDE = "values/llama31-qa/experiment.yaml"
STARTED = time.monotonic()


def say(text: str) -> None:
    print(f"\n[demo {time.monotonic() - STARTED:5.0f} s] {text}", flush=True)


def lfk(*args: str) -> None:
    """An lfk command, its output streamed as it comes."""
    print(f"$ lfk {' '.join(args)}", flush=True)
    subprocess.run([LFK, *args], cwd=ROOT, check=True)


def show_specs() -> None:
    specs = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("values/*/experiment.yaml"))
    say("1/4 validating, rendering and describing the examples")
    lfk("validate", *specs)
    lfk("render", *specs)
    lfk("describe", *specs)


def main(part: str) -> int:
    if part in ("all", "specs"):
        show_specs()
    if part == "specs":
        print(
            "\n(the cluster steps of the demo follow once the images and the node's tools are built)",
            flush=True,
        )
        return 0

    say("2/4 the local cluster: control plane, simulated GPU nodes and one real node (images import once)")
    lfk("cluster", "up")
    state = State.load(DEFAULT_STATE_DIR)
    assert state is not None
    # whatever KUBECONFIG says, the demo's commands talk to the cluster it just started
    os.environ["KUBECONFIG"] = str(state.kubeconfig)
    storage = folder(state, DEFAULT_NAMESPACE)

    say(f"3/4 the tiny-cpu example for real on the real node; its storage is {storage}")
    print(
        "the example's dataset onto the storage, and the tiny model made there by `lfk exec` in a one-off pod\n"
        "like the training's (its image has torch and transformers; this .venv needs neither)",
        flush=True,
    )
    subprocess.run(
        [sys.executable, "-m", "tests.support.tiny", "--in-pod", str(storage)], cwd=ROOT, check=True
    )
    lfk("run", TINY, "--storage-root", str(storage))
    lfk("status", TINY, "--storage-root", str(storage), "--plot", str(storage.parent / "tiny-cpu-loss.png"))
    say("asking the served model the guide's question (lfk chat: a port-forward; this vLLM needs no API key)")
    print("real vLLM on CPU; the tiny model's weights are random, so its words are too", flush=True)
    lfk("chat", TINY, "-m", "Czym jest LoRA?", "--max-tokens", "16")

    say("4/4 the guide's GPU example on the simulated GPU nodes")
    print(
        "SIMULATED: kwok plays the kubelet of these GPU nodes. The real control plane validates, schedules and"
    )
    print(
        "admits every object; no container runs there, nothing is trained and nothing is served.", flush=True
    )
    lfk("run", GUIDE)
    lfk("status", GUIDE)

    say("done")
    print(
        f"""
What ran for real: the tiny-cpu example's pods on the real node cpu-0 (preflight, tokenizing, training with
checkpoints, merge with verification, the evaluation gate, vLLM answering above, LlamaBoard). What was simulated: the GPU example's pods on
kwok-gpu-* (no container ran).

The cluster is still up, and your kubeconfig's current context is lfk-local:
  lfk status {TINY}
  {ROOT / ".tools" / ("kube-" + os.environ.get("KUBE_VERSION", "v1.37.2")) / "kubectl"} get nodes,pods -A
  lfk ui {TINY} webui        # LlamaBoard: http://localhost:7860 (Ctrl-C stops the port-forward)
  lfk ui {TINY} vllm         # the OpenAI API: http://localhost:8000/v1
  make cluster-down          # stops it all and removes the context again""",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    PARTS = ("all", "specs", "cluster")
    if len(sys.argv) > 2 or (len(sys.argv) == 2 and sys.argv[1] not in PARTS):
        sys.exit(f"usage: {sys.argv[0]} [specs|cluster]")
    try:
        sys.exit(main(sys.argv[1] if len(sys.argv) == 2 else "all"))
    except subprocess.CalledProcessError as exc:
        say(f"stopped: `{' '.join(map(str, exc.cmd))}` exited {exc.returncode} (its output is above)")
        sys.exit(1)
