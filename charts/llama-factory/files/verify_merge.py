"""Verifies a merged model directory before it is published (the guide's "Weryfikacja merge", automated).

    verify_merge.py DIR --base BASE_DIR --dtype bfloat16 [--adapter ADAPTER_DIR] [--record] [--quiet]

Checks config.json, generation_config.json, the tokenizer files, the safetensors index and every shard it
names; that every floating-point tensor has the requested dtype (not fp32, which doubles the size); and that
the weights hold as many parameters as the base model, so the size is the base's at that dtype. With
--adapter it also checks the record of which adapter was merged; --record writes that record. Standard
library only, so it runs in any image. Exit 0 when the model is complete, 1 with every problem otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

# podlib beside this script (the pods' /scripts), also when `lfk check` imports this file by its path
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from podlib import EXIT, MAX_SIZE_RATIO, MIN_SIZE_RATIO, atomic_write, safetensors_header  # noqa: E402

DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}
BYTES = {
    "BF16": 2,
    "F16": 2,
    "F32": 4,
    "F64": 8,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}
FLOATING = {"BF16", "F16", "F32", "F64", "F8_E4M3", "F8_E5M2"}
RECORD = ".lfk-merge.json"


def weight_files(folder: str) -> tuple[list[str], list[str]]:
    """(safetensors files of the model, problems): the index and every shard it names, or a single file."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f).get("weight_map", {}).values()))
        missing = [s for s in shards if not os.path.isfile(os.path.join(folder, s))]
        problems = [f"shard {s} named in model.safetensors.index.json is missing" for s in missing]
        if not shards:
            problems.append("model.safetensors.index.json names no shards")
        return [os.path.join(folder, s) for s in shards if s not in missing], problems
    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        return [single], []
    return [], ["no model.safetensors and no model.safetensors.index.json"]


def count_parameters(files: list[str]) -> tuple[int, dict[str, int]]:
    """(parameters, bytes per dtype) from the safetensors headers, without reading the weights; ValueError
    (OSError) naming a file that is not a readable safetensors file."""
    total, by_dtype = 0, dict[str, int]()
    for path in files:
        for name, tensor in safetensors_header(path).items():
            shape = tensor.get("shape") if isinstance(tensor, dict) else None
            dtype = tensor.get("dtype") if isinstance(tensor, dict) else None
            if (
                not isinstance(dtype, str)
                or not isinstance(shape, list)
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            ):
                raise ValueError(f"{os.path.basename(path)}: tensor {name[:80]} has no dtype and shape")
            n = 1
            for dim in shape:
                n *= dim
            total += n
            by_dtype[dtype] = by_dtype.get(dtype, 0) + n * BYTES.get(dtype, 0)
    return total, by_dtype


def adapter_fingerprint(adapter: str) -> str:
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        path = os.path.join(adapter, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def verify(
    folder: str, base: str, dtype: str, min_ratio: float, max_ratio: float, adapter: str | None
) -> list[str]:
    if not os.path.isdir(folder):
        return [f"{folder} does not exist"]
    problems = []
    for name in ("config.json", "generation_config.json", "tokenizer_config.json"):
        if not os.path.isfile(os.path.join(folder, name)):
            problems.append(f"{name} is missing")
    if not any(os.path.isfile(os.path.join(folder, n)) for n in ("tokenizer.json", "tokenizer.model")):
        problems.append("no tokenizer.json or tokenizer.model")
    files, weight_problems = weight_files(folder)
    problems += weight_problems
    if not files:
        return problems
    try:
        parameters, by_dtype = count_parameters(files)
    except (OSError, ValueError) as exc:
        return [*problems, f"unreadable weights: {exc}"]
    wanted = DTYPES[dtype]
    wrong = sorted(d for d in by_dtype if d in FLOATING and d != wanted)
    if wrong:
        problems.append(f"tensors in {', '.join(wrong)}, expected {wanted} only (set infer_dtype: {dtype})")
    base_files, _ = weight_files(base)
    if base_files:
        try:
            base_parameters, _ = count_parameters(base_files)
        except (OSError, ValueError) as exc:
            return [*problems, f"the base model's weights are unreadable, size not compared: {exc}"]
        expected = base_parameters * BYTES[wanted]
        actual = sum(by_dtype.values())
        ratio = actual / expected if expected else 0
        if not min_ratio <= ratio <= max_ratio:
            problems.append(
                f"weights are {actual / 1e9:.2f} GB, {ratio:.2f}x the base model's {base_parameters / 1e9:.2f}B "
                f"parameters at {dtype} ({expected / 1e9:.2f} GB); accepted {min_ratio}-{max_ratio}x"
            )
    else:
        print(f"note: {base} has no safetensors weights; size not compared", file=sys.stderr)
    if adapter:
        record_path = os.path.join(folder, RECORD)
        try:
            with open(record_path, encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError):
            record = {}
        if record.get("adapter_sha256") != adapter_fingerprint(adapter):
            problems.append(f"{RECORD} does not record a merge of {adapter}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--base", required=True)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--min-ratio", type=float, default=MIN_SIZE_RATIO)
    parser.add_argument("--max-ratio", type=float, default=MAX_SIZE_RATIO)
    parser.add_argument("--adapter", help="the adapter directory that was (or is to be) merged")
    parser.add_argument(
        "--record", action="store_true", help="write the merge record after a successful check"
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    check_record = args.adapter if not args.record else None
    problems = verify(args.folder, args.base, args.dtype, args.min_ratio, args.max_ratio, check_record)
    if problems:
        if not args.quiet:
            print(f"verify: {args.folder} is not a complete merged model:", file=sys.stderr)
            for p in problems:
                print(f"  - {p}", file=sys.stderr)
        return EXIT["failed"]
    if args.record and args.adapter:
        record = {
            "adapter": args.adapter,
            "adapter_sha256": adapter_fingerprint(args.adapter),
            "dtype": args.dtype,
        }
        atomic_write(os.path.join(args.folder, RECORD), json.dumps(record, indent=1))
    if not args.quiet:
        print(f"verify: {args.folder} is complete")
    return EXIT["ok"]


if __name__ == "__main__":
    sys.exit(main())
