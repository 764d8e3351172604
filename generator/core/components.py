"""The chart's six components, once: what each runs, how `lfk run` waits for it and decides to skip it,
and the port `lfk ui` forwards. `render`, `install`, `run`, `status` and `ui` all read this table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Workload = Literal["job", "deployment"]


@dataclass(frozen=True)
class Component:
    name: str
    workload: Workload  # a Job runs to completion (skipped when the run id completed); a Deployment serves
    helm_test: bool = False  # `helm test` after it is available (the vLLM chat completion)
    # a completed Job of the run id is done for good; the gate's own settings are not in the run id, so its
    # Job is done only when its values are unchanged too
    settled_by_run_id: bool = True
    port: int | None = None  # what `lfk ui` forwards to


WEBUI = Component("webui", "deployment", port=7860)
TRAIN = Component("train", "job")
MERGE = Component("merge", "job")
EVAL = Component("eval", "job", settled_by_run_id=False)  # fails when the tuned model scores worse
VLLM = Component("vllm", "deployment", helm_test=True, port=8000)
# an adapter loaded into another experiment's vLLM (serve.source: shared): its Job registers it, the host's
# sidecar loads it, the helm test asks under its name
ADAPTER = Component("adapter", "job", helm_test=True)

# the order of the values files and of a spec's releases
COMPONENTS: dict[str, Component] = {c.name: c for c in (WEBUI, TRAIN, MERGE, EVAL, VLLM, ADAPTER)}
NAMES = tuple(COMPONENTS)
# the guide's order: train, then merge, then serving (once the evaluation passed); the web UI last
INSTALL_ORDER = ("train", "merge", "eval", "vllm", "adapter", "webui")


def is_job(name: str) -> bool:
    return COMPONENTS[name].workload == "job"


# helm's --timeout for an install: how long it waits for the release's hooks. Helm's default 5 minutes is
# too short where a hook pulls a multi-GB image onto a fresh node; the model's download (a 70B model is over
# 140 GB) may take hours, its Job's own deadline is 6 h. Every printed helm command carries the same value.
HOOK_TIMEOUT = "20m"
DOWNLOAD_TIMEOUT = "6h"
# tokenizing a large dataset once (the tokenize hook, its own deadline 2 h) may outlast the hook timeout; helm
# giving up early would re-create the hook and start the tokenizing over
TOKENIZE_TIMEOUT = "2h"


def duration_seconds(duration: str) -> int:
    """A helm-style duration of one unit ("20m", "6h", "90s") in seconds, for tools that want a number."""
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


def install_timeout(component: str, downloads_model: bool, tokenizes: bool) -> str:
    if component != "train":
        return HOOK_TIMEOUT
    if downloads_model:
        return DOWNLOAD_TIMEOUT
    return TOKENIZE_TIMEOUT if tokenizes else HOOK_TIMEOUT
