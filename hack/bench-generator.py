#!/usr/bin/env python3
"""Benchmark of the light path (validate + render), printed as figures; not a test.

1. Side by side, each a fresh process as a person runs it, taken in turn so that the machine's load falls on
   all alike (median and min of N rounds): `lfk validate` of the guide's example, `lfk render` of the guide's
   example (all its values files, printed, nothing written), `lfk render` of every example in one call, and
   one `helm template` of the chart with the example's train values. Targets (issue 23): validate <= 150 ms;
   render (all values files) <= 1x one helm template. The seven examples in one call are shown beside.
2. One spec in a fresh process: `lfk render --out TMP SPEC` (which validates first), repeated; wall time per
   call and the child's peak RSS.
3. 1000 generated specs in one process: load + validate + render each; ms per spec and peak RSS.

Targets on a 2-core machine: one CLI invocation <= 300 ms wall, 1000 specs <= 5 s.

The children run as an installed `lfk` does, from bytecode (pip byte-compiles a wheel as it installs it; an
editable install writes its bytecode on the first run): PYTHONDONTWRITEBYTECODE, where the environment sets
it, is left out of theirs, so that every run but the first does not compile the generator again.
"""

from __future__ import annotations

import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SEED = ROOT / "values" / "llama31-qa" / "experiment.yaml"
LFK = ROOT / ".venv" / "bin" / "lfk"
VALIDATE_TARGET_MS = 150
CHILD_ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def _wall_ms(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=CHILD_ENV, check=True, capture_output=True)
    return (time.perf_counter() - start) * 1000


def side_by_side(rounds: int = 15) -> None:
    from generator.project import CHART_DIR, helm_binary

    specs = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "values").glob("*/experiment.yaml"))]
    commands = {
        "lfk validate (the guide's example)": [str(LFK), "validate", "--quiet", str(SEED.relative_to(ROOT))],
        "lfk render (the guide's example, all values files)": [
            str(LFK), "render", "--stdout", str(SEED.relative_to(ROOT)),
        ],
        f"lfk render ({len(specs)} examples, all values files)": [str(LFK), "render", "--stdout", *specs],
        "helm template (one release of the chart)": [
            helm_binary(), "template", "bench", str(CHART_DIR), "-f", str(SEED.parent / "train.yaml"),
        ],
    }  # fmt: skip
    for command in commands.values():  # warm: the validator and template caches, the OS's file cache
        _wall_ms(command)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, command in commands.items():
            times[name].append(_wall_ms(command))
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"side by side, fresh processes, {rounds} rounds taken in turn (median, min):")
    for name, t in times.items():
        print(f"  {name:<52} {medians[name]:6.0f} ms  {min(t):6.0f} ms")
    validate, render, render_all, helm = medians.values()
    print(
        f"  validate {validate:.0f} ms (target <= {VALIDATE_TARGET_MS} ms); "
        f"render of the guide's example = {render / helm:.2f}x one helm template (target <= 1x); "
        f"all {len(specs)} examples in one call = {render_all / helm:.2f}x"
    )


def fresh_process(runs: int = 15) -> None:
    times = []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(
                [str(LFK), "render", "--out", out, str(SEED)], env=CHILD_ENV, check=True, capture_output=True
            )
            times.append((time.perf_counter() - start) * 1000)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"fresh process: lfk render (validate + render, 4 releases) x{runs}: "
        f"median {statistics.median(times):.0f} ms, min {min(times):.0f} ms, max {max(times):.0f} ms, "
        f"peak RSS {rss:.0f} MiB  (target <= 300 ms)"
    )


def generated_specs(count: int) -> list[str]:
    rng = random.Random(7)
    base = SEED.read_text(encoding="utf-8")
    specs = []
    for i in range(count):
        text = base.replace("name: llama31-qa", f"name: exp-{i:04d}")
        text = text.replace(
            "rank: 16, alpha: 32", f"rank: {rng.choice([8, 16, 32, 64])}, alpha: {rng.choice([16, 32, 64])}"
        )
        text = text.replace(
            "learningRate: 5.0e-5", f"learningRate: {rng.choice(['1.0e-5', '5.0e-5', '1.0e-4', '2.0e-4'])}"
        )
        text = text.replace("batchSize: 2", f"batchSize: {rng.choice([1, 2, 4])}")
        specs.append(text)
    return specs


def in_process(count: int = 1000) -> None:
    from generator.core.experiment import experiment_of
    from generator.core.render import render
    from generator.core.spec import spec_from_text

    texts = generated_specs(count)
    folder = SEED.parent
    start = time.perf_counter()
    rendered = 0
    for i, text in enumerate(texts):
        experiment = experiment_of(spec_from_text(text, str(folder / f"spec-{i}.yaml")))
        if not experiment.valid:
            raise SystemExit(f"generated spec {i} is invalid")
        rendered += len(render(experiment.spec, folder, experiment.facts))
    elapsed = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"one process: {count} specs validated + rendered ({rendered} values files) in {elapsed:.2f} s, "
        f"{elapsed / count * 1000:.2f} ms per spec, peak RSS {rss:.0f} MiB  (target <= 5 s)"
    )


if __name__ == "__main__":
    side_by_side()
    fresh_process()
    in_process()
