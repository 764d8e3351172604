"""Cross-release facts: the run id, paths, templates, GPU memory, and vLLM's LoRA ranks (the contract's)
as the schemas repeat them."""

from __future__ import annotations

from generator.core.facts import derive, infer_template, run_id, smallest_lora_rank
from generator.core.spec import spec_from_text

BASE = """
name: demo
storage: {existingClaim: llm-storage}
model: {path: /storage/models/llama-3.1-8b-instruct}
data: {datasets: [qa_dataset]}
"""


def spec(extra: str = ""):  # type: ignore[no-untyped-def]
    return spec_from_text(BASE + extra, "spec.yaml")


def test_run_id_is_stable_and_short() -> None:
    assert run_id(spec()) == run_id(spec())
    assert len(run_id(spec())) == 8


def test_a_changed_hyperparameter_changes_the_run_id() -> None:
    assert run_id(spec("training: {learningRate: 1.0e-4}\n")) != run_id(spec())
    assert run_id(spec("method: {lora: {rank: 16}}\n")) != run_id(spec())
    assert run_id(spec("resources: {gpus: 2}\n")) != run_id(spec()), "world size changes the effective batch"


def test_logging_saving_and_resources_keep_the_run_id() -> None:
    same = (
        "training: {loggingSteps: 1, saveSteps: 7, saveTotalLimit: 9}\nresources: {memory: 128Gi, cpu: 32}\n"
    )
    assert run_id(spec(same)) == run_id(spec())
    assert run_id(spec("serve: {replicas: 3}\nwebui: {enabled: false}\n")) == run_id(spec())


def test_paths_follow_the_run() -> None:
    facts = derive(spec())
    assert facts.output_dir == f"/storage/output/demo/{facts.run_id}"
    assert facts.merged_dir == f"/storage/models/merged/demo/{facts.run_id}"
    assert facts.serve_model == facts.merged_dir
    assert list(facts.releases) == ["webui", "train", "merge", "vllm"]


def test_full_fine_tuning_serves_the_training_output_and_has_no_merge() -> None:
    facts = derive(spec("method: {type: full}\n"))
    assert facts.merged_dir is None
    assert "merge" not in facts.releases
    assert facts.serve_model == facts.output_dir


def test_adapter_serving_rounds_the_rank_up_to_a_vllm_choice() -> None:
    facts = derive(spec("method: {lora: {rank: 24}}\nserve: {source: adapter}\n"))
    assert facts.lora_module == facts.output_dir
    assert facts.serve_model == "/storage/models/llama-3.1-8b-instruct"
    assert facts.max_lora_rank == 32
    assert smallest_lora_rank(16) == 16 and smallest_lora_rank(513) is None


def test_templates_are_inferred_for_the_guides_popular_models() -> None:
    assert infer_template("/storage/models/llama-3.1-8b-instruct", None) == "llama3"
    assert infer_template("/storage/models/x", "meta-llama/Llama-3.2-3B-Instruct") == "llama3"
    assert infer_template("/storage/models/qwen2.5-7b", None) == "qwen"
    assert infer_template("/storage/models/m", "mistralai/Mistral-7B-Instruct-v0.3") == "mistral"
    assert infer_template("/storage/models/phi-3-mini-4k-instruct", None) == "phi"


def test_templates_fall_back_to_llamafactorys_model_table() -> None:
    # not in the catalogue or the family patterns: found through LLaMA-Factory's register_model_group table
    assert infer_template("/storage/models/x", "CohereForAI/aya-23-8B") == "cohere"
    assert infer_template("/storage/models/house-model", None) is None


def test_gpu_memory_comes_from_the_product_or_is_given() -> None:
    assert derive(spec("resources: {gpu: {product: NVIDIA-L4}}\n")).gpu_memory_gib == 24
    assert derive(spec("resources: {gpu: {product: Custom-GPU-96GB}}\n")).gpu_memory_gib == 96
    assert derive(spec("resources: {gpu: {memoryGiB: 40}}\n")).gpu_memory_gib == 40
    assert derive(spec()).gpu_memory_gib is None


def test_vllms_lora_ranks_are_one_fact_the_schemas_repeat() -> None:
    """Both schemas spell the ranks out as an enum (JSON Schema cannot refer to Python); they must agree."""
    import json

    from generator.core.facts import VLLM_LORA_RANKS
    from generator.project import CHART_SCHEMA, SPEC_SCHEMA

    spec_schema = json.loads(SPEC_SCHEMA.read_text())
    chart_schema = json.loads(CHART_SCHEMA.read_text())
    assert tuple(spec_schema["properties"]["serve"]["properties"]["maxLoraRank"]["enum"]) == VLLM_LORA_RANKS
    lora = chart_schema["properties"]["vllm"]["properties"]["lora"]["properties"]
    assert tuple(lora["maxLoraRank"]["enum"]) == VLLM_LORA_RANKS
