"""Failures named while they happen: what a pod's state, exit code and log say, in words a person can act on."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from generator.core.facts import derive
from generator.core.spec import load_spec
from generator.ops import diagnose
from generator.project import REPO_ROOT

SEED = load_spec(REPO_ROOT / "values" / "llama31-qa" / "experiment.yaml")


def pod(state: dict[str, Any], waiting: bool = False) -> dict[str, Any]:
    status = {"name": "train", "state": {"waiting": state} if waiting else {"terminated": state}}
    return {
        "metadata": {"name": "p"},
        "spec": {
            "nodeName": "n",
            "containers": [{"name": "train", "resources": {"limits": {"memory": "64Gi"}}}],
        },
        "status": {"phase": "Failed", "containerStatuses": [status]},
    }


def test_a_container_killed_for_memory_names_the_limit_and_the_setting() -> None:
    found = diagnose.explain(pod({"reason": "OOMKilled", "exitCode": 137}), "", "train")
    assert (
        found
        == "container train was OOMKilled: it used more than its memory limit (64Gi); raise resources.memory in the spec"
    )


def test_cuda_out_of_memory_gives_the_estimate_and_the_spec_changes() -> None:
    advice = diagnose.gpu_advice(SEED, derive(SEED))
    found = diagnose.explain(pod({"reason": "Error", "exitCode": 4}), "", "train", advice)
    assert found is not None and found.startswith(
        "the GPU ran out of memory (CUDA out of memory): the estimate is 25.4 GB"
    )
    assert "use method.type: qlora with quantization.bits: 4" in found and "lower training.batchSize" in found
    in_log = diagnose.explain(
        pod({"reason": "Error", "exitCode": 1}), "torch.OutOfMemoryError: CUDA out of memory.", "train"
    )
    assert in_log is not None and in_log.startswith("the GPU ran out of memory")


def test_nccl_timeouts_are_named_with_their_usual_causes() -> None:
    log = "[rank1]:[E] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=12, OpType=ALLREDUCE) ran for 1800000 ms"
    found = diagnose.explain(pod({"reason": "Error", "exitCode": 1}), log, "train")
    assert (
        found == diagnose.NCCL_ADVICE and "distributed.nccl.socketIfname" in found and "ddp_timeout" in found
    )


def test_a_rendezvous_that_never_completes_is_named_before_the_network_advice() -> None:
    # torch's own last lines (torchrun 2.11): the elastic join timing out, a static rank that never reached the
    # first pod, and the first pod waiting for the others
    for log in (
        "Traceback (most recent call last):\ntorch.distributed.elastic.rendezvous.api.RendezvousTimeoutError",
        "torch.distributed.DistNetworkError: The client socket has timed out after 600000ms while trying to "
        "connect to (demo-train-0a1b2c3d-0.demo-train-nodes, 29500).",
        "torch.distributed.DistStoreError: Timed out after 601 seconds waiting for clients. 1/2 clients joined.",
    ):
        found = diagnose.explain(pod({"reason": "Error", "exitCode": 1}), log, "train")
        assert found == diagnose.RENDEZVOUS_ADVICE, log
        assert "distributed.rendezvousTimeout" in found and "lfk status lists every rank" in found
    # a pod still waiting is no failure yet
    assert (
        diagnose.explain(pod({"reason": "Completed", "exitCode": 0}), "RendezvousTimeoutError", "train")
        is None
    )


def test_a_configuration_error_points_at_the_checklist_and_anything_else_is_left_to_the_log() -> None:
    assert "configuration error" in (
        diagnose.explain(pod({"reason": "Error", "exitCode": 3}), "", "train") or ""
    )
    assert diagnose.explain(pod({"reason": "Error", "exitCode": 1}), "ValueError: bad", "train") is None


def test_containers_that_cannot_start_stop_the_wait_at_once() -> None:
    for reason in (
        "ErrImagePull",
        "ImagePullBackOff",
        "CreateContainerError",
        "RunContainerError",
        "CreateContainerConfigError",
    ):
        stuck = diagnose.stuck(
            [pod({"reason": reason, "message": "details"}, waiting=True)], pending_timeout=300
        )
        assert stuck is not None and stuck[1] == f"container train is {reason}: details"


def test_an_image_whose_content_is_gone_says_how_to_mend_it() -> None:
    # containerd's words when an image is listed but a layer's content is gone (a disk that filled mid-import)
    message = (
        "failed to create containerd container: failed to resolve rootfs: content digest "
        "sha256:f1a5c0ffee00000000000000000000000000000000000000000000000000abcd: not found"
    )
    stuck = diagnose.stuck([pod({"reason": "CreateContainerError", "message": message}, waiting=True)], 300)
    assert stuck is not None
    assert stuck[1].startswith(f"container train is CreateContainerError: {message}\n  ")
    assert "`lfk cluster up` checks every image and imports a broken one again" in stuck[1]


def test_a_claim_still_binding_is_waited_for_longer_than_other_unschedulable_reasons() -> None:
    import time
    from datetime import datetime

    def unschedulable(message: str, seconds_ago: float) -> dict[str, Any]:
        since = datetime.fromtimestamp(time.time() - seconds_ago, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": message, "lastTransitionTime": since}  # fmt: skip
        return {"metadata": {"name": "p"}, "status": {"phase": "Pending", "conditions": [condition]}}

    gpus = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    claim = f"0/3 nodes are available: pod has {diagnose.UNBOUND_CLAIM}. preemption: not eligible"
    assert diagnose.stuck([unschedulable(gpus, 10)], pending_timeout=3) is not None
    assert diagnose.stuck([unschedulable(claim, 10)], pending_timeout=3) is None
    found = diagnose.stuck([unschedulable(claim, diagnose.CLAIM_BINDING_S + 5)], pending_timeout=3)
    assert found is not None and diagnose.UNBOUND_CLAIM in found[1]


def test_a_failed_evaluation_gate_gives_its_verdict_and_both_scores() -> None:
    log = "\n".join([
        "***** predict metrics *****",
        "metric         base    tuned   change",
        "bleu-4         5.39     2.36    -3.03",
        "rouge-l        2.68     1.01    -1.67  <- the gate's",
        "eval: gate failed, the tuned model is not served: rouge-l 1.01 is below the floor 5",
    ])  # fmt: skip
    found = diagnose.explain(pod({"reason": "Error", "exitCode": 5}), log, "eval")
    assert found is not None and found.startswith(
        "gate failed, the tuned model is not served: rouge-l 1.01 is below the floor 5 (exit 5); vLLM was not installed\n"
    )
    assert "    rouge-l        2.68     1.01    -1.67  <- the gate's\n" in found
    assert "evaluate.maxDrop, evaluate.floor" in found
    # exit 5 means the gate only in the eval release
    assert diagnose.explain(pod({"reason": "Error", "exitCode": 5}), log, "train") is None


def test_an_adapter_the_shared_vllm_cannot_serve_says_merge_instead_and_why() -> None:
    log = (
        "cannot share /storage/output/g/1: rank 64 is above the host's --max-lora-rank 16\n"
        "merge instead: serve it with serve.source: merged (a vLLM of its own)\n"
    )
    found = diagnose.explain(pod({"reason": "Error", "exitCode": 3}), log, "adapter") or ""
    assert found.startswith("the shared vLLM cannot serve this adapter (exit 3); merge instead")
    assert "rank 64 is above the host's --max-lora-rank 16" in found
