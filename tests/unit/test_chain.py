"""Chained experiments (core/chain.py): a spec that starts from another experiment's result (model.from, PPO's
reward model experiment) reads the other spec beside it, takes its result's folder, template and size, trains
an adapter further where asked, makes a new run when the other's run changes, and is refused (naming the path
in the spec) when the other is missing, loops back, or gives no result of the kind asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from generator.core.chain import lineage
from generator.core.describe import description, text
from generator.core.experiment import load_experiment
from generator.core.facts import derive
from generator.core.render import render
from generator.core.spec import load_spec
from generator.errors import SpecError

SFT = {
    "name": "sft", "storage": {"existingClaim": "llm-storage"},
    "model": {"path": "/storage/models/llama-3.1-8b-instruct"}, "data": {"datasets": ["qa"]},
    "resources": {"gpu": {"product": "NVIDIA-A100-SXM4-80GB"}},
}  # fmt: skip


def write(root: Path, spec: dict[str, Any]) -> Path:
    folder = root / spec["name"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "experiment.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return folder / "experiment.yaml"


def dpo(name: str = "dpo", **model: Any) -> dict[str, Any]:
    return {
        "name": name, "storage": {"existingClaim": "llm-storage"}, "model": {"from": {"experiment": "sft", **model}},
        "data": {"datasets": ["prefs"]}, "stage": {"type": "dpo"},
        "resources": {"gpu": {"product": "NVIDIA-A100-SXM4-80GB"}},
    }  # fmt: skip


def test_a_merged_result_is_the_next_experiments_model(tmp_path: Path) -> None:
    upstream = derive(load_spec(write(tmp_path, SFT)))
    spec = load_spec(write(tmp_path, dpo()))
    facts = derive(spec)
    assert facts.base_model == upstream.merged_dir == f"/storage/models/merged/sft/{upstream.run_id}"
    assert facts.template == "llama3" and facts.model_info == upstream.model_info  # the size of its base
    [u] = spec.upstreams
    assert (u.name, u.run_id, u.use, u.jobs) == ("sft", upstream.run_id, "merged", ("train", "merge"))
    assert lineage(facts.upstreams, facts.name, facts.run_id) == [
        f"sft run {upstream.run_id} (sft) -> dpo run {facts.run_id}: its model {upstream.merged_dir}"
    ]
    lines = text(description(spec, facts))
    assert (
        f"  starts from   sft run {upstream.run_id} (sft) -> dpo run {facts.run_id}: its model"
        in "\n".join(lines)
    )


def test_a_new_run_upstream_is_a_new_run_here(tmp_path: Path) -> None:
    write(tmp_path, SFT)
    before = derive(load_spec(write(tmp_path, dpo()))).run_id
    write(tmp_path, {**SFT, "training": {"learningRate": 1.0e-5}})
    assert derive(load_spec(tmp_path / "dpo" / "experiment.yaml")).run_id != before


def test_an_adapter_is_trained_further_on_its_base(tmp_path: Path) -> None:
    upstream = derive(load_spec(write(tmp_path, SFT)))
    experiment = load_experiment(write(tmp_path, dpo(use="adapter")))
    facts = experiment.facts
    assert facts.base_model == upstream.base_model and facts.start_adapter == upstream.output_dir
    released = {r.component: r.values for r in render(experiment.spec, facts=facts)}
    assert released["train"]["train"]["config"]["adapter_name_or_path"] == upstream.output_dir
    # DPO's reference is then the base with every adapter off: said, not silent
    [warning] = [p for p in experiment.problems if p.path == "$.model.from.use"]
    assert warning.severity == "warning" and "not sft's model" in warning.message


@pytest.mark.parametrize(
    ("upstream", "spec", "path", "message"),
    [
        (None, dpo(), "$.model.from.experiment", "no valid experiment sft beside this one: ../sft/experiment.yaml::$: "),
        ({**SFT, "stage": {"type": "rm"}}, dpo(), "$.model.from.experiment", "experiment sft trains a reward model"),
        ({**SFT, "method": {"type": "full"}}, dpo(use="adapter"), "$.model.from.use", "experiment sft trains with full, not a LoRA adapter"),
        ({**SFT, "merge": {"enabled": False}}, dpo(), "$.model.from.use", "experiment sft trains an adapter and does not merge it"),
        ({**SFT, "name": "other"}, dpo(), "$.model.from.experiment", "../sft/experiment.yaml names experiment other, not sft"),
    ],
)  # fmt: skip
def test_an_unfit_upstream_is_refused_naming_the_path(
    tmp_path: Path, upstream: dict[str, Any] | None, spec: dict[str, Any], path: str, message: str
) -> None:
    if upstream is not None:
        folder = tmp_path / "sft"
        folder.mkdir()
        (folder / "experiment.yaml").write_text(yaml.safe_dump(upstream), encoding="utf-8")
    with pytest.raises(SpecError) as raised:
        load_spec(write(tmp_path, spec))
    [problem] = raised.value.problems
    assert (problem.path, message in problem.message) == (path, True), problem.message


def test_experiments_that_start_from_each_other_are_refused(tmp_path: Path) -> None:
    write(tmp_path, {**dpo("a"), "model": {"from": {"experiment": "b"}}})
    b = write(tmp_path, {**dpo("b"), "model": {"from": {"experiment": "a"}}})
    with pytest.raises(SpecError) as raised:
        load_spec(b)
    assert "the experiments start from each other in a loop: b -> a -> b" in raised.value.problems[0].message


def test_a_path_and_from_together_are_refused_by_the_schema(tmp_path: Path) -> None:
    write(tmp_path, SFT)
    spec = dpo()
    spec["model"]["path"] = "/storage/models/x"
    with pytest.raises(SpecError) as raised:
        load_spec(write(tmp_path, spec))
    assert raised.value.problems[0].path.startswith("$.model")


def test_ppo_names_its_reward_model_experiment(tmp_path: Path) -> None:
    reward = derive(load_spec(write(tmp_path, {**SFT, "name": "rm", "stage": {"type": "rm"}})))
    write(tmp_path, SFT)
    ppo = {**dpo("ppo"), "stage": {"type": "ppo", "ppo": {"rewardModel": {"experiment": "rm"}}}}
    spec = load_spec(write(tmp_path, ppo))
    assert spec.data["stage"]["ppo"]["rewardModel"]["path"] == reward.output_dir
    assert [u.use for u in spec.upstreams] == ["merged", "reward"]
    not_reward = {
        **ppo,
        "name": "ppo2",
        "stage": {"type": "ppo", "ppo": {"rewardModel": {"experiment": "sft"}}},
    }
    with pytest.raises(SpecError) as raised:
        load_spec(write(tmp_path, not_reward))
    assert raised.value.problems[0].path == "$.stage.ppo.rewardModel.experiment"
    assert "trains stage sft, not a reward model" in raised.value.problems[0].message
