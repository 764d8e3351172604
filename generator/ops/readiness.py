"""The guide's checklists as code: before training, and after it; and the same before-training list run in
the cluster as the chart's GPU-less preflight Job (cluster_readiness).

Each item is a function from what it needs (the spec and its facts, a locally mounted storage root, a
Kubernetes client, an HTTP endpoint) to an Item: passed, failed with the fix, or skipped with the reason.
The model and dataset checks are the pods' own (charts/llama-factory/files/readiness.py), so `lfk check`
and the preflight judge the storage alike. Nothing is printed here; `lfk check` prints the items.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ..checks import datasets
from ..core.contract import MERGE_MAX_SIZE_RATIO, MERGE_MIN_SIZE_RATIO, PROMPT_PARITY_RECORD
from ..core.facts import Facts, derive
from ..core.models import template_from_model_dir
from ..core.problems import Item
from ..core.rules import validate
from ..core.spec import Spec
from ..core.storage import in_cluster_host, local
from ..errors import DataError
from ..project import chart_module
from .cluster_readiness import engine_crd, gpu_nodes, secrets


def no_storage(name: str) -> Item:
    return Item(
        name, None, "needs the storage: pass --storage-root, or run it in the cluster with --in-cluster"
    )


# ------------------------------------------------------------------------------------------ before training
def base_model(spec: Spec, storage_root: Path | None) -> Item:
    name = "base model on storage"
    if storage_root is None:
        return no_storage(name)
    folder = local(storage_root, spec.data["model"]["path"])
    missing = chart_module("readiness").missing_model_files(str(folder))
    if not missing:
        return Item(name, True, f"{spec.data['model']['path']}: config, tokenizer and weights present")
    hub = spec.data["model"].get("hub", {}).get("id")
    if hub and not (folder / "config.json").is_file():
        return Item(
            name, True, f"{spec.data['model']['path']} is empty; the train release downloads {hub} first"
        )
    return Item(
        name, False, f"{spec.data['model']['path']}: missing {', '.join(missing)}",
        "copy the model in Hugging Face format there (huggingface-cli download ... --local-dir), or set model.hub",
    )  # fmt: skip


def dataset_items(spec: Spec, storage_root: Path | None) -> list[Item]:
    if storage_root is None:
        return [no_storage("datasets valid and registered")]
    data_dir = local(storage_root, spec.data["data"]["dir"])
    try:
        info = datasets.read_dataset_info(data_dir)
    except DataError as exc:
        return [
            Item(
                "dataset_info.json", False, str(exc), "fix the JSON, or re-register with `lfk data register`"
            )
        ]
    items = []
    for _, name, stage in datasets.spec_datasets(spec.data):
        label = f"dataset {name}"
        entry = info.get(name)
        if entry is None:
            fix = f"lfk data register {spec.data['data']['dir']} {name} FILE --format alpaca|sharegpt"
            if name in spec.data["data"]["register"]:
                fix = "lfk data sync SPEC --storage-root ... (the spec's data.register has it)"
            items.append(
                Item(label, False, f"not registered in {spec.data['data']['dir']}/dataset_info.json", fix)
            )
            continue
        if "file_name" not in entry:
            items.append(Item(label, True, "registered (loaded from a hub at training time)"))
            continue
        try:
            report = datasets.check(
                data_dir / entry["file_name"], datasets.Attrs.of_entry(entry), stage, media_dir=data_dir
            )
        except DataError as exc:
            items.append(Item(label, False, str(exc), "lfk data validate FILE"))
            continue
        if report.fatal or not report.valid:
            why = (
                report.fatal[0][1]
                if report.fatal
                else f"none of {report.total} examples is usable for stage {stage}"
            )
            items.append(
                Item(
                    label,
                    False,
                    why,
                    f"lfk data validate --stage {stage} {spec.data['data']['dir']}/{entry['file_name']}",
                )
            )
        else:
            dropped = f", {len(report.dropped)} dropped" if report.dropped else ""
            items.append(
                Item(
                    label, True, f"registered, {report.valid} usable examples{dropped} ({report.formatting})"
                )
            )
    return items


def template(spec: Spec, facts: Facts, storage_root: Path | None) -> Item:
    name = "template matches the model"
    if storage_root is None:
        return no_storage(name)
    folder = local(storage_root, spec.data["model"]["path"])
    if not (folder / "config.json").is_file():
        return Item(name, None, "the model is not on the storage yet")
    found = template_from_model_dir(folder)
    if found is None:
        return Item(
            name, None, "the model's files do not tell its template (no chat template, unknown architecture)"
        )
    if found != facts.template:
        return Item(
            name,
            False,
            f"the model uses {found!r}, the spec trains with {facts.template!r}",
            f"set model.template: {found}",
        )
    return Item(name, True, f"{found}")


def vram(spec: Spec, facts: Facts) -> Item:
    name = "VRAM estimate fits the GPU"
    problems = [
        p for p in validate(spec, facts) if p.path.startswith(("$.resources.gpu", "$.model.parametersB"))
    ]
    if facts.vram is None or facts.gpu_memory_gib is None:
        return Item(name, None, problems[0].message if problems else "model size or GPU memory unknown")
    errors = [p for p in problems if p.severity == "error"]
    detail = f"{facts.vram.total_gb:.1f} GB estimated per GPU on {facts.gpu_memory_gib:g} GiB"
    return Item(name, not errors, detail, errors[0].hint if errors else "")


def mlflow(spec: Spec, timeout: float = 5.0) -> Item:
    name = "MLflow tracking server reachable"
    tracking = spec.data["tracking"].get("mlflow")
    if not tracking:
        return Item(name, True, "not used (report_to: none)")
    uri = tracking["trackingUri"].rstrip("/")
    if not uri.startswith("http"):
        return Item(name, None, f"{uri} is not an HTTP server")
    host = urllib.parse.urlparse(uri).hostname or ""
    if in_cluster_host(host):
        return Item(name, None, f"{host} resolves only inside the cluster: check it there with --in-cluster")
    try:
        with urllib.request.urlopen(uri + "/health", timeout=timeout) as response:
            return Item(name, response.status == 200, f"{uri} answers /health")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Item(
            name,
            False,
            f"{uri}: {reason}",
            "check tracking.mlflow.trackingUri; cluster-internal names resolve only in the cluster (use --in-cluster)",
        )


def before_training(
    spec: Spec, storage_root: Path | None, api: Any, mlflow_timeout: float = 5.0, facts: Facts | None = None
) -> list[Item]:
    facts = facts or derive(spec)
    crd = engine_crd(spec, api)
    return [
        base_model(spec, storage_root),
        *dataset_items(spec, storage_root),
        template(spec, facts, storage_root),
        vram(spec, facts),
        mlflow(spec, mlflow_timeout),
        secrets(spec, facts, api),
        gpu_nodes(spec, facts, api),
        *([crd] if crd else []),
    ]


# ------------------------------------------------------------------------------------------- after training
def merged_model(spec: Spec, facts: Facts, storage_root: Path | None) -> Item:
    name = "merged model complete"
    if facts.merged_dir is None:
        return Item(
            name, True, f"nothing to merge ({spec.data['method']['type']}; vLLM serves {facts.serve_model})"
        )
    if storage_root is None:
        return no_storage(name)
    problems = chart_module("verify_merge").verify(
        str(local(storage_root, facts.merged_dir)), str(local(storage_root, facts.base_model)),
        spec.data["merge"]["dtype"], MERGE_MIN_SIZE_RATIO, MERGE_MAX_SIZE_RATIO, str(local(storage_root, facts.output_dir)),
    )  # fmt: skip
    if problems:
        return Item(
            name,
            False,
            f"{facts.merged_dir}: {'; '.join(problems)}",
            "rerun the merge release (helm upgrade --install ...-merge)",
        )
    return Item(
        name,
        True,
        f"{facts.merged_dir}: config, tokenizer, every shard, {spec.data['merge']['dtype']}, size of the base",
    )


def served_model(facts: Facts, url: str | None, api_key: str | None, timeout: float = 10.0) -> Item:
    name = "vLLM answers /v1/models with the served name"
    if not {"vllm", "adapter"} & set(facts.releases):
        return Item(name, True, "serving is off in this spec")
    if not url and facts.serving_host:
        return Item(
            name,
            None,
            f"pass --vllm-url of {facts.serving_host.name}'s vLLM (e.g. after `lfk ui {facts.serving_host.source} vllm`)",
        )
    if not url:
        return Item(name, None, "pass --vllm-url (e.g. after `lfk ui SPEC vllm`)")
    request = urllib.request.Request(
        url.rstrip("/") + "/v1/models", headers={"Authorization": f"Bearer {api_key}"} if api_key else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            models = [m.get("id") for m in json.load(response).get("data", [])]
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return Item(
            name,
            False,
            f"{url}: {getattr(exc, 'reason', exc)}",
            "is the vllm release available? (lfk status SPEC)",
        )
    if facts.served_name in models:
        return Item(name, True, f"{url} serves {facts.served_name!r}")
    return Item(
        name,
        False,
        f"{url} serves {models}, not {facts.served_name!r}",
        "check serve.servedModelName and the deployed values",
    )


def after_training(
    spec: Spec,
    storage_root: Path | None,
    vllm_url: str | None,
    api_key: str | None,
    facts: Facts | None = None,
) -> list[Item]:
    facts = facts or derive(spec)
    items = [
        merged_model(spec, facts, storage_root),
        served_model(facts, vllm_url, api_key),
        served_prompts(facts, storage_root, vllm_url, api_key),
    ]
    if facts.serve_media.get("image", 0) > 0 and {"vllm", "adapter"} & set(facts.releases):
        items.append(served_picture(facts, vllm_url, api_key))
    return items


def served_picture(facts: Facts, url: str | None, api_key: str | None) -> Item:
    """A model served with images allowed: a question with a picture is answered, and the picture reached the
    prompt (files/chat_test.py, which `helm test` runs too)."""
    name = "vLLM takes a picture into the prompt and answers about it"
    if not url:
        return Item(name, None, "pass --vllm-url")
    chat = chart_module("chat_test")
    endpoint = url.rstrip("/") + "/v1/chat/completions"
    body, headers = chat.chat_body(facts.served_name, "What is on the picture?", 8), chat.headers_for(api_key)
    try:
        text_only = chat.ask(endpoint, body, headers)
    except ValueError as exc:
        return Item(name, False, str(exc), "is the vllm release available? (lfk status SPEC)")
    problems, added = chat.picture_problems(endpoint, body, headers, text_only)
    if problems:
        return Item(name, False, "; ".join(problems), "serve the model with its processor and chat template")
    side = chat.PICTURE_SIDE
    return Item(name, True, f"a {side} x {side} picture took {added} prompt tokens and was answered")


def served_prompts(facts: Facts, storage_root: Path | None, url: str | None, api_key: str | None) -> Item:
    """The prompts vLLM builds with its chat template against the ones LLaMA-Factory trained on, and its stop
    tokens (files/prompt_parity.py, which `helm test` runs too)."""
    name = "vLLM builds the prompts LLaMA-Factory trained on, and stops on its stop tokens"
    if not {"vllm", "adapter"} & set(facts.releases):
        return Item(name, True, "serving is off in this spec")
    if not url:
        return Item(name, None, "pass --vllm-url")
    if storage_root is None:
        return no_storage(name)
    record_path = f"{(facts.lora_module or facts.serve_model).rstrip('/')}/{PROMPT_PARITY_RECORD}"
    parity = chart_module("prompt_parity")
    try:
        record = parity.load_record(str(local(storage_root, record_path)))
    except (OSError, ValueError) as exc:
        return Item(
            name,
            False,
            f"{record_path}: {exc}",
            "rerun the merge (for an adapter, the training): it writes the record",
        )
    try:
        problems = parity.problems(record, url, facts.served_name, api_key)
    except parity.NotVllm as exc:
        return Item(name, None, f"not checked: {exc}")
    if problems:
        return Item(
            name, False, "; ".join(problems), "serve the chat template LLaMA-Factory saved beside the model"
        )
    return Item(name, True, f"vLLM builds {parity.summary(record)}")
