"""What the guide's "during training" checklist watches besides the loss: checkpoints being saved (step, time,
size) and GPU utilisation above 80 %. Pure: listings and metric answers in, plain data out; `ops.status`
fetches them (the storage, a reader pod, Prometheus, or nvidia-smi in the pod).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

GPU_UTIL_TARGET = 80.0  # the guide: "GPU utilisation > 80 %"
GPU_UTIL_ADVICE = (
    "GPU utilisation under {target:.0f} %: the GPUs wait for data or for each other; raise the batch size "
    "(per_device_train_batch_size) or preprocessing_num_workers, or check the interconnect"
)
# one line per checkpoint folder, as the reader pod and the local listing both print it
CHECKPOINT_LINE = re.compile(r"^checkpoint-(\d+) (\d+) (\d+)$")
# dcgm-exporter's utilisation gauge; Prometheus may keep the exporter's pod label as exported_pod
DCGM_UTIL = "DCGM_FI_DEV_GPU_UTIL"


@dataclass(frozen=True)
class Checkpoint:
    step: int
    saved_at: str  # ISO 8601, UTC
    size_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def listing_line(name: str, mtime: float, size_bytes: int) -> str:
    return f"{name} {int(mtime)} {size_bytes}"


def parse_checkpoints(text: str) -> list[Checkpoint]:
    """`checkpoint-STEP MTIME BYTES` lines (other lines ignored), oldest step first."""
    found = []
    for line in text.splitlines():
        if match := CHECKPOINT_LINE.match(line.strip()):
            step, mtime, size = (int(g) for g in match.groups())
            saved = datetime.fromtimestamp(mtime, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            found.append(Checkpoint(step, saved, size))
    return sorted(found, key=lambda c: c.step)


def human_size(size_bytes: int) -> str:
    if size_bytes < 1024:
        return f"{size_bytes} B"
    size = size_bytes / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


@dataclass(frozen=True)
class GpuUtilisation:
    source: str  # "prometheus", "nvidia-smi", or why there is no figure
    per_gpu: dict[str, float]  # "<pod>/gpu<N>" -> percent

    @property
    def mean(self) -> float | None:
        return sum(self.per_gpu.values()) / len(self.per_gpu) if self.per_gpu else None

    @property
    def warning(self) -> str | None:
        mean = self.mean
        if mean is None or mean >= GPU_UTIL_TARGET:
            return None
        return f"{mean:.0f} % mean: " + GPU_UTIL_ADVICE.format(target=GPU_UTIL_TARGET)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "per_gpu": self.per_gpu, "mean": self.mean, "warning": self.warning}


def from_prometheus(answer: dict[str, Any], namespace: str, pods: set[str]) -> dict[str, float]:
    """The DCGM utilisation samples of these pods from a Prometheus instant-query answer."""
    found: dict[str, float] = {}
    for sample in answer.get("data", {}).get("result", []):
        labels = sample.get("metric", {})
        pod = labels.get("exported_pod") or labels.get("pod")
        space = labels.get("exported_namespace") or labels.get("namespace")
        if pod in pods and space == namespace:
            value = float(sample["value"][1])
            if math.isfinite(value):
                found[f"{pod}/gpu{labels.get('gpu', len(found))}"] = value
    return found


def prometheus_query(namespace: str) -> str:
    return f'{DCGM_UTIL}{{exported_namespace="{namespace}"}} or {DCGM_UTIL}{{namespace="{namespace}"}}'


NVIDIA_SMI = ["nvidia-smi", "--query-gpu=index,utilization.gpu", "--format=csv,noheader,nounits"]


def from_nvidia_smi(pod: str, text: str) -> dict[str, float]:
    """`index, percent` lines of nvidia-smi's CSV query."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit():
            try:
                found[f"{pod}/gpu{parts[0]}"] = float(parts[1])
            except ValueError:
                continue
    return found
