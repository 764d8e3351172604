"""Adapters shared through another experiment's vLLM (serve.source: shared): the rules that say when to merge
instead, what each side renders, the guest Job's checks of a real adapter's files, and the registry protocol
between the guest Job (files/adapter_share.py) and the host's sidecar (files/adapter_sync.py)."""

from __future__ import annotations

import itertools
import json
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from generator.core.facts import derive
from generator.core.render import render
from generator.core.rules import validate
from generator.core.spec import load_spec

from .test_chart_scripts import load

HOST = {
    "name": "host",
    "storage": {"existingClaim": "llm-storage"},
    "model": {"path": "/storage/models/qwen2.5-7b-instruct"},
    "data": {"datasets": ["support_chat"]},
    "method": {"type": "lora", "lora": {"rank": 16}},
    "resources": {"gpu": {"product": "NVIDIA-A100-SXM4-80GB"}},
    "merge": {"enabled": False},
    "serve": {"source": "adapter", "maxLoraRank": 32, "sharedAdapters": {"maxLoras": 4}},
}
GUEST = {
    **HOST,
    "name": "guest",
    "data": {"datasets": ["legal_qa"]},
    "serve": {"source": "shared", "host": "host"},
}


def write(folder: Path, document: dict[str, Any]) -> Path:
    path = folder / document["name"] / "experiment.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def errors(tmp_path: Path, host: dict[str, Any] | None = None, **guest: Any) -> list[str]:
    if host is not None:
        write(tmp_path, host)
    spec = load_spec(write(tmp_path, {**GUEST, **guest}))
    return [f"{p.path}: {p.message} ({p.hint})" for p in validate(spec) if p.severity == "error"]


def test_a_guest_of_a_sharing_host_is_valid_and_renders_no_vllm_of_its_own(tmp_path: Path) -> None:
    assert errors(tmp_path, HOST) == []
    guest = load_spec(tmp_path / "guest" / "experiment.yaml")
    facts = derive(guest)
    assert set(facts.releases) == {"webui", "train", "adapter"}
    [adapter] = [r.values["adapter"] for r in render(guest, tmp_path / "out") if r.component == "adapter"]
    assert adapter["name"] == "guest" and adapter["path"] == facts.output_dir
    assert adapter["maxLoraRank"] == 32, "the host's --max-lora-rank, not the guest's own"
    assert adapter["host"] == {
        "name": "host",
        "url": "http://host-vllm:8000",
        "registry": "/storage/serving/host-vllm/adapters",
        "syncIntervalSeconds": 5,
    }
    [vllm] = [r.values["vllm"] for r in render(load_spec(tmp_path / "host" / "experiment.yaml"), tmp_path / "o2")
              if r.component == "vllm"]  # fmt: skip
    assert vllm["lora"]["maxLoras"] == 4
    assert vllm["lora"]["runtime"] == {
        "enabled": True,
        "registry": adapter["host"]["registry"],
        "syncIntervalSeconds": 5,
    }


@pytest.mark.parametrize(
    ("host_change", "guest_change", "expected"),
    [
        ({}, {"method": {"type": "lora", "lora": {"rank": 64}}},
         "$.method.lora.rank: host's vLLM loads ranks up to 32 (--max-lora-rank), not 64"),
        ({"serve": {"source": "adapter"}}, {}, "$.serve.host: host's vLLM does not load other experiments' adapters"),
        ({"serve": {"source": "merged", "sharedAdapters": {}}, "merge": {"enabled": True}}, {},
         "$.serve.host: host's vLLM does not load other experiments' adapters"),
        ({}, {"model": {"path": "/storage/models/llama-3.1-8b-instruct"}},
         "$.model.path: must be the same as host's (an adapter only fits the base model it was trained on)"),
        ({}, {"namespace": "elsewhere"}, "$.namespace: must be the same as host's"),
        ({}, {"model": {"path": "/storage/models/qwen2.5-7b-instruct", "template": "llama3"}},
         "$.model.template: host's vLLM formats every chat with template qwen, this adapter learnt llama3"),
        ({}, {"llamafactoryArgs": {"additional_target": "embed_tokens"}},
         "$.llamafactoryArgs.additional_target: a shared vLLM cannot load this adapter: it trains whole modules"),
        ({}, {"llamafactoryArgs": {"resize_vocab": True}}, "$.llamafactoryArgs.resize_vocab: a shared vLLM cannot"),
        ({}, {"serve": {"source": "shared", "host": "host", "servedModelName": "host"}},
         "$.serve.servedModelName: host is a name host's vLLM already serves"),
        ({}, {"method": {"type": "full"}}, "$.serve.source: full fine-tuning has no adapter to share"),
    ],
)  # fmt: skip
def test_what_a_shared_vllm_cannot_serve_is_refused_with_the_fix(
    tmp_path: Path, host_change: dict[str, Any], guest_change: dict[str, Any], expected: str
) -> None:
    found = errors(tmp_path, {**HOST, **host_change}, **guest_change)
    assert any(e.startswith(expected) for e in found), found


def test_merge_instead_is_the_way_out_of_an_unshareable_adapter(tmp_path: Path) -> None:
    [rank] = errors(tmp_path, HOST, method={"type": "lora", "lora": {"rank": 64}})
    assert "serve it with source: merged (its own vLLM) instead" in rank


def test_a_missing_host_is_named_with_where_it_was_looked_for(tmp_path: Path) -> None:
    assert errors(tmp_path) == [
        "$.serve.host: no valid experiment host beside this one: ../host/experiment.yaml::$: cannot read the spec: "
        "No such file or directory (name an experiment folder beside this one)"
    ]


def test_a_host_shares_only_when_it_serves_the_base_model(tmp_path: Path) -> None:
    host = {**HOST, "serve": {"source": "merged", "sharedAdapters": {}}, "merge": {"enabled": True}}
    found = [f"{p.path}: {p.message}" for p in validate(load_spec(write(tmp_path, host)))]
    assert "$.serve.sharedAdapters: other experiments' adapters are loaded onto the base model, which only " \
           "source: adapter serves" in found  # fmt: skip


# ----------------------------------------------------------------------------------- the guest Job's checks
def safetensors(path: Path, names: list[str]) -> None:
    """A .safetensors file in the format's own layout: header length, JSON header, then the tensors' bytes."""
    header = {
        n: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i, n in enumerate(names)
    }
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * 4 * len(names))


def adapter(tmp_path: Path, names: list[str] | None = None, **config: Any) -> Path:
    folder = tmp_path / "adapter"
    folder.mkdir(exist_ok=True)
    base = {"peft_type": "LORA", "r": 8, "target_modules": ["q_proj", "v_proj"], "modules_to_save": None}
    (folder / "adapter_config.json").write_text(json.dumps({**base, **config}))
    lora = ["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    safetensors(folder / "adapter_model.safetensors", names or lora)
    return folder


def test_an_ordinary_lora_adapter_can_be_shared(tmp_path: Path) -> None:
    assert load("adapter_share").problems(adapter(tmp_path), 16) == []


@pytest.mark.parametrize(
    ("config", "names", "expected"),
    [
        ({"r": 32}, None, "rank 32 is above the host's --max-lora-rank 16"),
        ({"modules_to_save": ["lm_head"]}, None, "whole modules trained beside it"),
        ({"use_dora": True}, None, "a DoRA adapter"),
        ({"target_modules": ["q_proj", "embed_tokens"]}, None, "LoRA on the embeddings (embed_tokens)"),
        ({}, ["base_model.model.model.embed_tokens.weight"], "trained embedding or output weights"),
        ({"peft_type": "IA3"}, None, "a IA3 adapter: vLLM loads LoRA adapters only"),
    ],
)
def test_an_adapter_vllm_cannot_load_is_named_before_it_is_registered(
    tmp_path: Path, config: dict[str, Any], names: list[str] | None, expected: str
) -> None:
    found = load("adapter_share").problems(adapter(tmp_path, names, **config), 16)
    assert any(expected in p for p in found), found


def test_an_unfinished_training_has_no_adapter_to_share(tmp_path: Path) -> None:
    [problem] = load("adapter_share").problems(tmp_path, 16)
    assert "no adapter_config.json" in problem


# ------------------------------------------------------------------------------ the registry protocol
def test_the_sidecar_loads_what_is_registered_and_unloads_what_is_not() -> None:
    plan = load("adapter_sync").plan
    wanted = {"a": "/storage/a", "b": "/storage/b2"}
    loaded = {"b": "/storage/b1", "old": "/storage/old", "host": "/storage/host"}
    # b moved to a new path (a new run): loaded again from there; the host's own adapter is never touched
    assert plan(wanted, loaded, {"host"}) == ([("a", "/storage/a"), ("b", "/storage/b2")], ["old"])
    assert plan({"a": "/storage/a"}, {"a": "/storage/a"}, set()) == ([], [])


class Sidecar(threading.Thread):
    """The host's replicas without a vLLM: each round, adapter_sync.py's own Sync reports (status() and
    write_status(), as in round()) every registered adapter as loaded, or as refused by vLLM with `refuse`."""

    def __init__(self, registry: Path, pods: list[str], refuse: str | None = None):
        super().__init__(daemon=True)
        self.registry, self.pods, self.refuse, self.stop = registry, pods, refuse, threading.Event()
        self.module = load("adapter_sync")

    def run(self) -> None:
        for pod in itertools.cycle(self.pods):
            if self.stop.is_set():
                return
            sync = self.module.Sync(self.registry, "http://vllm.invalid", {"host-own"}, pod)
            entries = self.module.registered(self.registry)
            loaded = {} if self.refuse else {n: e["path"] for n, e in entries.items()}
            if self.refuse:
                sync.refused = {
                    (n, e["path"], float(e["registered"])): self.refuse for n, e in entries.items()
                }
            self.module.write_status(self.registry / ".status", pod, sync.status(entries, loaded))
            time.sleep(0.05)


def share_env(tmp_path: Path, adapter_dir: Path) -> dict[str, str]:
    return {
        "ADAPTER_NAME": "guest",
        "ADAPTER_PATH": str(adapter_dir),
        "REGISTRY": str(tmp_path / "registry"),
        "MAX_LORA_RANK": "16",
        "EXPERIMENT": "guest",
        "RUN_ID": "abcd1234",
        "WAIT_SECONDS": "10",
    }


def test_register_waits_for_every_replica_and_unregister_until_none_serves_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    share = load("adapter_share")
    env = share_env(tmp_path, adapter(tmp_path))
    sidecar = Sidecar(tmp_path / "registry", ["vllm-a", "vllm-b"])
    sidecar.start()
    try:
        assert share.register(env) == 0
        entry = json.loads((tmp_path / "registry" / "guest.json").read_text())
        assert entry["path"] == env["ADAPTER_PATH"] and entry["runId"] == "abcd1234"
        assert "loaded on every running replica (vllm-a, vllm-b)" in capsys.readouterr().out
        assert share.unregister(env) == 0
        assert not (tmp_path / "registry" / "guest.json").exists()
        assert "unloaded from every running replica" in capsys.readouterr().out
    finally:
        sidecar.stop.set()


def test_an_adapter_vllm_refuses_is_unregistered_and_the_job_says_merge_instead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    share = load("adapter_share")
    env = share_env(tmp_path, adapter(tmp_path))
    sidecar = Sidecar(tmp_path / "registry", ["vllm-a"], refuse="vLLM refused the adapter (500): bad target")
    sidecar.start()
    try:
        assert share.register(env) == share.CANNOT_SHARE
    finally:
        sidecar.stop.set()
    assert not (tmp_path / "registry" / "guest.json").exists()
    out = capsys.readouterr().out
    assert "bad target" in out and "merge instead" in out


def test_an_unloadable_adapter_is_never_registered(tmp_path: Path) -> None:
    share = load("adapter_share")
    assert share.register(share_env(tmp_path, adapter(tmp_path, r=64))) == share.CANNOT_SHARE
    assert not (tmp_path / "registry").exists()


def test_without_a_running_host_register_times_out_and_unregister_does_not_wait(tmp_path: Path) -> None:
    share = load("adapter_share")
    env = {**share_env(tmp_path, adapter(tmp_path)), "WAIT_SECONDS": "0.5"}
    assert share.register(env) == 1
    started = time.monotonic()
    assert share.unregister(env) == 0
    assert time.monotonic() - started < 1, "no replica reports: nothing to wait for"


def test_a_status_of_an_earlier_registration_does_not_count(tmp_path: Path) -> None:
    """A replica still reporting the adapter loaded from the previous run's path (its round read the registry
    before the new entry was written) is not taken for the new registration's load."""
    share = load("adapter_share")
    env = {**share_env(tmp_path, adapter(tmp_path)), "WAIT_SECONDS": "1"}
    registry = tmp_path / "registry"
    earlier = {"name": "guest", "path": "/storage/output/guest/old", "registered": 1.0}
    sync = load("adapter_sync")
    status = sync.Sync(registry, "http://vllm.invalid", set(), "vllm-a").status(
        {"guest": earlier}, {"guest": earlier["path"]}
    )
    assert status["guest"] == {"registered": 1.0, "path": earlier["path"], "loaded": True, "error": None}

    def keep_reporting_the_earlier_one() -> None:
        for _ in range(40):
            sync.write_status(registry / ".status", "vllm-a", status)
            time.sleep(0.05)

    reporter = threading.Thread(target=keep_reporting_the_earlier_one, daemon=True)
    reporter.start()
    assert share.register(env) == 1, "never loaded: the only replica reports the earlier path"
    reporter.join()


def test_malformed_registry_entries_are_left_out_not_fatal(tmp_path: Path) -> None:
    sync = load("adapter_sync")
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "good.json").write_text(json.dumps({"name": "good", "path": "/storage/a", "registered": 1.5}))
    (registry / "no-path.json").write_text(json.dumps({"name": "no-path", "registered": 1}))
    (registry / "odd-time.json").write_text(
        json.dumps({"name": "odd", "path": "/storage/b", "registered": "x"})
    )
    (registry / "list.json").write_text("[1, 2]")
    (registry / "half.json").write_text('{"name": "half", "pa')
    assert list(sync.registered(registry)) == ["good"]


def test_a_name_with_a_slash_is_registered_under_a_quoted_file_name_and_not_taken_from_another_experiment(
    tmp_path: Path,
) -> None:
    share = load("adapter_share")
    env = {**share_env(tmp_path, adapter(tmp_path)), "ADAPTER_NAME": "org/legal-bot", "WAIT_SECONDS": "0.2"}
    assert share.register(env) == 1  # no host running: registered, never loaded
    entry = json.loads((tmp_path / "registry" / "org%2Flegal-bot.json").read_text())
    assert entry["name"] == "org/legal-bot" and load("adapter_sync").registered(tmp_path / "registry")
    other = {**env, "EXPERIMENT": "another"}
    assert share.register(other) == share.CANNOT_SHARE, "the name is another experiment's"
    assert share.unregister(other) == 0 and (tmp_path / "registry" / "org%2Flegal-bot.json").exists()
    assert share.unregister(env) == 0 and not (tmp_path / "registry" / "org%2Flegal-bot.json").exists()


def test_an_adapter_not_written_yet_is_retried_not_refused(tmp_path: Path) -> None:
    share = load("adapter_share")
    assert share.register(share_env(tmp_path, tmp_path / "not-yet")) == 1


def test_an_experiment_cannot_host_itself_and_a_lone_host_setting_is_warned_about(tmp_path: Path) -> None:
    assert errors(tmp_path, None, name="host", serve={"source": "shared", "host": "host"}) == [
        "$.serve.host: an experiment cannot host its own adapter (use source: adapter)"
    ]
    spec = load_spec(write(tmp_path, {**HOST, "serve": {**HOST["serve"], "host": "other"}}))
    [warning] = [p for p in validate(spec) if p.path == "$.serve.host"]
    assert warning.severity == "warning" and "used only with source: shared" in warning.message
