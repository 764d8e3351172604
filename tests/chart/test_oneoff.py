"""`lfk exec`'s one-off pod, rendered by the chart through the real helm: the training pod's image, storage,
config and secrets, as one plain pod, with the GPUs asked for and nothing of the training's launch."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.core.spec import load_spec
from generator.ops import oneoff
from generator.ops.target import Target

from .conftest import Helm

ROOT = Path(__file__).resolve().parents[2]


def one_off_pod(helm: Helm, example: str, gpus: int) -> tuple[dict, dict, dict]:
    target = Target.of(load_spec(ROOT / example), str(helm.binary))
    job, config_map = oneoff.rendered_train_pod(target, target.spec.folder, gpus)
    pod, config = oneoff.one_off(job, config_map, "x-exec-1", ["llamafactory-cli", "env"], interactive=False)
    return job, pod, config


@pytest.mark.parametrize("gpus", [0, 2])
def test_the_pod_is_the_training_pod_with_the_gpus_asked_for(helm3: Helm, gpus: int) -> None:
    job, pod, config = one_off_pod(helm3, "values/llama31-qa/experiment.yaml", gpus)
    [container] = pod["spec"]["containers"]
    trained = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == trained["image"]
    assert container["resources"].get("limits", {}).get("nvidia.com/gpu", 0) == gpus
    assert container["command"][-2:] == ["llamafactory-cli", "env"]
    # the same Secrets and MLflow settings as the training
    names = {e["name"] for e in container["env"]}
    assert {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME"} <= names
    # the training's model is on the storage: neither it nor this pod gets the Hugging Face token
    assert names & {"HF_TOKEN"} == {e["name"] for e in trained["env"]} & {"HF_TOKEN"} == set()
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/storage", "/config", "/scripts", "/dev/shm"} <= mounts
    # its own copy of the config, which the pod owns, so the train release need not be installed
    referenced = {v["configMap"]["name"] for v in pod["spec"]["volumes"] if "configMap" in v}
    assert referenced == {"x-exec-1"} == {config["metadata"]["name"]}
    assert "train.yaml" in config["data"]
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "exec"


def test_a_multi_node_experiment_still_gets_one_plain_pod(helm3: Helm) -> None:
    _, pod, _ = one_off_pod(helm3, "values/llama70b-zero3/experiment.yaml", 0)
    names = {e["name"] for e in pod["spec"]["containers"][0]["env"]}
    assert not names & {"NNODES", "NODE_RANK", "MASTER_ADDR"}
    assert "subdomain" not in pod["spec"]
