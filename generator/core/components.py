"""The chart's four components, once: what each runs, how `lfk run` waits for it and decides to skip it,
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
    port: int | None = None  # what `lfk ui` forwards to


WEBUI = Component("webui", "deployment", port=7860)
TRAIN = Component("train", "job")
MERGE = Component("merge", "job")
VLLM = Component("vllm", "deployment", helm_test=True, port=8000)

# the order of the values files and of a spec's releases
COMPONENTS: dict[str, Component] = {c.name: c for c in (WEBUI, TRAIN, MERGE, VLLM)}
NAMES = tuple(COMPONENTS)
# the guide's order: train, then merge, then serving; the web UI last
INSTALL_ORDER = ("train", "merge", "vllm", "webui")


def is_job(name: str) -> bool:
    return COMPONENTS[name].workload == "job"
