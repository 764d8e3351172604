"""Rendering: YAML that reads back as written, checked against the chart's own values schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from generator.core.releases.common import image_ref
from generator.core.releases.yamltext import Block
from generator.core.render import HEADER_MARK, chart_values_validator, render
from generator.core.spec import load_spec, spec_from_text
from generator.errors import SpecError

BASE = """
name: demo
storage: {nfs: {server: nfs.example.internal, path: /exports/llm}}
model: {path: /storage/models/llama-3.1-8b-instruct}
data: {datasets: [qa_dataset]}
"""


def test_image_references_split_into_the_charts_block() -> None:
    assert image_ref("hiyouga/llamafactory:0.9.5") == {
        "repository": "hiyouga/llamafactory",
        "tag": "0.9.5",
        "digest": "",
    }
    assert image_ref("registry:5000/team/vllm@sha256:" + "a" * 64) == {
        "repository": "registry:5000/team/vllm", "tag": "", "digest": "sha256:" + "a" * 64,
    }  # fmt: skip
    assert image_ref("registry:5000/lf")["repository"] == "registry:5000/lf"


def test_every_enabled_release_is_rendered_with_a_header(tmp_path: Path) -> None:
    spec_path = tmp_path / "experiment.yaml"
    spec_path.write_text(BASE)
    spec = spec_from_text(BASE, str(spec_path))
    results = render(spec, tmp_path)
    assert [r.component for r in results] == ["webui", "train", "merge", "vllm"]
    for r in results:
        assert r.text.startswith(f"{HEADER_MARK} from experiment.yaml: do not edit by hand")
        assert r.values[r.component]["enabled"] is True
        assert yaml.safe_load(r.text) == r.values


EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "values").glob("*/experiment.yaml"))


@pytest.mark.parametrize("spec_path", EXAMPLES, ids=lambda p: p.parent.name)
def test_each_examples_values_read_back_as_the_data_checked_against_the_chart(spec_path: Path) -> None:
    """The text is written and the data checked from one structure: what Helm reads must be what was checked."""
    for r in render(load_spec(spec_path)):
        assert yaml.safe_load(r.text) == r.values, r.component


def test_train_values_carry_a_resumable_llamafactory_config() -> None:
    spec = spec_from_text(BASE + "method: {type: qlora, quantization: {bits: 4}}\n", "x/experiment.yaml")
    train = next(r for r in render(spec) if r.component == "train").values["train"]
    config = train["config"]
    assert config["overwrite_output_dir"] is False
    assert config["output_dir"].startswith("/storage/output/demo/")
    assert config["finetuning_type"] == "lora" and config["quantization_bit"] == 4
    assert config["template"] == "llama3"
    assert config["report_to"] == "none"
    assert train["gpu"] == {"count": 1, "resourceName": "nvidia.com/gpu"}


def test_merge_values_use_an_explicit_16_bit_dtype_and_the_same_paths() -> None:
    spec = spec_from_text(BASE, "x/experiment.yaml")
    rendered = {r.component: r.values for r in render(spec)}
    merge, train, vllm = rendered["merge"]["merge"], rendered["train"]["train"], rendered["vllm"]["vllm"]
    assert merge["config"]["infer_dtype"] == "bfloat16"
    assert "quantization_bit" not in merge["config"], "QLoRA adapters merge into the unquantised base"
    assert merge["config"]["adapter_name_or_path"] == train["config"]["output_dir"]
    assert merge["config"]["model_name_or_path"] == train["config"]["model_name_or_path"]
    assert merge["config"]["template"] == train["config"]["template"]
    assert vllm["model"] == merge["exportDir"] == merge["config"]["export_dir"]


def test_values_outside_the_charts_schema_are_refused() -> None:
    spec = spec_from_text(
        BASE + "images: {vllm: 'vllm/vllm-openai@sha256:" + "a" * 64 + "'}\n", "x/experiment.yaml"
    )
    assert render(spec)  # a digest is fine
    bad = {"vllm": {"enabled": True, "replicas": -1}}
    assert list(chart_values_validator().iter_errors(bad))


def test_a_render_that_breaks_the_chart_schema_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    import generator.core.render as render_module

    spec = spec_from_text(BASE, "x/experiment.yaml")
    bogus = Block(("train", Block(("enabled", True), ("bogus", 1))))
    monkeypatch.setitem(render_module.BUILDERS, "train", lambda spec, facts: bogus)
    with pytest.raises(SpecError) as info:
        render(spec)
    assert any("bogus" in p.message for p in info.value.problems)


def test_serving_on_cpu_renders_no_gpu_the_kv_cache_and_no_gpu_selector(tmp_path: Path) -> None:
    spec_path = tmp_path / "experiment.yaml"
    spec_path.write_text(
        BASE + "resources: {gpus: 0, gpu: {product: NVIDIA-L4}, nodeSelector: {pool: cpu}}\n"
        "serve: {resources: {gpus: 0, cpu: '2', memory: 8Gi}, cpuKvCacheGiB: 2}\n"
        "training: {bf16: false}\n"
    )
    [vllm] = [
        r for r in render(spec_from_text(spec_path.read_text(), str(spec_path))) if r.component == "vllm"
    ]
    values = vllm.values["vllm"]
    assert values["gpu"]["count"] == 0
    assert values["cpu"] == {"kvCacheSpaceGiB": 2}
    assert values["nodeSelector"] == {"pool": "cpu"}, "no GPU product selector without GPUs"
    assert values["test"]["nodeSelector"] == {"pool": "cpu"}, "the helm test pod runs where vLLM runs"


def test_serving_on_gpus_has_no_cpu_block(tmp_path: Path) -> None:
    spec_path = tmp_path / "experiment.yaml"
    spec_path.write_text(BASE)
    [vllm] = [r for r in render(spec_from_text(BASE, str(spec_path))) if r.component == "vllm"]
    assert vllm.values["vllm"]["gpu"]["count"] == 1 and "cpu" not in vllm.values["vllm"]


@pytest.mark.parametrize(
    ("extra", "train_timeout"),
    [
        ("", "2h"),  # the tokenize hook of a large dataset
        ("data: {datasets: [qa_dataset], tokenizeOnce: false}\n", "20m"),
        (
            "model:\n  path: /storage/models/llama-3.1-8b-instruct\n  hub: {id: meta-llama/Llama-3.1-8B-Instruct}\n",
            "6h",
        ),
    ],
)
def test_the_header_prints_the_helm_command_lfk_runs(extra: str, train_timeout: str, tmp_path: Path) -> None:
    from generator.core.facts import derive
    from generator.ops.helm import install_command

    text = yaml.safe_dump({**yaml.safe_load(BASE), **yaml.safe_load(extra or "{}")})
    spec = spec_from_text(text, str(tmp_path / "experiment.yaml"))
    for rendered in render(spec, tmp_path):
        command = install_command(derive(spec), rendered.component, tmp_path)
        timeout = command[command.index("--timeout") + 1]
        assert timeout == (train_timeout if rendered.component == "train" else "20m")
        # a multi-GB image pull outlasts helm's default 5 minutes: the printed command waits as long as lfk's
        assert f" --timeout {timeout} -f <this file>" in rendered.text.splitlines()[2]
