"""core.report: the run report's sections from a status, in Markdown and in self-contained HTML."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from generator.core import report
from generator.core.facts import derive
from generator.core.spec import load_spec

pytestmark = pytest.mark.unit

SPEC = Path(__file__).resolve().parents[2] / "values" / "llama31-qa" / "experiment.yaml"


def a_status(simulated: bool = False) -> dict[str, object]:
    pod = {
        "name": "p", "phase": "Succeeded", "node": "n", "simulated": simulated, "gpus": 1, "waiting": "", "problem": "",
        "images": {"train": {"image": "registry/llamafactory-plus:0.9.5", "id": "registry/llamafactory-plus@sha256:abc"}},
    }  # fmt: skip
    job = {"kind": "Job", "name": "llama31-qa-train-1", "state": "Complete",
           "started": "2026-11-28T10:00:00Z", "finished": "2026-11-28T11:30:00Z"}  # fmt: skip
    serving = {"kind": "Deployment", "name": "llama31-qa-vllm", "state": "Available",
               "started": "2026-11-28T11:40:00Z", "finished": ""}  # fmt: skip
    return {
        "releases": [
            {"component": "train", "pods": [pod], "objects": [job]},
            {"component": "vllm", "pods": [], "objects": [serving]},
        ],
        "training": {"current_steps": 300, "total_steps": 300, "epoch": 3.0, "loss": 0.91, "elapsed": "1:29:10",
                     "throughput": None, "problems": [], "loss_curve": [[1, 2.0], [300, 0.91]]},
        "checkpoints": [{"step": 300, "saved_at": "2026-11-28T11:29:00Z", "size_bytes": 168 * 1024**2}],
    }  # fmt: skip


def test_every_section_from_the_status_and_the_cost_of_real_gpu_time() -> None:
    spec = load_spec(SPEC)
    facts = derive(spec)
    text = SPEC.read_text()
    parts = dict(report.sections(text, spec.data, facts, a_status(), price_per_gpu_hour=2.5))
    assert list(parts) == ["Lineage", "Training", "Evaluation", "Stages", "Cost", "Serving"]
    assert parts["Evaluation"] == ["- no evaluation gate in the spec (evaluate:)"]
    lineage = "\n".join(parts["Lineage"])
    assert f"run id `{facts.run_id}`" in lineage and report.spec_hash(text) in lineage
    assert (
        "- LLaMA-Factory 0.9.5 (image `registry.example.internal/llamafactory-k8s/llamafactory-plus:0.9.5`); vLLM 0.33.0"
        in lineage
    )
    assert (
        "| train/train | `registry/llamafactory-plus:0.9.5` | `registry/llamafactory-plus@sha256:abc` |"
        in lineage
    )
    training = "\n".join(parts["Training"])
    assert "steps 300/300" in training and "tokens/s: not recorded" in training
    assert "step 300 (168.0 MiB, 2026-11-28T11:29:00Z)" in training
    stages = "\n".join(parts["Stages"])
    assert "| train | Job `llama31-qa-train-1` | Complete | 90 min 00 s | 1 |" in stages
    assert "| vllm | Deployment `llama31-qa-vllm` | Available | not recorded | 0 |" in stages
    assert parts["Cost"][:2] == [
        "- GPU-hours of the finished workloads: 1.50 (serving counted until it became available)",
        "- at 2.50 per GPU-hour: 3.75",
    ]
    assert f"- `{facts.served_name}` at the vllm release `{facts.releases['vllm']}`" in parts["Serving"]


def test_simulated_stages_cost_nothing_and_say_so() -> None:
    spec = load_spec(SPEC)
    parts = dict(report.sections("x", spec.data, derive(spec), a_status(simulated=True), None))
    assert "(SIMULATED: kwok, no container ran)" in "\n".join(parts["Stages"])
    assert parts["Cost"] == [
        "- GPU-hours of the finished workloads: 0.00 (serving counted until it became available)",
        "- cost: no price given (resources.gpu.pricePerHour or --price-per-gpu-hour)",
        "- simulated stages are left out: no GPU was used",
    ]


def test_markdown_links_the_curve_and_html_carries_it_inline_escaped() -> None:
    parts = [("Training", ["- loss `<b>`"]), ("Stages", ["| a | b |", "| --- | --- |", "| 1 | `x` |"])]
    md = report.markdown("exp: run r", parts, "report.loss.png")
    assert md.startswith("# exp: run r\n") and "![loss per step](report.loss.png)" in md
    page = report.html_page("exp: run r", parts, b"\x89PNGdata")
    assert "<li>loss <code>&lt;b&gt;</code></li>" in page
    assert "<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td><code>x</code></td></tr></table>" in page
    assert 'src="data:image/png;base64,iVBOR2RhdGE="' in page


def test_the_evaluation_section_sets_both_models_side_by_side_with_the_verdict() -> None:
    spec = load_spec(Path(__file__).resolve().parents[2] / "values" / "tiny-cpu" / "experiment.yaml")
    facts = derive(spec)
    status = a_status()
    parts = dict(report.sections("x", spec.data, facts, status, None))
    assert parts["Evaluation"] == ["- scores: not recorded (not written yet, or the storage was not read)"]
    status["evaluation"] = {
        "metric": "rouge-l", "maxDrop": 0.0, "floor": 5.0, "passed": False,
        "why": ["rouge-l 3.10 is below the floor 5"],
        "base": {"bleu-4": 1.0, "rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.5, "seconds": 9.0},
        "tuned": {"bleu-4": 4.5, "rouge-1": 6.0, "rouge-2": 0.0, "rouge-l": 3.1, "seconds": 3.0},
    }  # fmt: skip
    evaluation = dict(report.sections("x", spec.data, facts, status, None))["Evaluation"]
    assert evaluation[:2] == [
        "- rule: the tuned model's rouge-l at most 0 below the base model's, and at least 5",
        "- verdict: FAILED, not served (rouge-l 3.10 is below the floor 5)",
    ]
    assert (
        "| rouge-l | 0.50 | 3.10 | +2.60 |" in evaluation and "| bleu-4 | 1.00 | 4.50 | +3.50 |" in evaluation
    )


def test_an_earlier_run_is_reported_from_its_own_folders_and_workloads_only() -> None:
    from generator.core.facts import for_run

    spec = load_spec(SPEC)
    facts = derive(spec)
    earlier = for_run(spec, facts, "0badc0de")
    assert earlier.run_id == "0badc0de" and earlier.output_dir == f"/storage/output/{spec.name}/0badc0de"
    assert earlier.merged_dir == f"/storage/models/merged/{spec.name}/0badc0de"
    assert for_run(spec, facts, facts.run_id) is facts
    status = a_status()
    train = status["releases"][0]  # type: ignore[index]
    train["objects"] = [
        {**train["objects"][0], "run_id": facts.run_id},
        {**train["objects"][0], "name": "llama31-qa-train-0", "run_id": "0badc0de"},
    ]
    current = "\n".join(dict(report.sections("x", spec.data, facts, status, None))["Stages"])
    assert "llama31-qa-train-1" in current and "llama31-qa-train-0" not in current
    old = "\n".join(dict(report.sections("x", spec.data, earlier, status, None))["Stages"])
    assert "llama31-qa-train-0" in old and "llama31-qa-train-1" not in old


def test_status_reads_the_gate_scores_only_when_they_are_whole() -> None:
    from generator.ops.status import parse_scores

    whole = '{"metric": "rouge-l", "base": {"rouge-l": 1.0}, "tuned": {"rouge-l": 2.0}, "passed": true, "why": []}'
    assert parse_scores(whole) == {
        "metric": "rouge-l", "base": {"rouge-l": 1.0}, "tuned": {"rouge-l": 2.0}, "passed": True, "why": [],
    }  # fmt: skip
    assert parse_scores(None) is None and parse_scores("") is None
    assert parse_scores('{"metric": "rouge-l"') is None and parse_scores("[1, 2]") is None


def test_the_datasets_as_tokenized_and_the_mfu_of_a_known_gpu() -> None:
    spec = load_spec(SPEC)  # llama31-qa: Llama 3.1 8B, LoRA, one A100 80GB
    facts = derive(spec)
    status = a_status()
    status["datasets"] = {"qa_dataset": {"qa_dataset.json": "ab" * 32}}
    status["training"]["throughput"] = 3000.0  # type: ignore[index]
    parts = dict(report.sections("x", spec.data, facts, status, None))
    assert f"- dataset `qa_dataset`: `qa_dataset.json` sha256 `{'ab' * 8}`" in parts["Lineage"]
    # 4 x 8.03e9 FLOPs per token (LoRA: no weight gradients for the frozen weights) x 3000 tokens/s over 312 TFLOPS
    [mfu] = [line for line in parts["Training"] if "MFU" in line]
    size = facts.model_info.parameters_b  # type: ignore[union-attr]
    expected = 4 * size * 1e9 * 3000 / 312e12
    assert mfu.startswith(
        f"- MFU: {expected:.1%} (4 x {size:g}B parameters x 3000 tokens/s over 1 x 312 TFLOPS"
    )


def test_what_the_run_did_not_record_says_why() -> None:
    spec = load_spec(SPEC)
    parts = dict(report.sections("x", spec.data, derive(spec), a_status(), None))
    assert "- dataset hashes: not recorded (the data is hashed when it is tokenized once; or the run's output " \
           "folder was not read)" in parts["Lineage"]  # fmt: skip
    assert "- MFU: not recorded (needs tokens/s)" in parts["Training"]


def test_the_spec_prices_the_gpu_hours_unless_the_flag_does() -> None:
    spec = load_spec(SPEC)
    spec.data["resources"]["gpu"]["pricePerHour"] = 4.0
    facts = derive(spec)
    assert (
        "- at 4.00 per GPU-hour: 6.00"
        in dict(report.sections("x", spec.data, facts, a_status(), None))["Cost"]
    )
    assert (
        "- at 2.50 per GPU-hour: 3.75"
        in dict(report.sections("x", spec.data, facts, a_status(), 2.5))["Cost"]
    )


def test_the_figures_as_mlflow_tags_are_only_what_was_recorded() -> None:
    spec = load_spec(SPEC)
    facts = derive(spec)
    status = a_status()
    status["datasets"] = {"qa_dataset": {"qa_dataset.json": "ab" * 32}}
    tags = report.figures("spec text", spec.data, facts, status, 2.5)
    assert tags["lfk.spec_sha256"] == report.spec_hash("spec text")
    assert tags["lfk.dataset.qa_dataset.qa_dataset.json.sha256"] == "ab" * 32
    assert tags["lfk.llamafactory_version"] == "0.9.5" and tags["lfk.vllm_version"] == "0.33.0"
    assert tags["lfk.wall_seconds.train"] == "5400" and "lfk.wall_seconds.vllm" not in tags
    assert tags["lfk.gpu_hours"] == "1.500" and tags["lfk.cost"] == "3.75"
    assert tags["lfk.served_name"] == facts.served_name and tags["lfk.served_by"] == facts.releases["vllm"]
    assert "lfk.tokens_per_s" not in tags and "lfk.mfu" not in tags, "the trainer logged no throughput"


def test_mlflow_tag_keys_keep_to_what_mlflow_accepts_and_shards_make_one_digest() -> None:
    spec = load_spec(SPEC)
    status = a_status()
    status["datasets"] = {"qa:v2": {"part-0.json": "aa", "part-1.json": "bb"}, "one": {"ł ó.json": "cc"}}
    tags = report.figures("x", spec.data, derive(spec), status, None)
    assert tags["lfk.dataset.one._ _.json.sha256"] == "cc"
    assert len(tags["lfk.dataset.qa_v2.sha256"]) == 64 and "lfk.dataset.qa_v2.part-0.json.sha256" not in tags
    assert all(len(k) <= 250 and re.fullmatch(r"[A-Za-z0-9_\-. /]+", k) for k in tags)


def test_the_gates_rule_is_said_for_each_kind_of_metric() -> None:

    rouge = {"metric": "rouge-l", "maxDrop": 1.0, "floor": 20.0, "base": {"rouge-l": 30.0}}
    assert report.gate_rule(rouge) == "at most 1 below the base model's, and at least 20"
    perplexity = {"metric": "perplexity", "maxDrop": 5.0, "floor": 400.0, "base": {"perplexity": 380.0}}
    assert report.gate_rule(perplexity) == "at most 5 above the base model's, and at most 400"
    reward = {
        "metric": "pairwise-accuracy",
        "maxDrop": 0.0,
        "base": {"pairwise-accuracy": 50.0, "chance": 1.0},
    }
    assert report.gate_rule(reward) == "at most 0 below chance (50)"
