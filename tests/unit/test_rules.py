"""Cross-field rules (generator/core/rules/) on specs written here: the evaluation gate, tokenizing once, a
merge target that may replace nothing shared, every spec path on the storage, registered dataset files, values
that slip past the schema, and pass-through arguments (text through the YAML dumper, keys the config holds)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from generator.core import describe
from generator.core.facts import derive
from generator.core.problems import Problem
from generator.core.render import render
from generator.core.rules import validate
from generator.core.rules.llamafactory import dataset_entries
from generator.core.spec import Spec, spec_from_text
from generator.errors import SpecError
from tests.support.specs import BASE, spec_with


def spec_of(extra: str, folder: Path) -> Spec:
    """The spec as folder/exp/experiment.yaml: its neighbours (folder/*/experiment.yaml) are the test's own."""
    return spec_with(extra, folder / "exp" / "experiment.yaml")


def problems(extra: str, tmp_path: Path) -> list[str]:
    return [f"{p.path} {p.severity}: {p.message}" for p in validate(spec_of(extra, tmp_path))]


def problems_of(spec: Spec) -> list[Problem]:
    return [p for p in validate(spec) if p.severity == "error"]


def test_a_held_out_set_before_serving_raises_nothing(tmp_path: Path) -> None:
    assert problems("evaluate: {dataset: qa_holdout}\n", tmp_path) == []


def test_scoring_the_training_data_or_serving_nothing_is_warned_about(tmp_path: Path) -> None:
    found = problems("evaluate: {dataset: qa_dataset}\nserve: {enabled: false}\n", tmp_path)
    assert found == [
        "$.evaluate.dataset warning: qa_dataset is also a training dataset: its scores overstate what the tuned "
        "model learned",
        "$.evaluate warning: nothing is served: the gate only scores the models (lfk status and lfk report show "
        "the scores)",
    ]


def test_streaming_rules_out_tokenizing_once_unless_it_is_turned_off(tmp_path: Path) -> None:
    assert [p for p in problems("llamafactoryArgs: {streaming: true}\n", tmp_path) if "streamed" in p]
    off = "data: {datasets: [qa_dataset], tokenizeOnce: false}\nllamafactoryArgs: {streaming: true}\n"
    assert not [p for p in problems(off, tmp_path) if "streamed" in p]


# ------------------------------------------------------------------ paths: one spelling, no data destroyed


@pytest.mark.parametrize(
    ("export_dir", "message"),
    [
        ("/storage", "is the storage mount itself"),
        ("/storage/models", "is not a folder under /storage/models/"),
        ("/storage/models/", "is not a folder under /storage/models/"),
        ("/storage/output/x", "is not a folder under /storage/models/"),
        ("/storage/data", "is not a folder under /storage/models/"),
        ("/storage/models/merged", "where every experiment's runs are published by default"),
        ("/storage/models/merged/demo", "where every experiment's runs are published by default"),
        ("/storage/models/llama-3.2-1b-instruct", "would overwrite the base model"),
        ("//storage/models/llama-3.2-1b-instruct", "would overwrite the base model"),
        ("/storage//models/llama-3.2-1b-instruct/", "would overwrite the base model"),
        ("/storage/models/./llama-3.2-1b-instruct", "would overwrite the base model"),
        ("/storage/models/llama-3.2-1b-instruct/merged", "is inside the base model"),
        ("/storage/models/../models/llama-3.2-1b-instruct", "has a `..` segment"),
        ("/storage/models/x/../../..", "has a `..` segment"),
        ("/tmp/merged", "is not under the storage mount"),
    ],
)
def test_a_merge_target_that_would_replace_a_shared_folder_is_refused(
    export_dir: str, message: str, tmp_path: Path
) -> None:
    found = problems(f"merge: {{exportDir: {export_dir!r}}}\n", tmp_path)
    assert [p for p in found if p.startswith("$.merge.exportDir error: ") and message in p], found


def test_a_merge_target_holding_the_base_model_is_refused(tmp_path: Path) -> None:
    extra = "model: {path: /storage/models/meta/llama-3.2-1b-instruct}\nmerge: {exportDir: /storage/models/meta}\n"
    assert [p for p in problems(extra, tmp_path) if "contains the base model" in p]


def test_a_merge_target_of_its_own_is_published_at_its_one_spelling(tmp_path: Path) -> None:
    extra = "model: {path: /storage//models/llama-3.2-1b-instruct/}\nmerge: {exportDir: /storage//models/./mine/}\n"
    assert problems(extra, tmp_path) == []
    facts = derive(spec_of(extra, tmp_path))
    assert (facts.merged_dir, facts.base_model) == (
        "/storage/models/mine",
        "/storage/models/llama-3.2-1b-instruct",
    )


def test_a_merge_target_may_not_replace_what_a_neighbouring_experiment_reads(tmp_path: Path) -> None:
    """Experiments kept side by side (values/<exp>/) share the storage: one's merge must not replace another's
    base model, data or merge target."""
    neighbour = tmp_path / "other" / "experiment.yaml"
    neighbour.parent.mkdir()
    neighbour.write_text(
        BASE.replace("demo", "other").replace("llama-3.2-1b-instruct", "qwen2.5-7b-instruct")
        + "merge: {exportDir: /storage/models/other-merged}\n"
    )
    mine = tmp_path
    for target, what in [
        ("/storage/models/qwen2.5-7b-instruct", "experiment other's model.path"),
        ("/storage/models/qwen2.5-7b-instruct/sub", "experiment other's model.path"),
        ("/storage/models/other-merged", "experiment other's merge.exportDir"),
    ]:
        found = problems(f"merge: {{exportDir: {target}}}\n", mine)
        assert [p for p in found if what in p], (target, found)
    assert problems("merge: {exportDir: /storage/models/demo-merged}\n", mine) == []


@pytest.mark.parametrize(
    ("extra", "where", "message"),
    [
        ("model: {path: /storage/models/../../etc}", "$.model.path", "has a `..` segment"),
        ("model: {path: /storage}", "$.model.path", "is the storage mount itself"),
        ("data: {datasets: [qa], dir: /storage/data/..}", "$.data.dir", "has a `..` segment"),
        ("data: {datasets: [qa], dir: //etc}", "$.data.dir", "is not under the storage mount"),
        (
            "llamafactoryArgs: {cache_dir: /tmp/cache}",
            "$.llamafactoryArgs.cache_dir",
            "not under the storage",
        ),
        (
            "llamafactoryArgs: {offload_folder: /root}",
            "$.llamafactoryArgs.offload_folder",
            "not under the storage",
        ),
        (
            "llamafactoryArgs: {resume_from_checkpoint: /storage/output/../../x}",
            "$.llamafactoryArgs.resume_from_checkpoint",
            "has a `..` segment",
        ),
        ("storage: {nfs: {server: nfs, path: /exports/../etc}}", "$.storage.nfs.path", "has a `..` segment"),
    ],
)
def test_every_spec_path_is_refused_when_it_climbs_or_leaves_the_storage(
    extra: str, where: str, message: str, tmp_path: Path
) -> None:
    found = problems(extra + "\n", tmp_path)
    assert [p for p in found if p.startswith(f"{where} error: ") and message in p], found


def test_a_registered_file_outside_the_dataset_directory_is_refused_by_the_rule_too(tmp_path: Path) -> None:
    """The schema's pattern refuses it first; the rule says why when the entry comes from elsewhere."""
    spec = spec_of("data: {datasets: [qa], register: {qa: {file: qa.json}}}\n", tmp_path)
    for file in ("/etc/passwd", "../../etc/qa.json", "a/../../b.json"):
        spec.data["data"]["register"]["qa"]["file"] = file
        found = [(p.path, p.message) for p in dataset_entries(spec, derive(spec))]
        assert found == [("$.data.register.qa.file", f"{file!r} is not inside the dataset directory")]


# ------------------------------------------------------- values no schema keyword refuses, and what renders


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ('name: "demo\\n"', "$.name", "does not match"),
        ('data: {datasets: [qa_dataset], dir: "/storage/data\\n"}', "$.data.dir", "does not match"),
        ('resources: {nodeSelector: {"pool\\n": gpu}}', "$.resources.nodeSelector", "does not match"),
        (
            'llamafactoryArgs: {neftune_noise_alpha: 5, "packing\\n": true}',
            "$.llamafactoryArgs",
            "does not match",
        ),
        ("llamafactoryArgs: {1: x}", "$.llamafactoryArgs", "the key 1 is not a string"),
        ("training: {learningRate: .nan}", "$.training.learningRate", "nan is not a finite number"),
        ("serve: {gpuMemoryUtilization: .nan}", "$.serve.gpuMemoryUtilization", "nan is not a finite number"),
        (
            "llamafactoryArgs: {neftune_noise_alpha: .inf}",
            "$.llamafactoryArgs.neftune_noise_alpha",
            "inf is not",
        ),
        (
            "llamafactoryArgs: {neftune_noise_alpha: 2024-01-01}",
            "$.llamafactoryArgs.neftune_noise_alpha",
            "date",
        ),
        ('llamafactoryArgs: {default_system: "a\\u0000b"}', "$.llamafactoryArgs.default_system", "U+0000"),
        ('llamafactoryArgs: {default_system: "a\\u2028b"}', "$.llamafactoryArgs.default_system", "U+2028"),
    ],
)
def test_values_that_slip_past_the_schema_are_refused_with_their_path(
    text: str, where: str, message: str, tmp_path: Path
) -> None:
    document = {**yaml.safe_load(BASE), **yaml.safe_load(text)}
    try:  # the schema's patterns refuse what they can (a pattern's `(?!\n)$` a final newline), the rules the rest
        spec = spec_from_text(yaml.safe_dump(document), str(tmp_path / "experiment.yaml"))
    except SpecError as exc:
        found = [(p.path, p.message) for p in exc.problems]
    else:
        found = [(p.path, p.message) for p in validate(spec)]
    assert [m for path, m in found if path == where and message in m], found


def test_passed_through_text_renders_through_the_yaml_dumper(tmp_path: Path) -> None:
    """Lines, quotes, colons and a YAML-looking value in a pass-through argument arrive as written."""
    system = 'Line one: "quoted"\n\tline two # not a comment\n- not a list'
    extra = {"llamafactoryArgs": {"default_system": system, "neftune_noise_alpha": 5}}
    document = {**yaml.safe_load(BASE), **extra}
    spec = spec_from_text(yaml.safe_dump(document), str(tmp_path / "experiment.yaml"))
    assert problems_of(spec) == []
    train = next(r for r in render(spec) if r.component == "train")
    assert train.values["train"]["config"]["default_system"] == system


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("deepspeed", "distributed.deepspeed"),
        ("ddp_timeout", "distributed.ddpTimeout"),
        ("plot_loss", "always true"),
        ("ray_num_workers", "derived"),
    ],
)
def test_pass_through_keys_the_rendered_config_already_holds_are_refused(
    key: str, hint: str, tmp_path: Path
) -> None:
    """Each would appear twice in the training config (and a second deepspeed file replaces the managed one)."""
    spec = spec_of(f"llamafactoryArgs: {{{key}: /storage/ds.json}}\n", tmp_path)
    found = [(p.path, p.message, p.hint) for p in validate(spec)]
    assert [f for f in found if f[0] == f"$.llamafactoryArgs.{key}" and hint in (f[2] or "")], found


def test_oft_is_merged_and_served_merged_never_as_a_lora_adapter(tmp_path: Path) -> None:
    """OFT trains an adapter the merge folds in, like LoRA; vLLM loads LoRA adapters only."""
    assert problems("method: {type: oft}\n", tmp_path) == []
    spec = spec_of("method: {type: oft}\n", tmp_path)
    assert set(derive(spec).releases) >= {"train", "merge", "vllm"}
    assert problems("method: {type: oft}\nserve: {source: adapter}\n", tmp_path) == [
        "$.serve.source error: vLLM serves LoRA adapters only, not oft ones"
    ]
    assert problems("method: {type: oft, lora: {rank: 8}}\n", tmp_path) == [
        "$.method.lora warning: LoRA settings are ignored for oft fine-tuning"
    ]
    assert problems("method: {type: lora, oft: {blockSize: 16}}\n", tmp_path) == [
        "$.method.oft warning: OFT settings are ignored for lora fine-tuning"
    ]


VISION = """
model: {path: /storage/models/qwen2-vl-7b-instruct, template: qwen2_vl, parametersB: 8.3}
data:
  datasets: [receipts]
  media: {imageMaxPixels: 262144}
  register:
    receipts: {file: receipts.json, format: sharegpt, columns: {messages: messages, images: images}}
"""


def test_vllm_takes_the_media_the_training_had_at_its_pixel_budget(tmp_path: Path) -> None:
    """1 image a request, no video (Qwen2-VL's template takes both, the data carried images), and images scaled to
    what the training scaled them to: data.media's maximum, LLaMA-Factory's default minimum (32 x 32)."""
    facts = derive(spec_of(VISION, tmp_path))
    assert facts.serve_media == {"image": 1, "video": 0}
    assert facts.serve_pixels == {"min_pixels": 1024, "max_pixels": 262144}
    vllm = next(r.values["vllm"] for r in render(spec_of(VISION, tmp_path)) if r.component == "vllm")
    assert vllm["multimodal"] == {
        "limitPerPrompt": {"image": 1, "video": 0}, "processorKwargs": {"min_pixels": 1024, "max_pixels": 262144},
    }  # fmt: skip
    described = describe.text(describe.description(spec_of(VISION, tmp_path), facts))
    assert (
        described[-1]
        == "  media         a request carries at most: 1 image, 0 video; images at 1024..262144 pixels"
    )


def test_a_text_model_is_served_without_multimodal_settings(tmp_path: Path) -> None:
    facts = derive(spec_of("serve: {}", tmp_path))
    assert (facts.serve_media, facts.serve_pixels) == ({}, {})
    vllm = next(r.values["vllm"] for r in render(spec_of("serve: {}", tmp_path)) if r.component == "vllm")
    assert "multimodal" not in vllm


def test_media_per_prompt_is_taken_as_given_and_ignored_for_media_the_template_does_not_take(
    tmp_path: Path,
) -> None:
    chosen = VISION + "serve: {mediaPerPrompt: {images: 4, videos: 1}}\n"
    assert derive(spec_of(chosen, tmp_path)).serve_media == {"image": 4, "video": 1}
    assert problems(VISION + "serve: {mediaPerPrompt: {audios: 1}}\n", tmp_path) == [
        "$.serve.mediaPerPrompt.audios warning: template qwen2_vl takes images, videos, not audios: ignored"
    ]
    assert problems("serve: {mediaPerPrompt: {images: 1}}", tmp_path) == [
        "$.serve.mediaPerPrompt.images warning: template llama3 takes no media, not images: ignored"
    ]
