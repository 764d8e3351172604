"""Experiments that start from another's result: `model.from` (its merged model, or its LoRA adapter trained
further) and `stage.ppo.rewardModel.experiment` (a reward model). The other spec is read from beside this one
(../<experiment>/experiment.yaml), checked for a result of the kind asked, and its folders on the storage fill
this spec's model (path, template, size) or reward model path, so every later step (run id, paths, rules,
rendering) sees an ordinary spec and a new run upstream makes a new run here. A chain is followed to its
start; a loop is refused. Pure but for reading the other specs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SpecError
from .components import is_adapter_method, is_lora_method
from .problems import Problem
from .spec import Spec, Upstream, load_spec

if TYPE_CHECKING:
    from .facts import Facts


def _load(name: str, source: str, chain: tuple[str, ...], path: str) -> tuple[Spec | None, list[Problem]]:
    beside = str(Path(source).parent.parent / name / "experiment.yaml")
    if str(Path(beside).resolve()) in chain:
        loop = " -> ".join([*(Path(c).parent.name for c in chain), name])
        return None, [Problem(path, f"the experiments start from each other in a loop: {loop}")]
    try:
        other = load_spec(beside, chain)
    except SpecError as exc:
        first = exc.problems[0]
        where = f"../{name}/experiment.yaml"
        return None, [
            Problem(
                path, f"no valid experiment {name} beside this one: {where}::{first.path}: {first.message}"
            )
        ]
    if other.name != name:
        return None, [Problem(path, f"../{name}/experiment.yaml names experiment {other.name}, not {name}")]
    return other, []


def _unfit_base(other: Spec, facts: Facts, use: str, method_here: str) -> Problem | None:
    """Why the other experiment's result cannot be this one's model (None when it can)."""
    stage, method = other.data["stage"]["type"], other.data["method"]["type"]
    if stage == "rm":
        return Problem(
            "$.model.from.experiment",
            f"experiment {other.name} trains a reward model, which scores answers: it is not a model to tune further",
            "name it in stage.ppo.rewardModel.experiment instead",
        )
    if use == "adapter" and not is_lora_method(method):
        return Problem(
            "$.model.from.use",
            f"experiment {other.name} trains with {method}, not a LoRA adapter",
            "use: merged",
        )
    if use == "adapter" and not is_lora_method(method_here):
        return Problem(
            "$.method.type",
            f"training {other.name}'s LoRA adapter further needs method lora or qlora, not {method_here}",
            "set method.type: lora, or model.from.use: merged",
        )
    if use == "merged" and is_adapter_method(method) and not facts.merged_dir:
        return Problem(
            "$.model.from.use",
            f"experiment {other.name} trains an adapter and does not merge it",
            f"enable merge in {other.name}, or use: adapter",
        )
    return None


def _unfit_reward(other: Spec, facts: Facts, kind: str) -> Problem | None:
    """Why the other experiment's result cannot be PPO's reward model of this kind (None when it can)."""
    stage, method = other.data["stage"]["type"], other.data["method"]["type"]
    if stage != "rm":
        return Problem(
            "$.stage.ppo.rewardModel.experiment",
            f"experiment {other.name} trains stage {stage}, not a reward model (stage rm)",
        )
    if kind == "lora" and not is_lora_method(method):
        return Problem(
            "$.stage.ppo.rewardModel.type",
            f"experiment {other.name}'s reward model is a complete model ({method}), not a LoRA adapter",
            "set type: full",
        )
    if kind == "full" and is_adapter_method(method) and not facts.merged_dir:
        return Problem(
            "$.stage.ppo.rewardModel.type",
            f"experiment {other.name}'s reward model is an adapter and is not merged",
            "set type: lora, or enable merge there",
        )
    return None


def _upstream(other: Spec, facts: Facts, use: str, result: str, names: tuple[str, ...] = ()) -> Upstream:
    """The record of the other experiment's result this one reads: the Jobs that make it (the merge too when
    it is the merged model), and the experiments it starts from in turn."""
    jobs = ("train", "merge") if result == facts.merged_dir else ("train",)
    stage = other.data["stage"]["type"]
    return Upstream(other.name, other.source, facts.run_id, use, result, stage, jobs, other.upstreams, names)


def _fill_model(model: dict[str, Any], other: Spec, facts: Facts, use: str) -> Upstream:
    """This spec's model from the other experiment's result: the folder, and its template, size and trust."""
    from .facts import model_names

    if use == "adapter":  # its base model, with its adapter loaded and trained further
        result, model["path"] = facts.output_dir, facts.base_model
    else:
        result = model["path"] = facts.merged_dir or facts.output_dir
    theirs = other.data["model"]
    if "template" not in model and facts.template:
        model["template"] = facts.template
    if "parametersB" not in model and "parametersB" in theirs:
        model["parametersB"] = theirs["parametersB"]
    model["trustRemoteCode"] = model.get("trustRemoteCode") or theirs["trustRemoteCode"]
    names = (theirs.get("hub", {}).get("id", ""), theirs["path"], *model_names(other.upstreams))
    return _upstream(other, facts, use, result, names)


def resolve(
    data: dict[str, Any], source: str, chain: tuple[str, ...]
) -> tuple[tuple[Upstream, ...], list[Problem]]:
    """Fill data (the spec with its defaults) from the experiments it starts from; their records, and the
    problems that keep them from being used. Each other spec is read and derived once."""
    from .facts import derive  # facts reads specs: imported when a spec starts from another

    chain = (*chain, str(Path(source).resolve()))
    upstreams: list[Upstream] = []
    problems: list[Problem] = []
    origin = data["model"].get("from")
    if origin:
        other, found = _load(origin["experiment"], source, chain, "$.model.from.experiment")
        problems += found
        if other is not None:
            facts = derive(other)
            if refusal := _unfit_base(other, facts, origin["use"], data["method"]["type"]):
                problems.append(refusal)
            else:
                upstreams.append(_fill_model(data["model"], other, facts, origin["use"]))
    reward = data["stage"].get("ppo", {}).get("rewardModel", {})
    if data["stage"]["type"] == "ppo" and "experiment" in reward:
        other, found = _load(reward["experiment"], source, chain, "$.stage.ppo.rewardModel.experiment")
        problems += found
        if other is not None:
            facts = derive(other)
            if refusal := _unfit_reward(other, facts, reward["type"]):
                problems.append(refusal)
            else:
                reward["path"] = (facts.merged_dir if reward["type"] == "full" else None) or facts.output_dir
                upstreams.append(_upstream(other, facts, "reward", reward["path"]))
    return tuple(upstreams), problems


USE_WORDS = {"merged": "its model", "adapter": "its adapter, trained further", "reward": "its reward model"}


def lineage(upstreams: tuple[Upstream, ...], name: str, run_id: str) -> list[str]:
    """Each chain that ends in this run, from its start: 'sft run 1a2b (sft) -> dpo run 3c4d (this run)'."""
    if not upstreams:
        return []
    lines = []
    for upstream in upstreams:
        for before in lineage(upstream.before, upstream.name, upstream.run_id) or [
            f"{upstream.name} run {upstream.run_id} ({upstream.stage})"
        ]:
            lines.append(f"{before} -> {name} run {run_id}: {USE_WORDS[upstream.use]} {upstream.result}")
    return lines
