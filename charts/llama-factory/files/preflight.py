"""Checks a LLaMA-Factory training config inside the training image before any GPU work starts.

Exit 0: go ahead. Exit 3: the configuration cannot work; the message says what to fix. The Job's
podFailurePolicy fails the Job on exit code 3 without retrying. Standard library + PyYAML + the image's
own llamafactory only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

CONFIG_ERROR = 3


def fail(message: str) -> None:
    print(f"preflight: {message}", file=sys.stderr)
    sys.exit(CONFIG_ERROR)


def drop_incomplete_checkpoints(output_dir: str) -> None:
    """A pod killed while writing a checkpoint leaves a checkpoint-N folder without trainer_state.json, which
    the trainer writes last. Resuming picks the highest N and fails on it ("Can't find a valid checkpoint"),
    retry after retry. Such folders hold nothing usable: remove them so the run resumes from the last
    complete one."""
    import re
    import shutil

    if not os.path.isdir(output_dir):
        return
    for name in sorted(os.listdir(output_dir)):
        folder = os.path.join(output_dir, name)
        if re.fullmatch(r"checkpoint-\d+", name) and not os.path.isfile(os.path.join(folder, "trainer_state.json")):
            print(f"preflight: removing incomplete {folder} (interrupted while it was written)")
            shutil.rmtree(folder, ignore_errors=True)


def main(path: str) -> None:
    import yaml

    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)

    drop_incomplete_checkpoints(config.get("output_dir", ""))

    model = config.get("model_name_or_path", "")
    if model.startswith("/") and not os.path.isfile(os.path.join(model, "config.json")):
        fail(f"base model missing: {model}/config.json not found (copy the model there or enable train.download)")

    dataset_dir = config.get("dataset_dir", "data")
    info_path = os.path.join(dataset_dir, "dataset_info.json")
    try:
        with open(info_path, encoding="utf-8") as f:
            registered = json.load(f)
    except (OSError, ValueError) as exc:
        fail(f"cannot read {info_path}: {exc} (register datasets with `lfk data register`)")
    for name in str(config.get("dataset", "")).split(","):
        name = name.strip()
        if name and name not in registered:
            fail(f"dataset {name!r} is not registered in {info_path}")
        entry = registered.get(name, {})
        file_name = entry.get("file_name")
        if file_name and not os.path.exists(os.path.join(dataset_dir, file_name)):
            fail(f"dataset {name!r}: {os.path.join(dataset_dir, file_name)} not found")

    report_to = config.get("report_to", "none")
    reporters = report_to if isinstance(report_to, list) else [report_to]
    if "mlflow" in reporters and importlib.util.find_spec("mlflow") is None:
        fail(
            "report_to is mlflow but this image has no mlflow package: use an image that adds it "
            "(FROM hiyouga/llamafactory + pip install mlflow) or set train.pipPackages: [mlflow]"
        )

    # LLaMA-Factory's own argument checks, as one process on one GPU: the launcher spreads the real run
    # over every GPU afterwards, and DeepSpeed only parses under torchrun.
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    os.environ["CUDA_VISIBLE_DEVICES"] = visible.split(",")[0] if visible else "0"
    parse_config = {k: v for k, v in config.items() if k != "deepspeed"}
    try:
        from llamafactory.hparams import get_train_args

        get_train_args(parse_config)
    except (ValueError, TypeError) as exc:
        fail(f"LLaMA-Factory rejects the config: {exc}")
    print("preflight: config, model, datasets and reporting are in order")


if __name__ == "__main__":
    main(sys.argv[1])
