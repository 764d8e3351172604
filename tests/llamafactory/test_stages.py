"""Every training stage beyond supervised fine-tuning, run for real by the chart's scripts from the rendered
experiment (tokenize hook, train.sh, merge.sh, the gate) on a tiny model: DPO with a reference model (sigmoid)
and without one (SimPO), KTO, pre-training on raw text, a reward model, and PPO scored by that reward model.
The gate judges DPO by preference accuracy, pre-training by perplexity and the reward model by its value
head's pairwise accuracy (likelihood.py). The
data of each stage is made here from the smoke fixtures' answers: pairs (the answer's words backwards chosen,
the answer rejected), tagged answers, raw text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import smoke

STEPS, SAVE_STEPS = 4, 2
DPO_STEPS = 16


def stage_data(data_dir: Path) -> dict[str, dict[str, Any]]:
    """The stages' datasets, written into data_dir; their spec data.register entries."""
    data_dir.mkdir(parents=True, exist_ok=True)
    rows = smoke.ALPACA
    # the chosen answer is the words of the fixture's answer backwards, the rejected one the answer itself: a
    # preference the tiny model (made from the answers in order) does not have, and learns in a few steps
    pairs = [
        {"instruction": r["instruction"], "input": r.get("input", ""),
         "chosen": " ".join(reversed(r["output"].split())), "rejected": r["output"]}
        for r in rows
    ]  # fmt: skip
    tagged = [
        {"instruction": r["instruction"], "output": answer, "label": good}
        for i, r in enumerate(rows)
        for answer, good in ((r["output"], True), (rows[(i + 1) % len(rows)]["output"], False))
    ]
    text = [{"text": f"{r['instruction']} {r['output']}"} for r in rows]
    for name, content in (("pairs.json", pairs), ("tagged.json", tagged), ("text.json", text)):
        (data_dir / name).write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    return {
        "tiny_pairs": {"file": "pairs.json", "ranking": True, "columns": {
            "prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}},
        "tiny_tagged": {"file": "tagged.json", "columns": {
            "prompt": "instruction", "response": "output", "kto_tag": "label"}},
        "tiny_text": {"file": "text.json", "columns": {"prompt": "text"}},
    }  # fmt: skip


def workspace(
    root: Path, name: str, stage: dict[str, Any], dataset: str, steps: int = STEPS, rate: float = 5.0e-4
) -> smoke.Workspace:
    spec = yaml.safe_load(smoke.SPEC)
    spec["name"] = name
    spec["stage"] = stage
    spec["data"]["register"].update(stage_data(root / "data"))
    spec["data"]["datasets"] = [dataset]
    spec["training"].update(maxSteps=steps, saveSteps=SAVE_STEPS, learningRate=rate)
    # the gate scores what the stage is for, on the stage's own data (pairs, text)
    spec["evaluate"]["dataset"] = {
        "dpo": "tiny_pairs",
        "kto": "tiny_pairs",
        "rm": "tiny_pairs",
        "pt": "tiny_text",
    }.get(stage["type"], "tiny_alpaca")
    return smoke.prepare(root, yaml.safe_dump(spec))


def gate(ws: smoke.Workspace, log: Path) -> dict[str, Any]:
    """The eval Job's gate as the chart renders it; its scores."""
    code = smoke.evaluate(ws, log)
    scores: dict[str, Any] = json.loads(ws.local(str(ws.eval_values["scoresFile"])).read_text())
    assert code in (0, 5), log.read_text()[-3000:]
    assert (code == 0) == scores["passed"]
    return scores


def steps(ws: smoke.Workspace) -> list[int]:
    return [entry["current_steps"] for entry in smoke.trainer_log(ws)]


def run(ws: smoke.Workspace, log: Path, preempt: bool = False) -> int:
    assert smoke.tokenize(ws, log) == 0, log.read_text()[-3000:]
    return smoke.train(ws, log, preempt=preempt)


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stages")


def test_dpo_trains_is_preempted_resumes_and_merges(storage: Path) -> None:
    # long and fast enough for the tiny model to learn the pairs, so the gate sees a change
    dpo = {"type": "dpo", "dpo": {"loss": "sigmoid", "beta": 0.1}}
    ws = workspace(storage, "dpo", dpo, "tiny_pairs", steps=DPO_STEPS, rate=5.0e-3)
    config = yaml.safe_load(ws.train_config.read_text())
    assert (config["stage"], config["pref_loss"], config["pref_beta"]) == ("dpo", "sigmoid", 0.1)
    log = storage / "dpo.log"
    assert run(ws, log, preempt=True) == 137, log.read_text()[-3000:]
    assert (ws.output_dir / f"checkpoint-{SAVE_STEPS}").is_dir()
    assert smoke.train(ws, log) == 0, log.read_text()[-3000:]
    assert f"Resuming training from {ws.output_dir}/checkpoint-{SAVE_STEPS}" in log.read_text()
    assert steps(ws)[-1] == DPO_STEPS
    assert smoke.merge(ws, log) == 0, log.read_text()[-3000:]
    assert (ws.merged_dir / "model.safetensors").is_file()
    # the gate: preference accuracy on the pairs, the merged model against the model it started from
    scores = gate(ws, log)
    assert scores["metric"] == "preference-accuracy" and scores["tuned"]["pairs"] == len(smoke.ALPACA)
    assert scores["tuned"]["preference-accuracy"] > scores["base"]["preference-accuracy"], scores
    assert scores["passed"], scores


def test_simpo_needs_no_reference_model_and_trains(storage: Path) -> None:
    ws = workspace(
        storage, "simpo", {"type": "dpo", "dpo": {"loss": "simpo", "simpoGamma": 1.0}}, "tiny_pairs"
    )
    log = storage / "simpo.log"
    assert run(ws, log) == 0, log.read_text()[-3000:]
    assert steps(ws)[-1] == STEPS
    assert "simpo_gamma: 1.0" in ws.train_config.read_text()


def test_kto_trains_on_tagged_answers(storage: Path) -> None:
    ws = workspace(storage, "kto", {"type": "kto", "kto": {"undesirableWeight": 1.5}}, "tiny_tagged")
    log = storage / "kto.log"
    assert run(ws, log) == 0, log.read_text()[-3000:]
    assert steps(ws)[-1] == STEPS
    assert (ws.output_dir / "adapter_model.safetensors").is_file()


def test_pretraining_trains_on_raw_text_and_lowers_its_perplexity(storage: Path) -> None:
    ws = workspace(storage, "pt", {"type": "pt"}, "tiny_text")
    log = storage / "pt.log"
    assert run(ws, log) == 0, log.read_text()[-3000:]
    assert steps(ws)[-1] == STEPS
    assert smoke.merge(ws, log) == 0, log.read_text()[-3000:]
    scores = gate(ws, log)
    assert scores["metric"] == "perplexity" and scores["tuned"]["tokens"] > 0
    assert scores["tuned"]["perplexity"] < scores["base"]["perplexity"], scores


def test_a_reward_model_trains_and_ppo_with_it_fails_as_validation_says(storage: Path) -> None:
    """The reward model trains (LoRA and its value head); PPO scored by it is rendered and run, and LLaMA-Factory
    0.9.5 stops on the trl version exactly as `lfk validate` says when it refuses stage ppo."""
    from generator.core.rules.stages import UNTRAINABLE

    rm = workspace(storage, "reward", {"type": "rm"}, "tiny_pairs", steps=DPO_STEPS, rate=5.0e-3)
    log = storage / "rm.log"
    # preempted after its first checkpoint, it resumes (a LoRA reward model can; LLaMA-Factory only warns)
    assert run(rm, log, preempt=True) == 137, log.read_text()[-3000:]
    assert smoke.train(rm, log) == 0, log.read_text()[-3000:]
    assert f"Resuming training from {rm.output_dir}/checkpoint-{SAVE_STEPS}" in log.read_text()
    assert steps(rm) == [*range(1, DPO_STEPS + 1), DPO_STEPS]
    assert (rm.output_dir / "value_head.safetensors").is_file()
    # its gate: the merged reward model's value head ranks the pairs better than chance
    assert smoke.merge(rm, log) == 0, log.read_text()[-3000:]
    assert (rm.merged_dir / "value_head.safetensors").is_file()
    scores = gate(rm, log)
    assert scores["metric"] == "pairwise-accuracy" and scores["base"] == {
        "pairwise-accuracy": 50.0,
        "chance": 1.0,
    }
    assert scores["tuned"]["pairwise-accuracy"] > 50.0 and scores["passed"], scores
    ppo = workspace(
        storage,
        "ppo",
        {
            "type": "ppo",
            "ppo": {"rewardModel": {"path": rm.facts.output_dir}, "maxNewTokens": 8, "epochs": 1},
        },
        "tiny_alpaca",
    )
    config = yaml.safe_load(ppo.train_config.read_text())
    assert config["reward_model"] == str(rm.output_dir) and config["overwrite_output_dir"] is True
    log = storage / "ppo.log"
    assert run(ppo, log) == 1
    assert "trl>=0.8.6,<=0.9.6 is required" in log.read_text(), log.read_text()[-3000:]
    assert "trl>=0.8.6,<=0.9.6" in UNTRAINABLE["0.9.5"]["ppo"]
