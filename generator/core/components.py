"""The chart's six components, once: what each runs, how `lfk run` waits for it and decides to skip it, the
port `lfk ui` forwards, when a spec enables it, and where the spec sets its pods' resources (GPUs, memory).
`render`, `install`, `run`, `status`, `ui`, `describe` and the diagnosis all read this table. The names and
their order are the contract's (shared with the chart)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .contract import COMPONENT_NAMES, PORTS

Workload = Literal["job", "deployment"]
SpecData = dict[str, Any]


def is_adapter_method(method: str) -> bool:
    """It trains an adapter (LoRA or OFT) that the merge folds into the base model."""
    return method in ("lora", "qlora", "oft")


def is_lora_method(method: str) -> bool:
    """Its adapter is a LoRA one, which vLLM can serve on the base model (it serves OFT merged only)."""
    return method in ("lora", "qlora")


@dataclass(frozen=True)
class Component:
    name: str
    workload: Workload  # a Job runs to completion (skipped when the run id completed); a Deployment serves
    enabled: Callable[[SpecData], bool]  # whether a spec (its data) has this release
    gpus: Callable[[SpecData], int]  # GPUs of one of its pods (training: per node)
    # the spec's section holding its pods' `resources` (memory, GPUs); None: the component has no such setting
    resources: str | None
    helm_test: bool = False  # `helm test` after it is available (the vLLM chat completion)
    # a completed Job of the run id is done for good; the gate's own settings are not in the run id, so its
    # Job is done only when its values are unchanged too
    settled_by_run_id: bool = True
    port: int | None = None  # what `lfk ui` forwards to

    @property
    def memory_setting(self) -> str:
        """The spec setting that raises its pods' memory limit (named when a pod is killed for memory)."""
        return f"{self.resources}.memory" if self.resources else "the component's resources.memory"


def _serve_gpus(d: SpecData) -> int:
    return 0 if d["serve"]["resources"].get("gpus") == 0 else int(d["serve"]["tensorParallelSize"])


def _shared(d: SpecData) -> bool:
    return bool(d["serve"]["source"] == "shared")


def is_chat_model(d: SpecData) -> bool:
    """The training's result answers in chat: every stage's but a reward model's, which scores answers."""
    return bool(d["stage"]["type"] != "rm")


WEBUI = Component(
    "webui",
    "deployment",
    enabled=lambda d: bool(d["webui"]["enabled"]),
    gpus=lambda d: d["webui"]["resources"].get("gpus", 0),
    resources="webui.resources",
    port=PORTS["webui"],
)
TRAIN = Component(
    "train", "job", enabled=lambda d: True, gpus=lambda d: d["resources"]["gpus"], resources="resources"
)
MERGE = Component(
    "merge",
    "job",
    enabled=lambda d: bool(d["merge"]["enabled"]) and is_adapter_method(d["method"]["type"]),
    gpus=lambda d: d["merge"]["resources"].get("gpus", 0),
    resources="merge.resources",
)
EVAL = Component(  # fails when the tuned model scores worse
    "eval",
    "job",
    enabled=lambda d: "evaluate" in d,
    gpus=lambda d: d.get("evaluate", {}).get("resources", {}).get("gpus", 1),
    resources="evaluate.resources",
    settled_by_run_id=False,
)
VLLM = Component(
    "vllm",
    "deployment",
    enabled=lambda d: bool(d["serve"]["enabled"]) and not _shared(d) and is_chat_model(d),
    gpus=_serve_gpus,
    resources="serve.resources",
    helm_test=True,
    port=PORTS["vllm"],
)
# an adapter loaded into another experiment's vLLM (serve.source: shared): its Job registers it, the host's
# sidecar loads it, the helm test asks under its name. Its Jobs only write the registry: no GPU, no setting.
ADAPTER = Component(
    "adapter",
    "job",
    enabled=lambda d: bool(d["serve"]["enabled"]) and _shared(d) and is_chat_model(d),
    gpus=lambda d: 0,
    resources=None,
    helm_test=True,
)

_BY_NAME = {c.name: c for c in (WEBUI, TRAIN, MERGE, EVAL, VLLM, ADAPTER)}
if set(_BY_NAME) != set(COMPONENT_NAMES):
    raise RuntimeError(f"components {sorted(_BY_NAME)} differ from the contract's {sorted(COMPONENT_NAMES)}")
# the order of the values files and of a spec's releases: the contract's
COMPONENTS: dict[str, Component] = {name: _BY_NAME[name] for name in COMPONENT_NAMES}
NAMES = tuple(COMPONENTS)
# the guide's order: train, then merge, then serving (once the evaluation passed); the web UI last
INSTALL_ORDER = ("train", "merge", "eval", "vllm", "adapter", "webui")


def release_name(experiment: str, component: str) -> str:
    """Each release is named <experiment>-<component> (a shared host's vLLM is found by it too)."""
    return f"{experiment}-{component}"


def enabled_components(d: SpecData) -> list[str]:
    """The components a spec (its data) has a release of, in the contract's order."""
    return [c.name for c in COMPONENTS.values() if c.enabled(d)]


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
