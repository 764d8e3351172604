"""`lfk validate --deep`: the rendered train and merge configs through the installed LLaMA-Factory's own
argument parsing and cross-checks, its template list, and (with a storage root) the data and the model.

LLaMA-Factory is imported in a child process (`python -m generator.checks.deep`), so torch never enters the lfk
process and nothing LLaMA-Factory prints or exits with can disturb it. On a machine without GPUs the
settings that need one (bf16, fp16, pure_bf16, DeepSpeed) are switched off for the parse only; the
messages LLaMA-Factory gives are reported against the spec path that produced the offending key.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..core import lfinfo
from ..core.facts import Facts, derive
from ..core.problems import Problem, json_path
from ..core.render import render
from ..core.rules.llamafactory import MANAGED_ARGS
from ..core.spec import Spec
from .storage import storage_problems

# switched off for the parse on a CPU-only machine; what they check needs a GPU
CPU_OVERRIDES = {"bf16": False, "fp16": False, "pure_bf16": False}
CPU_DROPPED = ("deepspeed",)


def spec_path_of(key: str, spec: Spec) -> str:
    """The spec path that sets a LLaMA-Factory config key."""
    if key in spec.data["llamafactoryArgs"]:
        return json_path(["llamafactoryArgs", key])
    target = MANAGED_ARGS.get(key, "")
    if target and not target.startswith("("):
        return "$." + target
    return "$"


def _keys_in(message: str, config: dict[str, Any]) -> list[str]:
    """Config keys a LLaMA-Factory message names: quoted in a list, in backticks, or as plain words."""
    listed = re.findall(r"[`']([a-z_][a-z0-9_]*)[`']", message)
    words = re.findall(r"[a-z_][a-z0-9_]*", message.lower())
    legal = lfinfo.info().arguments
    found = [k for k in listed if k in legal or k in config]
    found += [w for w in words if w in legal and w not in found and (w in config or "_" in w)]
    return found


def locate(message: str, config: dict[str, Any], spec: Spec) -> str:
    keys = _keys_in(message, config)
    for key in keys:
        if (path := spec_path_of(key, spec)) != "$":
            return path
    for key in spec.data["llamafactoryArgs"]:  # e.g. "PiSSA" for pissa_init
        if key.split("_")[0] in message.lower():
            return json_path(["llamafactoryArgs", key])
    return "$"


# the child's answer lines start so; anything else on its stdout is LLaMA-Factory's or a library's own
ANSWER = "lfk-deep-answer "


class Checker:
    """One child process that imports LLaMA-Factory once and parses the configs of any number of specs, one
    JSON request line in, one answer line out (importing torch and LLaMA-Factory takes seconds: `lfk validate
    --deep` of many specs pays it once). Use as a context manager; started on the first request."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None
        self.errors: Any = None

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.process is None:
            env = {
                **os.environ,
                "CUDA_VISIBLE_DEVICES": "",
                "DISABLE_VERSION_CHECK": "1",
                "HF_HUB_OFFLINE": "1",
            }
            self.errors = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed by close()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "generator.checks.deep"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self.errors, text=True, env=env,
            )  # fmt: skip
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it died: said below, with its last words
        for line in self.process.stdout:
            if line.startswith(ANSWER):
                answer: dict[str, Any] = json.loads(line[len(ANSWER) :])
                return answer
        self.errors.seek(0)
        tail = "\n".join(self.errors.read().strip().splitlines()[-5:])
        raise RuntimeError(f"the LLaMA-Factory check did not run: {tail}")

    def close(self) -> None:
        if self.process is not None:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()  # type: ignore[union-attr]
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.errors.close()
            self.process = None

    def __enter__(self) -> Checker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_configs(
    train: dict[str, Any],
    merge: dict[str, Any] | None,
    evaluate: dict[str, Any] | None = None,
    checker: Checker | None = None,
) -> dict[str, Any]:
    """LLaMA-Factory's verdict on the configs, from the checker given or a child of its own."""
    request = {"train": train, "merge": merge, "eval": evaluate}
    if checker is not None:
        return checker.ask(request)
    with Checker() as own:
        return own.ask(request)


def cpu_parse_config(config: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in config.items() if k not in CPU_DROPPED}
    out.update({k: v for k, v in CPU_OVERRIDES.items() if k in out or k == "bf16"})
    return out


def deep_problems(
    spec: Spec, storage_root: Path | None = None, facts: Facts | None = None, checker: Checker | None = None
) -> list[Problem]:
    """What LLaMA-Factory (and, with a storage root, the storage) finds wrong with the spec's rendered configs;
    pass a Checker to share one LLaMA-Factory child among many specs."""
    facts = facts or derive(spec)
    rendered = {r.component: r.values for r in render(spec, facts=facts)}
    train = rendered["train"]["train"]["config"]
    merge = rendered["merge"]["merge"]["config"] if "merge" in rendered else None
    # the gate's prediction config of the tuned model (the base's differs only in the model)
    evaluate = rendered["eval"]["eval"]["tunedConfig"] if "eval" in rendered else None
    try:
        answer = parse_configs(
            cpu_parse_config(train), merge, evaluate and cpu_parse_config(evaluate), checker
        )
    except RuntimeError as exc:
        return [
            Problem("$", str(exc), "install it with `make llamafactory` (or pip install '.[llamafactory]')")
        ]
    problems = []
    installed, deployed = answer["version"], facts.llamafactory_version
    if deployed and installed != deployed:
        problems.append(Problem(
            "$.images.llamafactory",
            f"checked with the installed llamafactory {installed}, but the image deploys {deployed}",
            f"install llamafactory=={deployed} for an exact check",
            "warning",
        ))  # fmt: skip
    if facts.template and facts.template not in answer["templates"]:
        problems.append(
            Problem("$.model.template", f"LLaMA-Factory {installed} has no template {facts.template!r}")
        )
    if answer["train_error"]:
        problems.append(
            Problem(
                locate(answer["train_error"], train, spec),
                f"LLaMA-Factory rejects the training config: {answer['train_error']}",
            )
        )
    if merge is not None and answer["merge_error"]:
        problems.append(
            Problem(
                locate(answer["merge_error"], merge, spec),
                f"LLaMA-Factory rejects the merge config: {answer['merge_error']}",
            )
        )
    if evaluate is not None and answer["eval_error"]:
        problems.append(
            Problem("$.evaluate", f"LLaMA-Factory rejects the evaluation config: {answer['eval_error']}")
        )
    if storage_root is not None:
        problems += storage_problems(spec, storage_root, facts)
    return problems


# ------------------------------------------------------------------------------------------ child process
def _child() -> None:
    """Reads one request a line, {"train": config, "merge": config|null, "eval": config|null}, from stdin; prints
    one answer line for each (ANSWER, then JSON), until stdin closes."""
    import llamafactory
    from llamafactory.data.template import TEMPLATES
    from llamafactory.hparams import get_infer_args, get_train_args

    for line in sys.stdin:
        request = json.loads(line)
        answer: dict[str, Any] = {"version": llamafactory.__version__, "templates": sorted(TEMPLATES)}
        for name, parse in (("train", get_train_args), ("merge", get_infer_args), ("eval", get_train_args)):
            config = request.get(name)
            answer[f"{name}_error"] = None
            if config is None:
                continue
            try:
                parse(dict(config))
            except (ValueError, TypeError, KeyError) as exc:
                answer[f"{name}_error"] = (
                    str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                )
            except SystemExit as exc:  # argparse-style exits on malformed values
                answer[f"{name}_error"] = f"argument parsing stopped (exit {exc.code})"
        print(ANSWER + json.dumps(answer), flush=True)


if __name__ == "__main__":
    _child()
