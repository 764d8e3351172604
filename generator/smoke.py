"""A real LLaMA-Factory run on CPU with a model made on the spot: the configs `lfk render` writes, run by the
chart's own scripts (train.sh with its preflight, merge.sh with its verification), against a local folder
standing in for /storage.

Steps (each a function, so the llamafactory test tier can assert on each, and `make smoke` can time them):
build a tiny Llama model and a tokenizer with the llama3 template's special tokens; write an alpaca and a
ShareGPT dataset and register them; render an experiment for them; train until the first checkpoint and kill
the run; train again, which must resume; merge with verification; load the merged model and generate.

Imports torch, transformers and tokenizers: only for the llamafactory tier and `make smoke`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import datasets
from .facts import STORAGE_ROOT, Facts, derive
from .render import CHART_DIR, render
from .spec import Spec, spec_from_text

SCRIPTS = CHART_DIR / "files"
MODEL_DIR = "models/tiny-llama"
SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|pad|>",
]
MAX_STEPS = 12
SAVE_STEPS = 4

ALPACA: list[dict[str, str]] = [
    {"instruction": "Co to jest LLaMA?", "input": "", "output": "LLaMA to rodzina modeli LLM od Meta."},
    {
        "instruction": "Jak działa fine-tuning?",
        "input": "",
        "output": "Fine-tuning dostosowuje wagi modelu do zadania.",
    },
    {"instruction": "Przetłumacz na angielski", "input": "Dzień dobry", "output": "Good morning"},
    {
        "instruction": "Napisz krótkie podsumowanie",
        "input": "LLaMA-Factory to framework do fine-tuningu.",
        "output": "Framework do fine-tuningu LLM.",
    },
] * 4
SHAREGPT: list[dict[str, Any]] = [
    {
        "conversations": [
            {"from": "human", "value": "Cześć, kim jesteś?"},
            {"from": "gpt", "value": "Jestem asystentem AI. W czym mogę pomóc?"},
            {"from": "human", "value": "Jak działa fine-tuning?"},
            {"from": "gpt", "value": "Dostosowuje model do zadania."},
        ],
        "system": "Jesteś pomocnym asystentem.",
    },
    {"conversations": [{"from": "human", "value": "Hello"}, {"from": "gpt", "value": "Hi! How can I help?"}]},
] * 4

SPEC = f"""
name: smoke
storage: {{existingClaim: smoke-storage}}
model: {{path: {STORAGE_ROOT}/{MODEL_DIR}, template: llama3, parametersB: 0.001}}
data:
  datasets: [tiny_alpaca, tiny_chat]
  cutoffLen: 128
  preprocessingWorkers: 1
  register:
    tiny_alpaca: {{file: tiny_alpaca.json, format: alpaca}}
    tiny_chat: {{file: tiny_chat.json, format: sharegpt, columns: {{messages: conversations, system: system}}}}
method: {{type: lora, lora: {{rank: 8, alpha: 16, dropout: 0.0, target: all}}}}
training:
  maxSteps: {MAX_STEPS}
  learningRate: 5.0e-4
  batchSize: 2
  gradientAccumulation: 1
  bf16: false
  attention: sdpa
  gradientCheckpointing: false
  loggingSteps: 1
  saveStrategy: steps
  saveSteps: {SAVE_STEPS}
  saveTotalLimit: 5
resources: {{gpus: 0}}
merge: {{dtype: bfloat16, shardSizeGB: 1}}
serve: {{enabled: false}}
webui: {{enabled: false}}
"""


@dataclass
class Workspace:
    """A folder standing in for /storage, and the rendered experiment with its paths moved into it."""

    root: Path
    spec: Spec
    facts: Facts
    train_config: Path
    merge_config: Path

    def local(self, storage_path: str) -> Path:
        return self.root / storage_path.removeprefix(STORAGE_ROOT + "/")

    @property
    def output_dir(self) -> Path:
        return self.local(self.facts.output_dir)

    @property
    def merged_dir(self) -> Path:
        assert self.facts.merged_dir
        return self.local(self.facts.merged_dir)

    @property
    def base_model(self) -> Path:
        return self.local(self.facts.base_model)


def environment() -> dict[str, str]:
    """CPU only, offline, quiet: what LLaMA-Factory gets in these runs."""
    return {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


# ---------------------------------------------------------------------------------------------- building
def build_tokenizer(corpus: list[str]) -> Any:
    """A byte-level BPE tokenizer with the llama3 template's special tokens (eos = <|eot_id|>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|pad|>"
    )


def build_model(directory: Path, corpus: list[str]) -> None:
    """A 2-layer Llama with random weights, saved in bfloat16 next to its tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer: Any = build_tokenizer(corpus)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model: Any = LlamaForCausalLM(config)
    model = model.to(torch.bfloat16)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


def corpus() -> list[str]:
    texts = [" ".join(str(v) for v in row.values()) for row in ALPACA]
    texts += [m["value"] for row in SHAREGPT for m in row["conversations"]]
    return texts * 3 + ["The quick brown fox jumps over the lazy dog. 0123456789 user assistant system"]


def prepare(root: Path) -> Workspace:
    """Model, datasets (registered through the spec, like `lfk data sync`), rendered and localised configs."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    build_model(root / MODEL_DIR, corpus())
    (root / "data" / "tiny_alpaca.json").write_text(
        json.dumps(ALPACA, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    (root / "data" / "tiny_chat.json").write_text(
        json.dumps(SHAREGPT, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    values_dir = root / "values"
    values_dir.mkdir(exist_ok=True)
    spec = spec_from_text(SPEC, str(values_dir / "experiment.yaml"))
    for name, entry in spec.data["data"]["register"].items():
        datasets.register(root / "data", name, datasets.spec_entry(entry))
    rendered = {r.component: r.values for r in render(spec, values_dir)}
    return Workspace(
        root=root,
        spec=spec,
        facts=derive(spec),
        train_config=_localised(rendered["train"]["train"]["config"], root, values_dir / "train-config.yaml"),
        merge_config=_localised(rendered["merge"]["merge"]["config"], root, values_dir / "merge-config.yaml"),
    )


def _localised(config: dict[str, Any], root: Path, path: Path) -> Path:
    """The config with every /storage path moved under root: the pod's mount, on this machine."""
    local = {
        k: (
            str(root / v.removeprefix(STORAGE_ROOT + "/"))
            if isinstance(v, str) and v.startswith(STORAGE_ROOT + "/")
            else v
        )
        for k, v in config.items()
    }
    path.write_text(yaml.safe_dump(local, sort_keys=False), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------- running
def trainer_log(ws: Workspace) -> list[dict[str, Any]]:
    path = ws.output_dir / "trainer_log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# Loaded by every Python process of the first run through PYTHONPATH: once the trainer has saved its first
# checkpoint, the process is killed with SIGKILL, as a preempted pod would be. A tiny model trains all its
# steps in a fraction of a second, too fast to interrupt from outside at a chosen point.
PREEMPT = """
import os, signal

def _preempt_after_first_save():
    from transformers import Trainer, TrainerCallback

    class Preempt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)

    original = Trainer.__init__

    def patched(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(Preempt())

    Trainer.__init__ = patched

if os.environ.get("LFK_SMOKE_PREEMPT") == "1" and os.path.basename(os.sys.argv[0]) == "llamafactory-cli":
    _preempt_after_first_save()
"""


def train(ws: Workspace, log: Path, preempt: bool = False, timeout: float = 600) -> int:
    """Run the chart's train.sh (preflight, then llamafactory-cli train). With preempt, the trainer is
    killed right after it wrote its first checkpoint. Returns the exit code (-9 when killed)."""
    env = {**environment(), "TRAIN_CONFIG": str(ws.train_config)}
    if preempt:
        hooks = ws.root / ".preempt"
        hooks.mkdir(exist_ok=True)
        (hooks / "sitecustomize.py").write_text(PREEMPT, encoding="utf-8")
        env.update(LFK_SMOKE_PREEMPT="1", PYTHONPATH=str(hooks))
    return run_script("train.sh", env, log, timeout)


def run_script(script: str, env: dict[str, str], log: Path, timeout: float) -> int:
    """One of the chart's scripts (files/), its output appended to log; the exit code."""
    with log.open("ab") as out:
        return subprocess.run(
            ["bash", str(SCRIPTS / script)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        ).returncode


def merge(ws: Workspace, log: Path, timeout: float = 600) -> int:
    """Run the chart's merge.sh: export into a staging directory, verify, publish."""
    env = {
        **environment(),
        "MERGE_CONFIG": str(ws.merge_config),
        "EXPORT_DIR": str(ws.merged_dir),
        "ADAPTER_DIR": str(ws.output_dir),
        "BASE_MODEL_DIR": str(ws.base_model),
        "MERGE_DTYPE": ws.spec.data["merge"]["dtype"],
        "MIN_SIZE_RATIO": "0.9",
        "MAX_SIZE_RATIO": "1.1",
    }
    return run_script("merge.sh", env, log, timeout)


def generate(model_dir: Path, prompt: str = "Co to jest LLaMA?") -> tuple[str, Any, Any]:
    """Load a model with transformers and generate a few tokens through its chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    ids: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt"
    )
    if not isinstance(ids, torch.Tensor):  # transformers 5 may answer with a BatchEncoding
        ids = ids["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    text: str = tokenizer.decode(out[0][ids.shape[1] :])
    return text, model, tokenizer


def gpu_main(gpus: int, root: Path) -> int:
    """`make gpu-smoke`: the rendered config of an experiment on `gpus` GPUs of this machine, launched the way
    the chart launches it (train.sh; FORCE_TORCHRUN and NPROC_PER_NODE as the chart sets them), so
    LLaMA-Factory's launcher runs torchrun over the GPUs."""
    import torch

    found = torch.cuda.device_count()
    if found < gpus:
        print(
            f"gpu-smoke needs {gpus} GPUs; this machine has {found}. Everything else runs without GPUs (make test)."
        )
        return 2
    global SPEC
    SPEC = SPEC.replace(
        "resources: {gpus: 0}", f"resources: {{gpus: {gpus}, gpu: {{memoryGiB: 16}}}}"
    ).replace("bf16: false", "bf16: true")
    root.mkdir(parents=True, exist_ok=True)
    log = root / "gpu-smoke.log"
    start = time.monotonic()
    ws = prepare(root)
    env = {
        **environment(),
        "TRAIN_CONFIG": str(ws.train_config),
        "FORCE_TORCHRUN": "1",
        "NPROC_PER_NODE": str(gpus),
    }
    env.pop("CUDA_VISIBLE_DEVICES")
    code = run_script("train.sh", env, log, timeout=3600)
    text = log.read_text(errors="replace")
    steps = [e["current_steps"] for e in trainer_log(ws)]
    ranks = sorted(set(__import__("re").findall(r"rank: (\d+)", text)))
    print(
        f"torchrun over {gpus} GPUs: exit {code}, steps {steps[-1] if steps else 0}/{MAX_STEPS}, "
        f"ranks seen in the log {ranks}, {time.monotonic() - start:.1f} s; log {log}"
    )
    return 0 if code == 0 and steps and steps[-1] == MAX_STEPS else 1


def main(argv: list[str]) -> int:
    """`make smoke`: every step, timed. `--gpus N`: the GPU smoke instead."""
    import tempfile

    if argv[:1] == ["--gpus"]:
        return gpu_main(
            int(argv[1]), Path(argv[2]) if len(argv) > 2 else Path(tempfile.mkdtemp(prefix="lfk-gpu-smoke-"))
        )
    root = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="lfk-smoke-"))
    log = root / "smoke.log"
    timings: list[tuple[str, float]] = []

    def step(name: str, fn: Any) -> Any:
        start = time.monotonic()
        result = fn()
        timings.append((name, time.monotonic() - start))
        print(f"{name:<44} {timings[-1][1]:6.1f} s", flush=True)
        return result

    root.mkdir(parents=True, exist_ok=True)
    ws = step("prepare (tiny model, datasets, render)", lambda: prepare(root))
    code = step("train until the first checkpoint, killed there", lambda: train(ws, log, preempt=True))
    before = [e["current_steps"] for e in trainer_log(ws)]
    if code != -9 or before != list(range(1, SAVE_STEPS + 1)):
        print(
            f"the first run was not stopped at its first checkpoint (exit {code}, steps {before}); see {log}"
        )
        return 1
    code = step("train again (resumes), to the end", lambda: train(ws, log))
    after = [e["current_steps"] for e in trainer_log(ws)][len(before) :]
    resumed = f"Resuming training from {ws.output_dir}/checkpoint-{SAVE_STEPS}" in log.read_text(
        errors="replace"
    )
    if code != 0 or not resumed or after[0] != SAVE_STEPS + 1 or after[-1] != MAX_STEPS:
        print(f"resume failed (exit {code}, resumed {resumed}, steps after the restart {after}); see {log}")
        return 1
    if step("merge (export, verify, publish)", lambda: merge(ws, log)) != 0:
        print(f"merge failed; see {log}")
        return 1
    text, _, _ = step("load the merged model and generate", lambda: generate(ws.merged_dir))
    print(f"{'total':<44} {sum(t for _, t in timings):6.1f} s")
    print(f"steps logged: first run {before}, after the restart {after}")
    print(f"merged model in {ws.merged_dir}; generated {text!r}; log {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
