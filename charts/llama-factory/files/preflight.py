"""The guide's "before training" checklist, run inside the LLaMA-Factory image before any GPU work starts.

    preflight.py CONFIG [--cpu] [--check-mlflow-server]

Prints one line per item, `✓ item: detail` or `✗ item: detail (fix: ...)`. Exit 0 when every item passes,
3 when the configuration cannot work: the training Job's podFailurePolicy fails the Job at once on exit 3
instead of retrying, and the GPU-less preflight Job (`--cpu`, a Helm hook) stops the release before the
training Job asks for a GPU. Standard library + PyYAML + the image's own llamafactory only.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import urllib.error
import urllib.request
from typing import Any

# readiness.py and podlib.py travel beside this script (the pods' /scripts)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import readiness  # noqa: E402
from podlib import EXIT  # noqa: E402

CONFIG_ERROR = EXIT["configError"]
failures: list[str] = []


def item(ok: bool, name: str, detail: str, fix: str = "") -> bool:
    if ok:
        print(f"✓ {name}: {detail}", flush=True)
    else:
        print(f"✗ {name}: {detail}" + (f" (fix: {fix})" if fix else ""), flush=True)
        failures.append(name)
    return ok


def drop_incomplete_checkpoints(output_dir: str) -> None:
    """Checkpoints a kill left half-written hold nothing usable, and resuming from one fails retry after
    retry: remove them so the run resumes from the last complete one."""
    for folder in readiness.incomplete_checkpoints(output_dir):
        print(f"preflight: removing incomplete {folder} (interrupted while it was written)", flush=True)
        shutil.rmtree(folder, ignore_errors=True)


def check_model(model: str) -> None:
    if not model.startswith("/"):
        item(True, "base model", f"{model} comes from the hub at load time")
        return
    missing = readiness.missing_model_files(model)
    item(
        not missing,
        "base model",
        f"{model}: "
        + (f"missing {', '.join(missing)}" if missing else "config, tokenizer and weights present"),
        "copy the model there, or set model.hub in the spec so the train release downloads it first; a spec "
        "that starts from another experiment (model.from) needs that one's run finished",
    )


def check_adapters(config: dict[str, Any]) -> None:
    """The adapter trained further (adapter_name_or_path) and a reward model given as a folder must be there:
    another experiment's result, which exists once its run has finished."""
    folders = [a.strip() for a in str(config.get("adapter_name_or_path") or "").split(",") if a.strip()]
    reward = str(config.get("reward_model") or "")
    if reward.startswith("/"):
        folders.append(reward)
    for folder in folders:
        found = any(os.path.isfile(os.path.join(folder, f)) for f in ("adapter_config.json", "config.json"))
        item(
            found,
            "adapter" if folder != reward else "reward model",
            f"{folder}: " + ("present" if found else "no adapter_config.json or config.json"),
            "finish the run of the experiment this one starts from (lfk run its spec) first",
        )


def check_datasets(config: dict[str, Any]) -> None:
    dataset_dir = config.get("dataset_dir", "data")
    try:
        registered = readiness.read_dataset_info(dataset_dir)
    except readiness.NotReady as exc:
        item(False, "datasets", str(exc), "register them with `lfk data register`")
        return
    for name in [n.strip() for n in str(config.get("dataset", "")).split(",") if n.strip()]:
        problem = readiness.dataset_problem(dataset_dir, registered, name)
        if problem is None:
            item(True, f"dataset {name}", f"registered ({registered[name].get('formatting', 'alpaca')})")
        elif name not in registered:
            item(False, f"dataset {name}", problem, f"lfk data register {dataset_dir} {name} FILE")
        else:
            item(False, f"dataset {name}", problem, "copy the file there")


# the packages a config needs beyond LLaMA-Factory's own, which its official image lacks
QUANTIZATION_PACKAGES = {"bitsandbytes": "bitsandbytes", "bnb": "bitsandbytes", "hqq": "hqq", "eetq": "eetq"}


def check_packages(config: dict[str, Any]) -> None:
    report_to = config.get("report_to", "none")
    needed = (
        {"mlflow": "reporting to MLflow"}
        if "mlflow" in (report_to if isinstance(report_to, list) else [report_to])
        else {}
    )
    if config.get("quantization_bit"):
        method = str(config.get("quantization_method", "bitsandbytes"))
        needed[QUANTIZATION_PACKAGES.get(method, method)] = f"QLoRA with {method}"
    for package, why in needed.items():
        found = importlib.util.find_spec(package) is not None
        item(found, f"{package} package", "importable" if found else f"this image has no {package}, which {why} needs",
             "use an image with it (images/llamafactory-plus has mlflow and bitsandbytes) or a pinned train.pipPackages entry")  # fmt: skip


def check_mlflow(config: dict[str, Any], server: bool) -> None:
    report_to = config.get("report_to", "none")
    reporters = report_to if isinstance(report_to, list) else [report_to]
    if "mlflow" not in reporters:
        return
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if server and uri.startswith("http"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as response:
                item(response.status == 200, "MLflow server", f"{uri} answers")
        except (urllib.error.URLError, OSError) as exc:
            item(
                False,
                "MLflow server",
                f"{uri} does not answer: {exc}",
                "check tracking.mlflow.trackingUri and the network policy",
            )


def check_arguments(config: dict[str, Any], cpu: bool) -> None:
    """LLaMA-Factory's own argument checks. As one process on one GPU (the launcher spreads the real run over
    every GPU afterwards, and DeepSpeed only parses under torchrun); with --cpu, as the GPU-less Job."""
    saved = {name: os.environ.get(name) for name in ("DISABLE_VERSION_CHECK", "CUDA_VISIBLE_DEVICES")}
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    os.environ["CUDA_VISIBLE_DEVICES"] = "" if cpu else (visible.split(",")[0] if visible else "0")
    parse_config = {k: v for k, v in config.items() if k != "deepspeed"}
    if cpu:
        parse_config.update(bf16=False, fp16=False, pure_bf16=False)
    try:
        from llamafactory.hparams import get_train_args

        get_train_args(parse_config)
    except (ValueError, TypeError) as exc:
        item(False, "LLaMA-Factory arguments", str(exc), "run `lfk validate --deep` on the spec")
        return
    finally:  # the trainer that may follow in this process (train_in_process.py) sees the pod's own
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    item(True, "LLaMA-Factory arguments", "accepted")


def checklist(config: dict[str, Any], cpu: bool = False, check_mlflow_server: bool = False) -> int:
    """Every item for a loaded config, printed; the exit code (configError when any item failed)."""
    failures.clear()  # each call judges its own config
    # the training pod itself makes sure the run can resume; with several nodes only the first does, since
    # a later rank restarting on its own could otherwise remove the checkpoint the first is writing
    if not cpu and os.environ.get("NODE_RANK", os.environ.get("PET_NODE_RANK", "0")) == "0":
        drop_incomplete_checkpoints(config.get("output_dir", ""))
    check_model(str(config.get("model_name_or_path", "")))
    check_adapters(config)
    check_datasets(config)
    check_packages(config)
    check_mlflow(config, check_mlflow_server)
    if not failures:  # the parse reads the model's files
        check_arguments(config, cpu)
    if failures:
        print(f"preflight: {len(failures)} problem(s): {', '.join(failures)}", file=sys.stderr, flush=True)
        return CONFIG_ERROR
    print("preflight: config, model, datasets and reporting are in order", flush=True)
    return EXIT["ok"]


def load_config(path: str) -> dict[str, Any]:
    import yaml

    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the before-training checklist")
    parser.add_argument("config")
    parser.add_argument("--cpu", action="store_true", help="no GPU here: parse as a CPU run")
    parser.add_argument(
        "--check-mlflow-server", action="store_true", help="also check the tracking server answers"
    )
    args = parser.parse_args(argv)
    return checklist(load_config(args.config), args.cpu, args.check_mlflow_server)


if __name__ == "__main__":
    sys.exit(main())
