#!/usr/bin/env python3
"""`make gpu-bench`: the training config `lfk render` writes for the guide's example, on one GPU, against our
tuned settings; then QLoRA (when bitsandbytes is installed) and the merge. Prints tokens/s, step time, MFU and
the peak VRAM next to `lfk describe`'s estimate. A benchmark that prints figures, not a test.

The model has the real shape of Llama-3.1-8B (its public config) with random weights made on the GPU (nothing
can be downloaded there); the tokenizer is a small BPE made here (the embedding and logits keep the real
128256 rows, so memory and FLOPs are the real ones); the dataset is synthetic alpaca of realistic lengths.
Every configuration trains the same samples for one epoch with the same seed, so the tokens are the same and
tokens/s compares fairly; each runs in a fresh process (its own CUDA peak).

    hack/gpu-bench.py [--samples N] [--tuned KEY=VALUE]... [--out DIR]   on a GPU machine
    hack/gpu-bench.py --tiny                                             CPU rehearsal: tiny shape, few samples

MFU: model FLOPs per token 6 N + 12 L d s (N the non-embedding parameters, s the mean sequence length; the
PaLM convention, recomputation by gradient checkpointing not counted) times tokens/s over the GPU's bf16 peak
(--peak-tflops, default 790: measured on the H100/H200 machines this was written for).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator.checks import datasets  # noqa: E402
from generator.core.catalog import KNOWN_MODELS  # noqa: E402
from generator.core.render import render  # noqa: E402
from generator.core.spec import load_spec  # noqa: E402
from generator.core.storage import STORAGE_ROOT  # noqa: E402
from generator.core.vram import estimate  # noqa: E402
from tests.support import tinymodel  # noqa: E402

GUIDE_SPEC = ROOT / "values" / "llama31-qa" / "experiment.yaml"
# Llama-3.1-8B's public config.json
LLAMA_8B = {
    "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "intermediate_size": 14336, "vocab_size": 128256, "max_position_embeddings": 131072, "rope_theta": 500000.0,
}  # fmt: skip
TINY = {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 128, "vocab_size": 512, "max_position_embeddings": 4096, "rope_theta": 500000.0,
}  # fmt: skip
# what we expect to be faster and equally correct; --tuned KEY=VALUE overrides or adds (the device run tries)
TUNED = {
    "per_device_train_batch_size": 4,  # the same 16 sequences per optimizer step as the guide's 2 x 8
    "gradient_accumulation_steps": 4,
    "neat_packing": True,  # packs short samples into cutoff_len without attending across them
    "packing": True,
    "enable_liger_kernel": True,  # fused RMSNorm, SwiGLU, RoPE and the chunked cross-entropy (no full logits)
}
QLORA = {  # the guide's QLoRA settings
    "quantization_bit": 4, "quantization_method": "bitsandbytes", "lora_rank": 8, "lora_alpha": 16,
    "per_device_train_batch_size": 1, "gradient_accumulation_steps": 16, "cutoff_len": 1024,
}  # fmt: skip


# ------------------------------------------------------------------------------------------- the inputs
def words(rng: random.Random, count: int) -> str:
    vocabulary = tinymodel.FILLER.split() + ["model", "adapter", "training", "cluster", "storage", "answer"]
    return " ".join(rng.choice(vocabulary) for _ in range(count))


def synthetic_alpaca(count: int, seed: int = 0) -> list[dict[str, str]]:
    """Question and answer pairs of a QA dataset's lengths: 20-120 words asked, 60-700 answered."""
    rng = random.Random(seed)
    return [
        {
            "instruction": words(rng, rng.randint(20, 120)),
            "input": "",
            "output": words(rng, rng.randint(60, 700)),
        }
        for _ in range(count)
    ]


def build_model(directory: Path, shape: dict[str, Any], rows: list[dict[str, str]]) -> Any:
    """Random weights of the given shape in bf16 (made on the GPU when there is one), saved with a BPE
    tokenizer; the tokenizer is returned for counting tokens."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tinymodel.build_tokenizer(tinymodel.corpus(rows[:200]))
    config = LlamaConfig(
        **shape, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, torch_dtype="bfloat16",
    )  # fmt: skip
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return tokenizer


def token_counts(tokenizer: Any, rows: list[dict[str, str]], cutoff: int) -> list[int]:
    """Tokens per sample as trained: prompt and answer with the template's few special tokens, cut at cutoff."""
    template_tokens = 10  # llama3: begin_of_text, two headers, eot after each turn
    return [
        min(
            cutoff,
            len(tokenizer(r["instruction"])["input_ids"])
            + len(tokenizer(r["output"])["input_ids"])
            + template_tokens,
        )
        for r in rows
    ]


def localised(config: dict[str, Any], root: Path) -> dict[str, Any]:
    """The rendered config with its /storage paths moved under root."""
    prefix = STORAGE_ROOT + "/"
    return {
        k: str(root / v.removeprefix(prefix)) if isinstance(v, str) and v.startswith(prefix) else v
        for k, v in config.items()
    }


# ------------------------------------------------------------------------------------------- one run
def child(kind: str, config_path: Path, result_path: Path) -> int:
    """In a fresh process: train or export with LLaMA-Factory, then record the wall time and CUDA peak."""
    import torch

    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    from llamafactory.train.tuner import export_model, run_exp

    args = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    start = time.monotonic()
    (run_exp if kind == "train" else export_model)(args)
    result = {"wall_s": time.monotonic() - start}
    if torch.cuda.is_available():
        result["max_reserved_gb"] = torch.cuda.max_memory_reserved() / 1e9
        result["max_allocated_gb"] = torch.cuda.max_memory_allocated() / 1e9
    result_path.write_text(json.dumps(result), encoding="utf-8")
    return 0


def nvidia_smi_peak(stop: threading.Event, peak: list[float]) -> None:
    """The highest memory.used nvidia-smi reports while a run lasts (GB)."""
    while not stop.wait(0.5):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=10, check=False,
            ).stdout  # fmt: skip
            used = max((float(x) for x in out.split()), default=0.0) * 1024**2 / 1e9
            peak[0] = max(peak[0], used)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return


def run(kind: str, name: str, config: dict[str, Any], work: Path) -> dict[str, Any]:
    config_path = work / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    result_path = work / f"{name}.json"
    log = work / f"{name}.log"
    stop, peak = threading.Event(), [0.0]
    watcher = threading.Thread(target=nvidia_smi_peak, args=(stop, peak), daemon=True)
    watcher.start()
    print(f"[gpu-bench] {name}: {kind} (log {log})", flush=True)
    with log.open("w") as out:
        code = subprocess.call(
            [sys.executable, __file__, "--child", kind, str(config_path), str(result_path)],
            stdout=out, stderr=subprocess.STDOUT, cwd=work,
        )  # fmt: skip
    stop.set()
    watcher.join()
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise SystemExit(f"[gpu-bench] {name} failed (exit {code}); the end of {log}:\n{tail}")
    result = json.loads(result_path.read_text())
    result["nvidia_smi_peak_gb"] = peak[0] or None
    if kind == "train":
        train = json.loads((Path(config["output_dir"]) / "train_results.json").read_text())
        result.update(train_runtime=train["train_runtime"], train_loss=train.get("train_loss"))
        logs = [json.loads(line) for line in (Path(config["output_dir"]) / "trainer_log.jsonl").read_text().splitlines() if line.strip()]  # fmt: skip
        result["steps"] = max((e["current_steps"] for e in logs), default=0)
        result["first_losses"] = [e["loss"] for e in logs if "loss" in e][:5]
    return result


# ------------------------------------------------------------------------------------------- the figures
def flops_per_token(shape: dict[str, Any], mean_seq: float) -> float:
    d, layers = shape["hidden_size"], shape["num_hidden_layers"]
    kv = d * shape["num_key_value_heads"] // shape["num_attention_heads"]
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * shape["intermediate_size"]  # q, o; k, v; gate, up, down
    non_embedding = layers * per_layer + d * shape["vocab_size"]  # lm_head counts: its matmul is real work
    return 6 * non_embedding + 12 * layers * d * mean_seq


def the_estimate(method: str, config: dict[str, Any]) -> float:
    model = KNOWN_MODELS["llama-3.1-8b"]
    return estimate(
        model, method=method, bits=config.get("quantization_bit"), batch_size=config["per_device_train_batch_size"],
        cutoff_len=config["cutoff_len"], gradient_checkpointing=not config.get("disable_gradient_checkpointing", False),
        half_precision=True, lora_rank=config.get("lora_rank", 16),
    ).total_gb  # fmt: skip


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        return child(argv[1], Path(argv[2]), Path(argv[3]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU rehearsal: a tiny shape and a few samples")
    parser.add_argument("--samples", type=int, default=0, help="samples per run (default 640; --tiny 24)")
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="the GPU's bf16 peak (TFLOP/s)")
    parser.add_argument(
        "--tuned", action="append", default=[], metavar="KEY=VALUE", help="a tuned setting (YAML value)"
    )
    parser.add_argument(
        "--skip", action="append", default=[], choices=["qlora", "merge"], help="leave a part out"
    )
    parser.add_argument(
        "--out", type=Path, help="where the model, data and runs go (default: a new temp folder)"
    )
    args = parser.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        print(
            "gpu-bench needs a CUDA GPU (rehearse on CPU with --tiny); everything else runs without (make test)"
        )
        return 2
    shape = TINY if args.tiny else LLAMA_8B
    samples = args.samples or (24 if args.tiny else 640)
    work = args.out or Path(tempfile.mkdtemp(prefix="lfk-gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name(0) if cuda else "CPU (rehearsal)"
    print(
        f"[gpu-bench] {device}; shape {'tiny' if args.tiny else 'Llama-3.1-8B'}; {samples} samples; in {work}",
        flush=True,
    )

    spec = load_spec(GUIDE_SPEC)
    rendered = {r.component: r.values for r in render(spec, work / "values")}
    guide = localised(rendered["train"]["train"]["config"], work)
    merge_config = localised(rendered["merge"]["merge"]["config"], work)
    rows = synthetic_alpaca(samples)
    started = time.monotonic()
    tokenizer = build_model(Path(guide["model_name_or_path"]), shape, rows)
    print(f"[gpu-bench] model made and saved in {time.monotonic() - started:.0f} s", flush=True)
    dataset_dir = Path(guide["dataset_dir"])
    dataset_dir.mkdir(parents=True, exist_ok=True)
    for name, entry in spec.data["data"]["register"].items():
        (dataset_dir / entry["file"]).write_text(json.dumps(rows), encoding="utf-8")
        datasets.register(dataset_dir, name, datasets.spec_entry(entry))

    common: dict[str, Any] = {
        "report_to": "none", "save_strategy": "no", "logging_steps": 1, "overwrite_output_dir": True,
        "num_train_epochs": 1.0, "max_samples": samples, "seed": 42, "plot_loss": False,
    }  # fmt: skip
    if args.tiny:
        common.update(bf16=False, cutoff_len=min(guide["cutoff_len"], 512), preprocessing_num_workers=1)
    guide = {k: v for k, v in guide.items() if k != "max_steps"}
    tuned = {**TUNED, **{k: yaml.safe_load(v) for k, v in (t.split("=", 1) for t in args.tuned)}}
    if tuned.get("enable_liger_kernel"):
        try:
            import liger_kernel  # noqa: F401
        except ImportError:
            print("[gpu-bench] liger-kernel is not installed: the tuned run goes without it", flush=True)
            tuned["enable_liger_kernel"] = False
    runs: dict[str, tuple[str, dict[str, Any]]] = {
        "guide": ("lora", {**guide, **common, "output_dir": str(work / "out-guide")}),
        "tuned": ("lora", {**guide, **common, **tuned, "output_dir": str(work / "out-tuned")}),
    }
    if "qlora" not in args.skip:
        try:
            import bitsandbytes  # noqa: F401

            runs["qlora"] = ("qlora", {**guide, **common, **QLORA, "output_dir": str(work / "out-qlora")})
        except ImportError:
            print("[gpu-bench] bitsandbytes is not installed: no QLoRA run", flush=True)
    results = {name: run("train", name, config, work) for name, (_, config) in runs.items()}
    if "merge" not in args.skip:
        merge = {
            **merge_config,
            "adapter_name_or_path": str(work / "out-guide"),
            "export_dir": str(work / "merged"),
        }
        results["merge"] = run("export", "merge", merge, work)

    print(f"\n{device}, {time.strftime('%Y-%m-%d')}; {samples} samples, one epoch each")
    print(
        f"{'run':<7} {'tokens/s':>9} {'step s':>7} {'MFU':>6} {'peak reserved':>14} {'nvidia-smi':>10} {'estimate':>9} {'loss':>7}"
    )
    for name, (method, config) in runs.items():
        r = results[name]
        counts = token_counts(tokenizer, rows, config["cutoff_len"])
        tokens_per_s = sum(counts) / r["train_runtime"]
        mfu = flops_per_token(shape, sum(counts) / len(counts)) * tokens_per_s / (args.peak_tflops * 1e12)
        reserved = f"{r['max_reserved_gb']:.1f} GB" if "max_reserved_gb" in r else "n/a"
        smi = f"{r['nvidia_smi_peak_gb']:.1f} GB" if r.get("nvidia_smi_peak_gb") else "n/a"
        estimate_gb = the_estimate(method, config)
        step = r["train_runtime"] / max(1, r["steps"])
        print(
            f"{name:<7} {tokens_per_s:9.0f} {step:7.2f} {mfu:6.1%} {reserved:>14} {smi:>10} {estimate_gb:6.1f} GB {r['train_loss']:7.3f}"
        )
        print(f"        first losses {[round(x, 3) for x in r['first_losses']]}")
    if "merge" in results:
        m = results["merge"]
        peak = f", peak reserved {m['max_reserved_gb']:.1f} GB" if "max_reserved_gb" in m else ""
        print(f"merge   {m['wall_s']:.0f} s{peak}")
    if "guide" in results and "tuned" in results:
        speedup = results["guide"]["train_runtime"] / results["tuned"]["train_runtime"]
        print(f"tuned / guide: {speedup:.2f}x the tokens/s (target >= 1.5x)")
    (work / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"[gpu-bench] every figure in {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
