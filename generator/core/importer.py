"""An experiment spec from a LLaMA-Factory training config, as people keep them (`lfk import`): each argument
the spec has a field for goes to that field (the passthrough rule's tables, read backwards: a stage's own
arguments to `stage.<stage>`), every other argument LLaMA-Factory knows goes to `llamafactoryArgs`, and what
the cluster decides instead (the output folder, overwriting, reporting without a tracking server) is changed
with a note, one line each, never silently. An argument LLaMA-Factory does not know, or one the spec cannot express yet, is an error naming it.

Pure: the config's mapping in, the spec document and the notes out; the caller validates before writing."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from ..errors import SpecError
from . import bundled, lfinfo
from .contract import DATA_DIR, MODELS_DIR, OUTPUT_DIR
from .problems import Problem
from .rules.llamafactory import MANAGED_ARGS, PLUS_IMAGE, STAGE_ARGS, stage_fields
from .scaffold import model_block

# arguments with a spec field of the same meaning and value (a number may be written as a string: 1e-4)
NUMBERS = {"learning_rate", "num_train_epochs", "warmup_ratio", "max_grad_norm", "val_size", "lora_dropout"}
# stage arguments written as numbers (a string such as "0.1" is converted like the others)
STAGE_NUMBERS = {"pref_beta", "pref_ftx", "dpo_label_smoothing", "simpo_gamma", "kto_chosen_weight",
                 "kto_rejected_weight", "ppo_target"}  # fmt: skip
# arguments the cluster decides: what becomes of each
DECIDED = {
    "output_dir": f"the output is {OUTPUT_DIR}/<name>/<run id>, one folder per run, on the storage",
    "overwrite_output_dir": "never overwritten: a restarted or preempted Job resumes from its checkpoints",
    "logging_dir": "the TensorBoard logs go beside the run's checkpoints (<output>/logs)",
    "plot_loss": "always on: lfk status and lfk report read the loss",
    "include_num_input_tokens_seen": "always on: lfk status and lfk report read the throughput",
    "do_train": "always true",
    "run_name": "the MLflow run is named <name>-<run id> (tracking.mlflow.runName sets another)",
    "ray_num_workers": "derived from distributed.nodes and resources.gpus",
    "tokenized_path": "data.tokenizeOnce keeps the tokenized set on the storage, keyed by its inputs",
}
MAX_DDP_TIMEOUT = 7 * 24 * 3600  # the schema's maximum of distributed.ddpTimeout
# arguments with a spec field whose default there differs from LLaMA-Factory's: a config that leaves one out
# gets LLaMA-Factory's, so the imported training is the one `llamafactory-cli train` would run. Per method.
KEEP_DEFAULTS: dict[str, tuple[str, ...]] = {
    "all": ("cutoff_len", "num_train_epochs", "learning_rate", "per_device_train_batch_size",
            "gradient_accumulation_steps", "lr_scheduler_type", "max_grad_norm", "bf16",
            "disable_gradient_checkpointing", "flash_attn", "logging_steps", "save_strategy", "save_steps",
            "seed", "trust_remote_code"),
    "lora": ("lora_rank", "lora_dropout", "lora_target"),
    "oft": ("oft_block_size", "oft_target"),
    "freeze": ("freeze_trainable_layers",),
}  # fmt: skip
# finetuning_type values the spec expresses (qlora is lora with quantization_bit)
METHODS = ("lora", "oft", "full", "freeze")


@dataclass
class Imported:
    spec: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _set(document: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = document
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _assign(spec: dict[str, Any], key: str, value: Any) -> None:
    """A LLaMA-Factory argument's value into its spec field (MANAGED_ARGS), as the spec spells it."""
    if key == "disable_gradient_checkpointing":
        _set(spec, "training.gradientCheckpointing", not value)
    else:
        _set(spec, MANAGED_ARGS[key], _number(value) if key in NUMBERS else value)


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value  # the schema names what is wrong with it
    return value


def _deepspeed(value: Any) -> str | None:
    """zero2 / zero3 from a DeepSpeed config's file name, as LLaMA-Factory's examples name them."""
    name = PurePosixPath(str(value)).name.lower()
    for stage, marks in (("zero3", ("z3", "zero3")), ("zero2", ("z2", "zero2"))):
        if any(mark in name for mark in marks):
            return stage
    return None


def _stage_arg(result: Imported, stage: str, key: str, value: Any, refuse: Callable[..., None]) -> None:
    """A stage's own argument into stage.<stage>; PPO's reward model must be a folder on the storage."""
    field_path = f"stage.{stage}.{STAGE_ARGS[stage][key]}"
    if key == "reward_model_type" and value not in ("lora", "full"):
        refuse(
            key,
            f"reward_model_type {value!r}: the spec's PPO scores with a reward model on the storage (lora or full)",
        )
        return
    if key == "reward_model":
        path = str(value)
        if not path.startswith(OUTPUT_DIR + "/") and not path.startswith(MODELS_DIR + "/"):
            moved = f"{MODELS_DIR}/{PurePosixPath(path).name}"
            result.notes.append(f"{key}: {path} is not on the storage: copy the reward model to {moved}")
            value = moved
    _set(result.spec, field_path, float(value) if key in STAGE_NUMBERS and isinstance(value, str) else value)


def import_config(config: dict[str, Any], name: str, source: str) -> Imported:
    """The spec fields and notes for the LLaMA-Factory training config read from source; SpecError naming each
    argument that cannot be taken. name, namespace, storage and resources are the caller's."""
    legal = lfinfo.info().arguments
    problems: list[Problem] = []
    result = Imported(spec={"name": name})
    spec = result.spec

    def refuse(key: str, message: str, hint: str = "") -> None:
        problems.append(Problem(f"$.{key}", message, hint))

    stage = config.get("stage", "sft")
    if stage not in lfinfo.STAGES:
        refuse("stage", f"stage {stage!r}: LLaMA-Factory trains {', '.join(lfinfo.STAGES)}")
    elif stage != "sft":
        _set(spec, "stage.type", stage)
    if config.get("do_train") is False:
        refuse("do_train", "a config that does not train (do_train: false) is not an experiment")
    method = config.get("finetuning_type", "lora")
    if method not in METHODS:
        refuse(
            "finetuning_type", f"finetuning_type {method!r}: the spec has {', '.join(METHODS)} (and qlora)"
        )
    quantized = method == "lora" and config.get("quantization_bit") is not None
    _set(spec, "method.type", "qlora" if quantized else method)
    if quantized:
        spec["images"] = {"llamafactory": PLUS_IMAGE}
        result.notes.append(
            f"quantization_bit: the image is {PLUS_IMAGE} (images/llamafactory-plus): the official one lacks "
            "the quantisation libraries"
        )

    for key, value in config.items():
        if key in ("stage", "finetuning_type", "do_train"):
            continue
        if key not in legal:
            close = difflib.get_close_matches(key, sorted(legal), n=3)
            refuse(
                key,
                f"LLaMA-Factory {lfinfo.info().version} has no argument {key!r}",
                f"did you mean {', '.join(close)}?" if close else "",
            )
        elif key in DECIDED:
            result.notes.append(f"{key}: {value!r} dropped: {DECIDED[key]}")
        elif key in STAGE_ARGS.get(stage, {}):
            _stage_arg(result, stage, key, value, refuse)
        elif fields := stage_fields(key):
            others = ", ".join(f.split(".")[1] for f in fields)
            result.notes.append(f"{key}: {value!r} dropped: it applies to stage {others}, not {stage}")
        elif key == "model_name_or_path":
            model = str(value)
            # a hub id is org/name; any other folder than the storage's models is on the person's machine
            local = not model.startswith(MODELS_DIR + "/") if model.startswith("/") else model.count("/") != 1
            if local:
                moved = f"{MODELS_DIR}/{PurePosixPath(model).name}"
                kind = "a folder of your machine" if model.startswith("/") else "a relative folder"
                result.notes.append(f"{key}: {model} is {kind}: copy it to {moved} on the storage")
                model = moved
            spec["model"] = {**model_block(model), **spec.get("model", {})}
        elif key == "dataset":
            names = value.split(",") if isinstance(value, str) else list(value or [])
            _set(spec, "data.datasets", [n.strip() for n in names if str(n).strip()])
        elif key == "dataset_dir":
            if str(value).startswith(DATA_DIR):
                _set(spec, "data.dir", str(value))  # another folder: the note after the loop
        elif key == "ddp_timeout" and isinstance(value, int) and value > MAX_DDP_TIMEOUT:
            # LLaMA-Factory's examples write 180000000 for "never"; a hung collective should end some day
            _set(spec, "distributed.ddpTimeout", MAX_DDP_TIMEOUT)
            result.notes.append(
                f"ddp_timeout: {value} s capped at {MAX_DDP_TIMEOUT} s (7 days), the spec's limit"
            )
        elif key == "deepspeed":
            zero = _deepspeed(value)
            if zero is None:
                refuse(
                    key,
                    f"deepspeed {value!r}: not a ZeRO-2 or ZeRO-3 config by its name",
                    "set distributed.deepspeed",
                )
            else:
                _set(spec, "distributed.deepspeed", zero)
                result.notes.append(
                    f"deepspeed: {value} becomes the project's own {zero} config (distributed.deepspeed)"
                )
        elif key == "report_to":
            reported = value if isinstance(value, list) else [value]
            if any(r not in ("none", None) for r in reported):
                result.notes.append(
                    f"report_to: {value!r} dropped: set tracking.mlflow.trackingUri to report to MLflow "
                    "(the spec's only tracker)"
                )
        elif key in MANAGED_ARGS:
            _assign(spec, key, value)
        else:
            spec.setdefault("llamafactoryArgs", {})[key] = value
    defaults = lfinfo.info().defaults
    for key in (*KEEP_DEFAULTS["all"], *KEEP_DEFAULTS.get(method, ())):
        if key not in config and defaults.get(key) is not None:
            _assign(spec, key, defaults[key])
    if "save_total_limit" not in config:
        result.notes.append(
            "save_total_limit: LLaMA-Factory keeps every checkpoint; the spec keeps the last 3 on the storage "
            "(training.saveTotalLimit)"
        )
    dataset_dir = str(config.get("dataset_dir", ""))
    if ("dataset" in config or dataset_dir) and not dataset_dir.startswith(DATA_DIR):
        named = repr(dataset_dir) if dataset_dir else "LLaMA-Factory's default 'data'"
        result.notes.append(
            f"dataset_dir: {named} becomes {DATA_DIR} on the storage: register the datasets there (lfk data "
            "sync)"
        )
    if dataset_dir in ("", "data"):  # LLaMA-Factory's own data/ folder: its bundled demo sets keep working
        demo = bundled.datasets()
        for name in spec.get("data", {}).get("datasets", []):
            if name in demo:
                spec["data"].setdefault("register", {})[name] = demo[name]
                result.notes.append(
                    f"dataset: {name} is LLaMA-Factory's bundled demo set: registered in data.register as its "
                    f"data/dataset_info.json has it; `lfk data sync SPEC --storage-root DIR --bundled` copies "
                    f"{demo[name]['file']} from llamafactory {lfinfo.info().version}'s source package"
                )
    if problems:
        raise SpecError(source, problems)
    return result
