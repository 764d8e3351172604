"""core.watch and core.lossplot: the checkpoints listing, GPU utilisation from Prometheus and nvidia-smi with the
guide's 80 % line, and the loss curve PNG; lfk status's table and the node ranks it names."""

from __future__ import annotations

import math
from typing import Any

import pytest

from generator.cli.run_commands import render_status
from generator.core import trainlog, watch
from generator.core.lossplot import loss_png, moving_average
from generator.ops import kube

pytestmark = pytest.mark.unit


def test_checkpoints_are_read_from_either_listing_oldest_step_first() -> None:
    text = "\n".join([
        watch.listing_line("checkpoint-200", 1_764_300_000, 3 * 1024**3),
        "du: cannot read some file",  # noise from the reader pod is ignored
        watch.listing_line("checkpoint-100", 1_764_299_000, 512 * 1024**2),
        "checkpoint-x 1 2",
    ])  # fmt: skip
    found = watch.parse_checkpoints(text)
    assert [c.step for c in found] == [100, 200]
    assert found[0].saved_at == "2025-11-28T03:03:20Z"
    assert watch.human_size(found[0].size_bytes) == "512.0 MiB"
    assert watch.human_size(found[1].size_bytes) == "3.0 GiB"


def prometheus_answer(*samples: tuple[dict[str, str], str]) -> dict[str, object]:
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": m, "value": [1.0, v]} for m, v in samples]},
    }


def test_prometheus_samples_are_matched_to_the_training_pods_by_either_label_set() -> None:
    answer = prometheus_answer(
        ({"exported_pod": "train-0", "exported_namespace": "llm", "gpu": "0"}, "91"),
        ({"pod": "train-0", "namespace": "llm", "gpu": "1"}, "45"),
        ({"pod": "other", "namespace": "llm", "gpu": "0"}, "100"),  # not ours
        ({"pod": "train-0", "namespace": "elsewhere", "gpu": "2"}, "100"),  # same name, other namespace
        ({"pod": "train-0", "namespace": "llm", "gpu": "3"}, "NaN"),
    )
    found = watch.from_prometheus(answer, "llm", {"train-0"})
    assert found == {"train-0/gpu0": 91.0, "train-0/gpu1": 45.0}
    utilisation = watch.GpuUtilisation("prometheus", found)
    assert utilisation.mean == 68.0
    assert utilisation.warning and utilisation.warning.startswith("68 % mean: GPU utilisation under 80 %")
    assert "DCGM_FI_DEV_GPU_UTIL" in watch.prometheus_query("llm")


def test_nvidia_smi_lines_and_no_warning_at_or_above_80() -> None:
    found = watch.from_nvidia_smi("train-0", "0, 97\n1, 80\nNo devices were found\n")
    assert found == {"train-0/gpu0": 97.0, "train-0/gpu1": 80.0}
    assert watch.GpuUtilisation("nvidia-smi", found).warning is None
    assert watch.GpuUtilisation("nvidia-smi failed: x", {}).as_dict() == {
        "source": "nvidia-smi failed: x", "per_gpu": {}, "mean": None, "warning": None,
    }  # fmt: skip


def test_status_table_shows_checkpoints_and_utilisation_with_the_warning() -> None:
    data = {
        "experiment": "e", "namespace": "n", "run_id": "r", "releases": [], "training": None,
        "checkpoints": [{"step": 500, "saved_at": "2026-11-28T10:00:00Z", "size_bytes": 2 * 1024**3}],
        "gpu_utilisation": watch.GpuUtilisation("prometheus", {"p/gpu0": 40.0}).as_dict(),
    }  # fmt: skip
    table = render_status(data)
    assert "checkpoints 1, the last: step 500 at 2026-11-28T10:00:00Z (2.0 GiB)" in table
    assert "GPU utilisation 40 % mean (prometheus)  p/gpu0 40 %" in table
    assert "! 40 % mean: GPU utilisation under 80 %" in table
    data["checkpoints"] = []
    assert "checkpoints 0 (none saved yet)" in render_status(data)


def test_status_table_names_each_pod_of_a_multi_node_training_by_its_rank() -> None:
    pods = [
        {"name": f"t-{rank}-x", "rank": str(rank), "phase": phase, "node": "cpu-0", "gpus": 0, "waiting": ""}
        for rank, phase in ((0, "Running"), (1, "Pending"))
    ]
    single = {"name": "one", "rank": None, "phase": "Running", "node": "n", "gpus": 1, "waiting": ""}
    data = {
        "experiment": "e", "namespace": "n", "run_id": "r", "training": None,
        "releases": [{"component": "train", "release": "e-train", "helm": "deployed", "revision": 1,
                      "objects": [], "pods": [*pods, single]}],
    }  # fmt: skip
    table = render_status(data)
    assert "pod t-0-x (node rank 0) Running on cpu-0 GPUs 0" in table
    assert "pod t-1-x (node rank 1) Pending on cpu-0 GPUs 0" in table
    assert "pod one Running on n GPUs 1" in table


def test_a_pods_node_rank_is_its_completion_index_or_its_pytorchjob_replica() -> None:
    def pod(annotations: dict[str, str], labels: dict[str, str]) -> dict[str, Any]:
        return {"metadata": {"annotations": annotations, "labels": labels}}

    assert kube.node_rank(pod({kube.COMPLETION_INDEX: "3"}, {})) == "3"  # Indexed Job, JobSet, Trainer
    operator = {kube.REPLICA_TYPE: "master", kube.REPLICA_INDEX: "0"}
    assert kube.node_rank(pod({}, operator)) == "0"
    assert (
        kube.node_rank(pod({}, {**operator, kube.REPLICA_TYPE: "worker"})) == "1"
    )  # Worker 0 after the Master
    assert kube.node_rank(pod({}, {kube.REPLICA_TYPE: "worker", kube.REPLICA_INDEX: "2"})) == "3"
    assert kube.node_rank(pod({}, {})) is None  # one pod of a one-node run
    assert kube.node_rank(pod({}, {kube.REPLICA_TYPE: "worker"})) is None


def test_loss_curve_png_from_the_trainer_log_nan_included() -> None:
    lines = [
        f'{{"current_steps": {s}, "total_steps": 4, "loss": {loss}}}'
        for s, loss in enumerate([2.0, 1.5, 1.2], 1)
    ]
    lines.append('{"current_steps": 4, "total_steps": 4, "loss": NaN}')
    progress = trainlog.parse("\n".join(lines))
    assert progress is not None
    training = progress.as_dict()
    assert training["loss_curve"] == [[1, 2.0], [2, 1.5], [3, 1.2], [4, "nan"]]
    png = loss_png(training, "e run r")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    smoothed = moving_average([2.0, 1.0, math.nan], window=2)
    assert smoothed == [2.0, 1.5, 1.0]
