"""`lfk report`: one self-contained page per run (Markdown, or HTML with the loss curve inline). Pure: the
spec's text, its facts and the status `lfk status` gathered in, the page's text out.

Sections: lineage (spec hash, run id, images as configured and by digest as they ran, LLaMA-Factory and vLLM
versions, each dataset file's sha256 as tokenized), training (steps, loss, checkpoints, the loss curve,
tokens/s when the trainer logged tokens, MFU where the GPU's peak is known),
evaluation (the gate's scores of both models side by side, its rule and verdict), stages (wall time of each
release's workload), cost (GPU-hours, and a price when one is given), serving. Only the workloads of the
reported run count (a release keeps earlier runs' Jobs). What the cluster did not record says so instead of a
number.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import catalog
from .chain import lineage as chain_lineage
from .contract import GATE_LOWER_IS_BETTER
from .facts import Facts
from .lfinfo import image_version
from .watch import human_size

NOT_RECORDED = "not recorded"


@dataclass(frozen=True)
class Stage:
    component: str
    kind: str
    name: str
    state: str
    seconds: float | None
    gpus: int
    simulated: bool

    @property
    def gpu_hours(self) -> float | None:
        return None if self.seconds is None else self.gpus * self.seconds / 3600


def _seconds(start: str, end: str) -> float | None:
    if not start or not end:
        return None
    return (_time(end) - _time(start)).total_seconds()


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def of_run(status: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The status with only the workloads and pods of one run (a release keeps the Jobs of earlier runs)."""
    releases = [
        {
            **release,
            "objects": [o for o in release["objects"] if o.get("run_id") in (run_id, "", None)],
            "pods": [p for p in release["pods"] if p.get("run_id") in (run_id, "", None)],
        }
        for release in status["releases"]
    ]
    return {**status, "releases": releases}


def stages(status: dict[str, Any]) -> list[Stage]:
    """Each release's workload with its wall time (Jobs: start to completion; Deployments: creation to
    available) and the GPUs its pods held."""
    found = []
    for release in status["releases"]:
        pods = release["pods"]
        gpus = max((p["gpus"] for p in pods), default=0) * max(
            1, len(pods) if release["component"] == "train" else 1
        )
        simulated = bool(pods) and all(p.get("simulated") for p in pods)
        for obj in release["objects"]:
            found.append(Stage(
                release["component"], obj["kind"], obj["name"], obj["state"],
                _seconds(obj.get("started", ""), obj.get("finished", "")), gpus, simulated,
            ))  # fmt: skip
    return found


def image_lineage(spec_data: dict[str, Any], status: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(component/container, image as configured in the pod, the digest it ran from) for every container seen."""
    rows = []
    for release in status["releases"]:
        for pod in release["pods"]:
            for container, ran in sorted(pod.get("images", {}).items()):
                rows.append((f"{release['component']}/{container}", ran["image"], ran["id"] or NOT_RECORDED))
    return sorted(set(rows))


def spec_hash(spec_text: str) -> str:
    return hashlib.sha256(spec_text.encode("utf-8")).hexdigest()[:16]


def _version(image: str) -> str:
    """The release an image's tag names (`vllm/vllm-openai:v0.33.0` -> 0.33.0), as far as the tag tells."""
    return image_version(image) or "(version not in the image tag)"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return NOT_RECORDED
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def sections(
    spec_text: str,
    spec_data: dict[str, Any],
    facts: Facts,
    status: dict[str, Any],
    price_per_gpu_hour: float | None,
) -> list[tuple[str, list[str]]]:
    """The report as (title, Markdown lines) pairs; both formats are made from these."""
    status = of_run(status, facts.run_id)
    training = status.get("training")
    all_stages = stages(status)
    lineage = [
        f"- experiment `{facts.name}`, namespace `{facts.namespace}`, run id `{facts.run_id}` (a hash of every "
        "setting that changes the result)",
        f"- spec sha256 `{spec_hash(spec_text)}`",
        f"- LLaMA-Factory {_version(spec_data['images']['llamafactory'])} (image "
        f"`{spec_data['images']['llamafactory']}`); vLLM {_version(spec_data['images']['vllm'])} (image "
        f"`{spec_data['images']['vllm']}`)",
        f"- base model `{facts.base_model}`; output `{facts.output_dir}`"
        + (f"; merged `{facts.merged_dir}`" if facts.merged_dir else ""),
    ]
    lineage += [
        f"- starts from: {chain}" for chain in chain_lineage(facts.upstreams, facts.name, facts.run_id)
    ]
    lineage += dataset_lines(status.get("datasets"), facts)
    if rows := image_lineage(spec_data, status):
        lineage += ["", "| container | image | ran from (digest) |", "| --- | --- | --- |"]
        lineage += [f"| {c} | `{i}` | `{d}` |" for c, i, d in rows]
    else:
        lineage.append(f"- image digests: {NOT_RECORDED} (no pod of this run is left to read them from)")
    train = [f"no trainer_log.jsonl was read ({NOT_RECORDED}; pass --storage-root or --read-log-in-cluster)"]
    if training:
        train = [
            f"- steps {training['current_steps']}/{training['total_steps']}, epoch {training['epoch']}, "
            f"last loss {training['loss']}, elapsed {training['elapsed']}",
            f"- tokens/s: {training['throughput']}" if training.get("throughput") else
            f"- tokens/s: {NOT_RECORDED} (the trainer logs it with include_num_input_tokens_seen)",
            f"- {mfu_line(spec_data, facts, training.get('throughput'))}",
            *[f"- ! {p}" for p in training["problems"]],
        ]  # fmt: skip
    checkpoints = status.get("checkpoints")
    if checkpoints:
        train.append(
            "- checkpoints: "
            + ", ".join(
                f"step {c['step']} ({human_size(c['size_bytes'])}, {c['saved_at']})" for c in checkpoints
            )
        )
    stage_lines = ["| release | workload | state | wall time | GPUs |", "| --- | --- | --- | --- | --- |"]
    for s in all_stages:
        note = " (SIMULATED: kwok, no container ran)" if s.simulated else ""
        stage_lines.append(
            f"| {s.component} | {s.kind} `{s.name}` | {s.state}{note} | {_duration(s.seconds)} | {s.gpus} |"
        )
    gpu_hours = real_gpu_hours(all_stages)
    cost = [
        f"- GPU-hours of the finished workloads: {gpu_hours:.2f} (serving counted until it became available)"
    ]
    price_per_gpu_hour = price_of(spec_data, price_per_gpu_hour)
    if price_per_gpu_hour is not None:
        cost.append(f"- at {price_per_gpu_hour:.2f} per GPU-hour: {gpu_hours * price_per_gpu_hour:.2f}")
    else:
        cost.append("- cost: no price given (resources.gpu.pricePerHour or --price-per-gpu-hour)")
    if any(s.simulated for s in all_stages):
        cost.append("- simulated stages are left out: no GPU was used")
    if "vllm" in facts.releases:
        served = [f"- `{facts.served_name}` at the vllm release `{facts.releases['vllm']}`"]
    elif host := facts.serving_host:
        served = [f"- `{facts.served_name}`, an adapter loaded into {host.name}'s vLLM (`{host.release}`)"]
    else:
        served = ["- not served (serving is off in the spec)"]
    return [
        ("Lineage", lineage),
        ("Training", train),
        ("Evaluation", evaluation(facts, status.get("evaluation"))),
        ("Stages", stage_lines),
        ("Cost", cost),
        ("Serving", served),
    ]


def dataset_lines(datasets: dict[str, dict[str, str]] | None, facts: Facts) -> list[str]:
    """Each dataset's files and their sha256, as the run's tokenized set was made from them."""
    if not datasets:
        why = "the data is hashed when it is tokenized once" + ("" if facts.tokenizes else ", which is off")
        return [f"- dataset hashes: {NOT_RECORDED} ({why}; or the run's output folder was not read)"]
    return [
        f"- dataset `{name}`: "
        + (", ".join(f"`{f}` sha256 `{h[:16]}`" for f, h in sorted(files.items())) or "no files")
        for name, files in sorted(datasets.items())
    ]


def real_gpu_hours(all_stages: list[Stage]) -> float:
    """GPU-hours of the stages that ran on real nodes (simulated ones held no GPU)."""
    return sum(s.gpu_hours or 0 for s in all_stages if not s.simulated)


def price_of(spec_data: dict[str, Any], flag: float | None) -> float | None:
    """The price of a GPU-hour: the flag's, else the spec's resources.gpu.pricePerHour."""
    return flag if flag is not None else spec_data["resources"]["gpu"].get("pricePerHour")


def mfu(spec_data: dict[str, Any], facts: Facts, throughput: float | None) -> tuple[float | None, str]:
    """The training's model FLOPs utilisation and how it was reckoned (or what it lacks): model FLOPs per token
    (6 N for full training; 4 N for LoRA and freeze, whose frozen weights need no weight gradients) times the
    logged tokens/s, over the GPUs' peak."""
    product = spec_data["resources"]["gpu"].get("product")
    peak = catalog.peak_tflops(product) if product and spec_data["resources"]["gpus"] else None
    size = facts.model_info.parameters_b if facts.model_info else None
    if not (peak and size and throughput):
        missing = "the GPU's peak FLOPS" if not peak else "the model's size" if not size else "tokens/s"
        return None, f"needs {missing}"
    per_token = 6 if spec_data["method"]["type"] == "full" else 4
    value = per_token * size * 1e9 * throughput / (facts.world_size * peak * 1e12)
    how = f"{per_token} x {size:g}B parameters x {throughput:g} tokens/s over {facts.world_size} x {peak:g} TFLOPS, {product}"
    return value, how


def mfu_line(spec_data: dict[str, Any], facts: Facts, throughput: float | None) -> str:
    value, how = mfu(spec_data, facts, throughput)
    return f"MFU: {NOT_RECORDED} ({how})" if value is None else f"MFU: {value:.1%} ({how})"


def tag_key(key: str) -> str:
    """An MLflow tag key: letters, digits, `_-. /` only, at most 250 characters."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", key)[:250]


def figures(
    spec_text: str,
    spec_data: dict[str, Any],
    facts: Facts,
    status: dict[str, Any],
    price_per_gpu_hour: float | None,
) -> dict[str, str]:
    """The report's figures as MLflow tags (`lfk report --mlflow-tags`): what the run was made from and what it
    cost, on the training's MLflow run beside its metrics. Only what was recorded."""
    status = of_run(status, facts.run_id)
    tags = {
        "lfk.spec_sha256": spec_hash(spec_text),
        "lfk.llamafactory_version": _version(spec_data["images"]["llamafactory"]),
        "lfk.vllm_version": _version(spec_data["images"]["vllm"]),
    }
    for name, files in (status.get("datasets") or {}).items():
        if len(files) == 1:
            [(file, digest)] = files.items()
            tags[tag_key(f"lfk.dataset.{name}.{file}.sha256")] = digest
        else:  # a folder of shards: one digest of every file's name and digest
            listing = "".join(f"{f} {d}\n" for f, d in sorted(files.items()))
            tags[tag_key(f"lfk.dataset.{name}.sha256")] = hashlib.sha256(listing.encode()).hexdigest()
    throughput = (status.get("training") or {}).get("throughput")
    if throughput:
        tags["lfk.tokens_per_s"] = f"{throughput:g}"
    if (value := mfu(spec_data, facts, throughput)[0]) is not None:
        tags["lfk.mfu"] = f"{value:.4f}"
    all_stages = stages(status)
    for component in dict.fromkeys(s.component for s in all_stages):
        seconds = [s.seconds for s in all_stages if s.component == component and s.seconds is not None]
        if seconds:
            tags[f"lfk.wall_seconds.{component}"] = f"{sum(seconds):.0f}"
    hours = real_gpu_hours(all_stages)
    tags["lfk.gpu_hours"] = f"{hours:.3f}"
    if (price := price_of(spec_data, price_per_gpu_hour)) is not None:
        tags["lfk.cost"] = f"{hours * price:.2f}"
    if release := facts.serving_release:
        tags["lfk.served_name"] = facts.served_name
        tags["lfk.served_by"] = release
    return tags


def gate_rule(scores: dict[str, Any]) -> str:
    """The gate's rule in words: 'at most 1 below the base, and at least 20' (above, for perplexity; a reward
    model's against chance)."""
    lower = scores["metric"] in GATE_LOWER_IS_BETTER
    reference = "chance (50)" if scores["base"].get("chance") else "the base model's"
    rule = f"at most {scores['maxDrop']:g} {'above' if lower else 'below'} {reference}"
    if scores.get("floor") is not None:
        rule += f", and at {'most' if lower else 'least'} {scores['floor']:g}"
    return rule


def evaluation(facts: Facts, scores: dict[str, Any] | None) -> list[str]:
    """The gate's scores of both models side by side, its rule and its verdict."""
    if "eval" not in facts.releases:
        return ["- no evaluation gate in the spec (evaluate:)"]
    if scores is None:
        return [f"- scores: {NOT_RECORDED} (not written yet, or the storage was not read)"]
    metric = scores["metric"]
    lines = [
        f"- rule: the tuned model's {metric} {gate_rule(scores)}",
        f"- verdict: {'passed, served' if scores['passed'] else 'FAILED, not served'}"
        + (f" ({'; '.join(scores['why'])})" if scores["why"] else ""),
        "",
        "| metric | base | tuned | change |",
        "| --- | --- | --- | --- |",
    ]
    for name in ("bleu-4", "rouge-1", "rouge-2", "rouge-l"):
        if name in scores["base"] and name in scores["tuned"]:
            base, tuned = scores["base"][name], scores["tuned"][name]
            lines.append(f"| {name} | {base:.2f} | {tuned:.2f} | {tuned - base:+.2f} |")
    return lines


def markdown(title: str, parts: list[tuple[str, list[str]]], loss_png_name: str | None) -> str:
    lines = [f"# {title}", ""]
    for name, body in parts:
        lines += [f"## {name}", "", *body, ""]
        if name == "Training" and loss_png_name:
            lines += [f"![loss per step]({loss_png_name})", ""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """Markdown's `code` as <code>, everything else escaped."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def html_page(title: str, parts: list[tuple[str, list[str]]], loss_png: bytes | None) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for name, lines in parts:
        body.append(f"<h2>{html.escape(name)}</h2>")
        rows = [line for line in lines if line.startswith("|") and not line.startswith("| ---")]
        items = [line[2:] for line in lines if line.startswith("- ")]
        other = [line for line in lines if line and not line.startswith(("|", "- "))]
        body += [f"<p>{_inline(line)}</p>" for line in other]
        if items:
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
        if rows:
            cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
            head = "".join(f"<th>{_inline(c)}</th>" for c in cells[0])
            data = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in cells[1:])
            body.append(f"<table><tr>{head}</tr>{data}</table>")
        if name == "Training" and loss_png:
            encoded = base64.b64encode(loss_png).decode()
            body.append(f'<img alt="loss per step" src="data:image/png;base64,{encoded}">')
    style = "body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{border:1px solid #ccc;padding:.2em .5em}"
    return f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"
