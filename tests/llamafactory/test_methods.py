"""Fine-tuning methods beyond the main flow's LoRA, run for real by the chart's scripts from the rendered
experiment: OFT trains its rotations (PEFT's OFT adapter), and the merge Job folds them into the base like a
LoRA adapter (LLaMA-Factory's export takes adapters only as lora; PEFT reads the adapter's own type)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from generator.core.contract import PROMPT_PARITY_RECORD
from tests.support import smoke


def test_oft_trains_and_its_merge_changes_the_base_weights(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    spec = yaml.safe_load(smoke.SPEC)
    spec["method"] = {"type": "oft", "oft": {"blockSize": 32, "target": "all"}}
    ws = smoke.prepare(tmp_path / "storage", yaml.safe_dump(spec))
    log = tmp_path / "oft.log"
    train = yaml.safe_load(ws.train_config.read_text())
    assert train["finetuning_type"] == "oft" and train["oft_block_size"] == 32
    assert smoke.train(ws, log) == 0, log.read_text()[-3000:]
    adapter = json.loads((ws.output_dir / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "OFT" and adapter["oft_block_size"] == 32
    assert (ws.output_dir / PROMPT_PARITY_RECORD).is_file()
    assert smoke.merge(ws, log) == 0, log.read_text()[-3000:]
    assert "Merged 1 adapter(s)" in log.read_text()
    base = load_file(ws.base_model / "model.safetensors")
    merged = load_file(ws.merged_dir / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert (base[name].float() - merged[name].float()).abs().max() > 0, "the rotations were not merged"
    assert (ws.merged_dir / PROMPT_PARITY_RECORD).is_file()
