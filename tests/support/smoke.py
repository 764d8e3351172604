"""A real LLaMA-Factory run on CPU with a model made on the spot: the configs `lfk render` writes, run by the
chart's own scripts (train.sh with its preflight, merge.sh with its verification), against a local folder
standing in for /storage.

Steps (each a function, so the llamafactory test tier can assert on each, and `make smoke` can time them):
build the tiny model (tinymodel.py); copy the fixture datasets and register them; render the fixture
experiment (fixtures/smoke/experiment.yaml); tokenize the data once (tokenize_once.py, as the train release's
hook does); train until the first checkpoint and kill the run (the preempt/ hook); train again, which must
resume; merge with verification; load the merged model and generate. The merge and the gate run as their
Jobs run them: the command line and environment come from `helm template` of the rendered values (the chart's
own), with the pod's paths (/storage, /scripts, /config) moved to this machine.

    python -m tests.support.smoke [DIR]            every step, timed (make smoke)
    python -m tests.support.smoke --gpus N [DIR]   the rendered config under torchrun on N GPUs (make gpu-smoke)

Imports torch, transformers and tokenizers, and runs helm: only for the llamafactory tier and `make smoke`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from generator.checks import datasets
from generator.core.facts import Facts, derive
from generator.core.render import render
from generator.core.spec import Spec, spec_from_text
from generator.core.storage import STORAGE_ROOT, local
from generator.project import CHART_FILES

from . import tinymodel
from .podcommand import PodCommand, helm_template, localised, rendered_command

SCRIPTS = CHART_FILES
TOKENIZED_ROOT = f"{STORAGE_ROOT}/tokenized"  # the chart's train.tokenize.root
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "smoke"
PREEMPT_HOOK = Path(__file__).resolve().parent / "preempt"
SPEC = (FIXTURES / "experiment.yaml").read_text(encoding="utf-8")
SPEC_DATA: dict[str, Any] = yaml.safe_load(SPEC)
MAX_STEPS: int = SPEC_DATA["training"]["maxSteps"]
SAVE_STEPS: int = SPEC_DATA["training"]["saveSteps"]
DATA_FILES = {name: entry["file"] for name, entry in SPEC_DATA["data"]["register"].items()}
ALPACA: list[dict[str, Any]] = json.loads((FIXTURES / DATA_FILES["tiny_alpaca"]).read_text(encoding="utf-8"))
SHAREGPT: list[dict[str, Any]] = json.loads((FIXTURES / DATA_FILES["tiny_chat"]).read_text(encoding="utf-8"))


@dataclass
class Workspace:
    """A folder standing in for /storage, and the rendered experiment with its paths moved into it."""

    root: Path
    spec: Spec
    facts: Facts
    train_config: Path
    merge_config: Path
    eval_values: dict[str, Any]  # the eval release's values (gate settings; its configs localised below)
    eval_base_config: Path | None  # None: the experiment has no gate
    eval_tuned_config: Path | None
    # each release's Job containers as helm renders them, on first use (only the merge and the gate run helm)
    pods: dict[str, PodCommand] = field(default_factory=dict)

    def local(self, storage_path: str) -> Path:
        return local(self.root, storage_path)

    def pod(self, component: str) -> PodCommand:
        """The component's Job container from `helm template` of its values file (written by prepare)."""
        if component not in self.pods:
            values_file = self.root / "values" / f"{component}.yaml"
            manifests = helm_template(values_file, self.facts.releases[component], self.facts.namespace)
            self.pods[component] = rendered_command(manifests, component)
        return self.pods[component]

    @property
    def output_dir(self) -> Path:
        return self.local(self.facts.output_dir)

    @property
    def tokenized_root(self) -> Path:
        return self.local(TOKENIZED_ROOT)

    @property
    def merged_dir(self) -> Path:
        assert self.facts.merged_dir
        return self.local(self.facts.merged_dir)

    @property
    def base_model(self) -> Path:
        return self.local(self.facts.base_model)

    @property
    def scratch(self) -> Path:
        """The scripts' TMPDIR in these runs (made by prepare): what they leave behind shows here, not among the
        host's /tmp."""
        return self.root / "tmp"


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


def prepare(root: Path, spec_text: str = SPEC, build: Any = tinymodel.build_model) -> Workspace:
    """Model (build: the tiny Llama, or another builder of the same signature), datasets (registered through
    the spec, like `lfk data sync`), rendered and localised configs."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)  # Workspace.scratch
    spec = spec_from_text(spec_text, str(root / "values" / "experiment.yaml"))
    build(local(root, spec.data["model"]["path"]), tinymodel.corpus(ALPACA + SHAREGPT))
    for file_name in DATA_FILES.values():
        shutil.copyfile(FIXTURES / file_name, root / "data" / file_name)
    values_dir = root / "values"
    values_dir.mkdir(exist_ok=True)
    for name, entry in spec.data["data"]["register"].items():
        datasets.register(root / "data", name, datasets.spec_entry(entry))
    releases = render(spec, values_dir)
    for release in releases:  # as `lfk render` writes them, for `helm template` (Workspace.pod)
        (values_dir / f"{release.component}.yaml").write_text(release.text, encoding="utf-8")
    rendered = {r.component: r.values for r in releases}
    gate = rendered["eval"]["eval"] if "eval" in rendered else None
    return Workspace(
        root=root,
        spec=spec,
        facts=derive(spec),
        train_config=localised_config(
            rendered["train"]["train"]["config"], root, values_dir / "train-config.yaml"
        ),
        merge_config=localised_config(
            rendered["merge"]["merge"]["config"], root, values_dir / "merge-config.yaml"
        ),
        eval_values=gate or {},
        eval_base_config=localised_config(gate["baseConfig"], root, values_dir / "eval-base.yaml")
        if gate
        else None,
        eval_tuned_config=localised_config(gate["tunedConfig"], root, values_dir / "eval-tuned.yaml")
        if gate
        else None,
    )


def localised_config(config: dict[str, Any], root: Path, path: Path) -> Path:
    """The config with every /storage path moved under root: the pod's mount, on this machine."""
    moved = {
        k: str(local(root, v)) if isinstance(v, str) and v.startswith(STORAGE_ROOT + "/") else v
        for k, v in config.items()
    }
    path.write_text(yaml.safe_dump(moved, sort_keys=False), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------- running
def trainer_log(ws: Workspace) -> list[dict[str, Any]]:
    path = ws.output_dir / "trainer_log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tokenize(ws: Workspace, log: Path, timeout: float = 600) -> int:
    """The train release's tokenize hook: the data tokenized once, under its key in the tokenized root."""
    command = [
        sys.executable,
        str(SCRIPTS / "tokenize_once.py"),
        "run",
        str(ws.train_config),
        str(ws.tokenized_root),
    ]
    return run_logged(command, environment(), log, timeout)


def train(ws: Workspace, log: Path, preempt: bool = False, timeout: float = 600) -> int:
    """Run the chart's train.sh (preflight, then llamafactory-cli train on the tokenized set when there is
    one). With preempt, the trainer is killed right after it wrote its first checkpoint. Returns the exit code
    (137: the trainer got SIGKILL)."""
    env = {
        **environment(),
        "TRAIN_CONFIG": str(ws.train_config),
        "TOKENIZED_ROOT": str(ws.tokenized_root),
        "TMPDIR": str(ws.scratch),
    }
    if preempt:
        env.update(LFK_SMOKE_PREEMPT="1", PYTHONPATH=str(PREEMPT_HOOK))
    return run_script("train.sh", env, log, timeout)


def train_alone(config: dict[str, Any], output: Path, timeout: float = 900) -> Path:
    """A training config run by llamafactory-cli in one process on this machine, writing into output (its
    own folder, whatever the config named); output."""
    moved = {**config, "output_dir": str(output), "logging_dir": str(output / "logs")}
    path = output.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(moved), encoding="utf-8")
    result = subprocess.run(
        ["llamafactory-cli", "train", str(path)], env=environment(), capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(
            f"llamafactory-cli train {path} exited {result.returncode}:\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
        )
    return output


def leftovers(ws: Workspace) -> list[str]:
    """What train.sh made in its TMPDIR and left there: the trainer's output copy, the CPU ranks' site folder."""
    return sorted(p.name for p in ws.scratch.iterdir() if p.name.startswith(("train-output.", "lfk-site.")))


def run_script(script: str, env: dict[str, str], log: Path, timeout: float) -> int:
    """One of the chart's scripts (files/), its output appended to log; the exit code."""
    return run_logged(["bash", str(SCRIPTS / script)], env, log, timeout)


def run_logged(command: list[str], env: dict[str, str], log: Path, timeout: float) -> int:
    """A command with its output appended to log; the exit code."""
    with log.open("ab") as out:
        return subprocess.run(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
        ).returncode


def merge(ws: Workspace, log: Path, timeout: float = 600) -> int:
    """The merge Job's container as the chart renders it (merge.sh: export into a staging directory, verify,
    publish), its paths on this machine; the config the pod mounts at /config comes through MERGE_CONFIG."""
    pod = localised(ws.pod("merge"), ws.root)
    env = {**environment(), **pod.env, "MERGE_CONFIG": str(ws.merge_config)}
    return run_logged(pod.argv, env, log, timeout)


def evaluate(
    ws: Workspace,
    log: Path,
    base: Path | None = None,
    tuned: Path | None = None,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> int:
    """The eval Job's container as the chart renders it (eval_gate.py with the rendered settings): the base and
    the merged model answer the same questions; exit 5 when the tuned one is worse. Another pair of configs
    may stand in for the pod's /config files."""
    base, tuned = base or ws.eval_base_config, tuned or ws.eval_tuned_config
    assert base and tuned, "the experiment has no evaluation gate"
    files = {"/config/base.yaml": base, "/config/tuned.yaml": tuned}
    pod = localised(ws.pod("eval"), ws.root, files)
    return run_logged(pod.argv, {**environment(), **pod.env, **(env or {})}, log, timeout)


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
    data = dict(SPEC_DATA)
    data["resources"] = {"gpus": gpus, "gpu": {"memoryGiB": 16}}
    data["training"] = {**SPEC_DATA["training"], "bf16": True}
    root.mkdir(parents=True, exist_ok=True)
    log = root / "gpu-smoke.log"
    start = time.monotonic()
    ws = prepare(root, yaml.safe_dump(data, sort_keys=False))
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
    ranks = sorted(set(re.findall(r"rank: (\d+)", text)))
    print(
        f"torchrun over {gpus} GPUs: exit {code}, steps {steps[-1] if steps else 0}/{MAX_STEPS}, "
        f"ranks seen in the log {ranks}, {time.monotonic() - start:.1f} s; log {log}"
    )
    return 0 if code == 0 and steps and steps[-1] == MAX_STEPS else 1


def main(argv: list[str]) -> int:
    """`make smoke`: every step, timed. `--gpus N`: the GPU smoke instead."""
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
    if step("tokenize once (no GPU)", lambda: tokenize(ws, log)) != 0:
        print(f"tokenizing failed; see {log}")
        return 1
    code = step("train until the first checkpoint, killed there", lambda: train(ws, log, preempt=True))
    before = [e["current_steps"] for e in trainer_log(ws)]
    if code != 137 or before != list(range(1, SAVE_STEPS + 1)):
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
    if step("evaluate: base vs merged (the gate)", lambda: evaluate(ws, log)) != 0:
        print(f"the evaluation gate failed; see {log}")
        return 1
    text, _, _ = step("load the merged model and generate", lambda: generate(ws.merged_dir))
    print(f"{'total':<44} {sum(t for _, t in timings):6.1f} s")
    print(f"steps logged: first run {before}, after the restart {after}")
    print(f"merged model in {ws.merged_dir}; generated {text!r}; log {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
