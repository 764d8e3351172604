"""Adapters shared through another experiment's vLLM (serve.source: shared): the rules that say when to merge
instead, what each side renders, the guest Job's checks of a real adapter's files, and the registry protocol
between the guest Job (files/adapter_share.py) and the host's sidecar (files/adapter_sync.py)."""

from __future__ import annotations

import http.server
import itertools
import json
import os
import shutil
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

HOST: dict[str, Any] = {
    "name": "host",
    "storage": {"existingClaim": "llm-storage"},
    "model": {"path": "/storage/models/qwen2.5-7b-instruct"},
    "data": {"datasets": ["support_chat"]},
    "method": {"type": "lora", "lora": {"rank": 16}},
    "resources": {"gpu": {"product": "NVIDIA-A100-SXM4-80GB"}},
    "merge": {"enabled": False},
    "serve": {
        "source": "adapter",
        "maxLoraRank": 32,
        "apiKeySecret": {"name": "host-api-key", "key": "token"},
        "sharedAdapters": {"maxLoras": 4},
    },
}
GUEST = {
    **HOST,
    "name": "guest",
    "data": {"datasets": ["legal_qa"]},
    "serve": {"source": "shared", "host": "host"},
}


def write(folder: Path, document: dict[str, Any]) -> Path:
    path: Path = folder / str(document["name"]) / "experiment.yaml"
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
        "apiKey": {"secretName": "host-api-key", "secretKey": "token"},
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
        ({}, {"method": {"type": "full"}}, "$.serve.source: full fine-tuning has no LoRA adapter to share"),
        ({}, {"method": {"type": "oft"}}, "$.serve.source: oft fine-tuning has no LoRA adapter to share"),
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


def test_a_sharing_host_without_an_api_key_is_refused_with_the_fix(tmp_path: Path) -> None:
    """Runtime LoRA updating without a key would let anyone who reaches the port load and unload adapters."""
    serve = {k: v for k, v in HOST["serve"].items() if k != "apiKeySecret"}
    found = [f"{p.path}: {p.message} ({p.hint})" for p in validate(load_spec(write(tmp_path, {**HOST, "serve": serve})))
             if p.severity == "error"]  # fmt: skip
    assert found == [
        "$.serve.apiKeySecret: a vLLM that loads adapters at run time (sharedAdapters) needs an API key: without "
        "one, anyone who reaches its port can load and unload adapters (add serve.apiKeySecret: {name: <Secret "
        "in the namespace>, key: <its key>})"
    ]
    assert [p for p in validate(load_spec(write(tmp_path, HOST))) if p.severity == "error"] == []


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
    """The guest's adapter where its training writes it: <output root>/guest/<run id>."""
    folder = tmp_path / "output" / "guest" / "abcd1234"
    folder.mkdir(parents=True, exist_ok=True)
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
    """The host's replicas without a vLLM: each round, adapter_sync.py's own Sync reports (registered(),
    status() and write_status(), as in round()) every accepted adapter as loaded, or as refused by vLLM with
    `refuse`, and every refused registry file."""

    def __init__(self, registry: Path, root: Path, pods: list[str], refuse: str | None = None):
        super().__init__(daemon=True)
        self.registry, self.root, self.pods, self.refuse = registry, root, pods, refuse
        self.stop = threading.Event()
        self.module = load("adapter_sync")

    def run(self) -> None:
        for pod in itertools.cycle(self.pods):
            if self.stop.is_set():
                return
            sync = self.module.Sync(self.registry, "http://vllm.invalid", {"host-own"}, pod, str(self.root))
            entries, refused = self.module.registered(self.registry, str(self.root), {"host-own"})
            loaded = {} if self.refuse else {n: e["path"] for n, e in entries.items()}
            if self.refuse:
                sync.refused = {
                    (n, e["path"], float(e["registered"])): self.refuse for n, e in entries.items()
                }
            self.module.write_status(self.registry / ".status", pod, sync.status(entries, loaded), refused)
            time.sleep(0.05)


def share_env(tmp_path: Path, adapter_dir: Path) -> dict[str, str]:
    return {
        "ADAPTER_NAME": "guest",
        "ADAPTER_PATH": str(adapter_dir),
        "REGISTRY": str(tmp_path / "registry"),
        "OUTPUT_ROOT": str(tmp_path / "output"),
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
    sidecar = Sidecar(tmp_path / "registry", tmp_path / "output", ["vllm-a", "vllm-b"])
    sidecar.start()
    try:
        assert share.register(env) == 0
        entry = json.loads((tmp_path / "registry" / "guest.json").read_text())
        assert entry["path"] == env["ADAPTER_PATH"] and entry["runId"] == "abcd1234"
        assert set(entry) == {"name", "path", "experiment", "runId", "registered"}, "what the sidecar accepts"
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
    sidecar = Sidecar(
        tmp_path / "registry",
        tmp_path / "output",
        ["vllm-a"],
        refuse="vLLM refused the adapter (500): bad target",
    )
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
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "good.json").write_text(json.dumps(entry(name="good")))
    (registry / "no-path.json").write_text(
        json.dumps({"name": "no-path", "experiment": "guest", "registered": 1})
    )
    (registry / "odd-time.json").write_text(json.dumps(entry(name="odd", registered="x")))
    (registry / "list.json").write_text("[1, 2]")
    (registry / "half.json").write_text('{"name": "half", "pa')
    wanted, refused = accepted(registry)
    assert list(wanted) == ["good"]
    assert sorted(refused) == ["half.json", "list.json", "no-path.json", "odd-time.json"]


def test_a_name_with_a_slash_is_registered_under_a_quoted_file_name_and_not_taken_from_another_experiment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    share = load("adapter_share")
    env = {**share_env(tmp_path, adapter(tmp_path)), "ADAPTER_NAME": "org/legal-bot", "WAIT_SECONDS": "0.2"}
    assert share.register(env) == 1  # no host running: registered, never loaded
    entry = json.loads((tmp_path / "registry" / "org%2Flegal-bot.json").read_text())
    assert entry["name"] == "org/legal-bot"
    assert list(accepted(tmp_path / "registry", tmp_path / "output")[0]) == ["org/legal-bot"]
    theirs = tmp_path / "output" / "another" / "abcd1234"
    shutil.copytree(env["ADAPTER_PATH"], theirs)
    other = {**env, "EXPERIMENT": "another", "ADAPTER_PATH": str(theirs)}
    assert share.register(other) == share.CANNOT_SHARE, "the name is another experiment's"
    assert "registered by experiment guest" in capsys.readouterr().out
    assert share.unregister(other) == 0 and (tmp_path / "registry" / "org%2Flegal-bot.json").exists()
    assert share.unregister(env) == 0 and not (tmp_path / "registry" / "org%2Flegal-bot.json").exists()


def test_an_adapter_not_written_yet_is_retried_not_refused(tmp_path: Path) -> None:
    share = load("adapter_share")
    env = share_env(tmp_path, tmp_path / "output" / "guest" / "not-yet")
    assert share.register(env) == 1


def test_an_experiment_cannot_host_itself_and_a_lone_host_setting_is_warned_about(tmp_path: Path) -> None:
    assert errors(tmp_path, None, name="host", serve={"source": "shared", "host": "host"}) == [
        "$.serve.host: an experiment cannot host its own adapter (use source: adapter)"
    ]
    spec = load_spec(write(tmp_path, {**HOST, "serve": {**HOST["serve"], "host": "other"}}))
    [warning] = [p for p in validate(spec) if p.path == "$.serve.host"]
    assert warning.severity == "warning" and "used only with source: shared" in warning.message


# -------------------------------------------------------- the registry is storage anyone may write: the host
ROOT = "/storage/output"


def entry(**change: Any) -> dict[str, Any]:
    """A registry entry as adapter_share.py writes it for experiment guest's run abcd1234, changed."""
    return {"name": "legal-bot", "path": f"{ROOT}/guest/abcd1234", "experiment": "guest", "runId": "abcd1234",
            "registered": 1.0, **change}  # fmt: skip


def registry_with(tmp_path: Path, files: dict[str, Any]) -> Path:
    registry = tmp_path / "registry"
    registry.mkdir(exist_ok=True)
    for name, content in files.items():
        (registry / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return registry


def accepted(
    registry: Path, root: str | Path = ROOT, reserved: set[str] | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """(name -> path the sidecar would load, file -> why it refused it)."""
    entries, refused = load("adapter_sync").registered(registry, str(root), reserved or set())
    return {n: e["path"] for n, e in entries.items()}, {r["file"]: r["error"] for r in refused}


def test_an_entry_in_its_own_experiments_output_folder_is_accepted(tmp_path: Path) -> None:
    assert accepted(registry_with(tmp_path, {"legal-bot.json": entry()})) == (
        {"legal-bot": f"{ROOT}/guest/abcd1234"},
        {},
    )


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/etc", "/etc leads to /etc, not into the training output folder /storage/output"),
        (f"{ROOT}/../etc", "leads to /storage/etc, not into the training output folder"),
        (f"{ROOT}/guest/../../../etc", "leads to /etc, not into the training output folder"),
        (f"{ROOT}/victim/abcd1234", "leads into experiment victim's output folder, not into guest's"),
        (
            f"{ROOT}/guest/../victim/abcd1234",
            "leads into experiment victim's output folder, not into guest's",
        ),
        (f"{ROOT}/guest", "is experiment guest's folder itself, not a run's adapter in it"),
        (ROOT, "not into the training output folder"),
        ("storage/output/guest/abcd1234", "is not an absolute path"),
        (f"{ROOT}/guest/abcd\u00001234", "embedded null byte"),
    ],
)
def test_the_sidecar_refuses_an_adapter_path_outside_its_experiments_output_folder(
    tmp_path: Path, path: str, why: str
) -> None:
    registry = registry_with(
        tmp_path, {"legal-bot.json": entry(path=path), "other.json": entry(name="other")}
    )
    wanted, refused = accepted(registry)
    assert list(wanted) == ["other"], "the refused entry is left out, the others still load"
    assert why in refused["legal-bot.json"], refused


def test_a_symlink_out_of_the_experiments_folder_is_followed_and_refused(tmp_path: Path) -> None:
    """On the pod the sidecar resolves links: a run folder that is a link elsewhere is judged by its target."""
    root = tmp_path / "output"
    (root / "guest" / "abcd1234").mkdir(parents=True)
    (root / "victim" / "r1").mkdir(parents=True)
    (tmp_path / "secrets").mkdir()
    (root / "guest" / "escape").symlink_to(tmp_path / "secrets")
    (root / "guest" / "borrowed").symlink_to(root / "victim" / "r1")
    (root / "guest" / "latest").symlink_to(
        root / "guest" / "abcd1234"
    )  # a link within its own folder is fine
    registry = registry_with(tmp_path, {
        "escape.json": entry(name="escape", path=f"{root}/guest/escape"),
        "borrowed.json": entry(name="borrowed", path=f"{root}/guest/borrowed"),
        "latest.json": entry(name="latest", path=f"{root}/guest/latest"),
    })  # fmt: skip
    wanted, refused = accepted(registry, root)
    real_root = os.path.realpath(root)
    assert wanted == {"latest": f"{real_root}/guest/abcd1234"}, "loaded from where the link leads"
    assert "not into the training output folder" in refused["escape.json"], refused
    assert "experiment victim's output folder, not into guest's" in refused["borrowed.json"], refused


def test_two_files_claiming_one_name_keep_the_one_registered_first(tmp_path: Path) -> None:
    registry = registry_with(tmp_path, {
        "a-later.json": entry(path=f"{ROOT}/squatter/r9", experiment="squatter", registered=200.0),
        "legal-bot.json": entry(registered=100.0),
        "same-time-b.json": entry(name="tie", path=f"{ROOT}/guest/b", registered=5.0),
        "same-time-a.json": entry(name="tie", path=f"{ROOT}/guest/a", registered=5.0),
    })  # fmt: skip
    wanted, refused = accepted(registry)
    # by registration time, not by the file names' order (a-later.json sorts first)
    assert wanted == {"legal-bot": f"{ROOT}/guest/abcd1234", "tie": f"{ROOT}/guest/a"}
    assert refused == {
        "a-later.json": "the name legal-bot is already registered by legal-bot.json (experiment guest), "
        "which was registered first",
        "same-time-b.json": "the name tie is already registered by same-time-a.json (experiment guest), "
        "which was registered first",
    }


def test_a_name_the_host_serves_itself_is_refused(tmp_path: Path) -> None:
    registry = registry_with(tmp_path, {
        "host.json": entry(name="host"), "host-base.json": entry(name="host-base"), "fine.json": entry(name="fine"),
    })  # fmt: skip
    wanted, refused = accepted(registry, reserved={"host", "host-base"})
    assert list(wanted) == ["fine"]
    assert refused == {
        "host.json": "host is a name the host's vLLM serves itself",
        "host-base.json": "host-base is a name the host's vLLM serves itself",
    }


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ({**entry(), "command": "rm -rf /"}, "unexpected keys: command"),
        ({k: v for k, v in entry().items() if k != "experiment"}, "missing keys: experiment"),
        (entry(name="legal bot; rm -rf /"), 'name "legal bot; rm -rf /" is not of the form'),
        (entry(name="-flag"), "name"),
        (entry(name="a" * 201), "name"),
        (entry(name=["legal-bot"]), "name"),
        (entry(experiment="../guest"), "experiment"),
        (entry(runId="$(id)"), "runId"),
        (entry(path=7), "path is not a string"),
        (entry(registered=True), "registered true is not a time"),
        (entry(registered=float("nan")), "registered NaN is not a time"),
        (entry(registered=-1), "is not a time"),
        ({**entry(), "runId": "x" * 5000}, "bytes: an entry has at most 4096"),
        ("[1, 2]", "not a JSON object"),
        ('{"name": "half', "not JSON"),
        (b"\xff\xfe".decode("latin-1"), "not JSON"),
    ],
)
def test_an_entry_of_another_shape_is_refused_with_why(tmp_path: Path, content: Any, why: str) -> None:
    wanted, refused = accepted(registry_with(tmp_path, {"bad.json": content}))
    assert wanted == {} and why in refused["bad.json"], refused


def test_a_registry_file_that_is_a_link_or_a_fifo_is_never_opened(tmp_path: Path) -> None:
    """A FIFO would block the sidecar's read for ever; a link could point at anything on the pod."""
    registry = registry_with(tmp_path, {"good.json": entry()})
    os.mkfifo(registry / "fifo.json")
    (tmp_path / "elsewhere.json").write_text(json.dumps(entry(name="linked")))
    (registry / "link.json").symlink_to(tmp_path / "elsewhere.json")
    wanted, refused = accepted(registry)
    assert list(wanted) == ["legal-bot"]
    assert set(refused) == {"fifo.json", "link.json"}
    assert all("not a regular file" in why for why in refused.values()), refused


class FakeVllm(http.server.ThreadingHTTPServer):
    """vLLM's runtime LoRA API as the sidecar sees it (the real one answers in the node tier): /v1/models lists
    the base model `host-base` and the host's own adapter `host`; every load and unload succeeds. Records each
    request with the Authorization header it carried."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None, Any]] = []
        self.adapters = {"host": "/storage/output/host/r0"}
        vllm = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def answer(self, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                vllm.requests.append(("GET", self.path, self.headers.get("Authorization"), None))
                models = [{"id": "host-base", "root": "/storage/models/base", "parent": None}]
                models += [{"id": n, "root": p, "parent": "host-base"} for n, p in vllm.adapters.items()]
                self.answer({"data": models})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                vllm.requests.append(("POST", self.path, self.headers.get("Authorization"), body))
                if self.path == "/v1/load_lora_adapter":
                    vllm.adapters[body["lora_name"]] = body["lora_path"]
                else:
                    vllm.adapters.pop(body["lora_name"], None)
                self.answer({})

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def test_a_round_loads_only_accepted_adapters_sends_the_key_and_reports_refusals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "s3cret")
    registry = registry_with(tmp_path, {
        "legal-bot.json": entry(),
        "etc.json": entry(name="legal-bot-2", path="/etc"),
        "own.json": entry(name="host-base"),
    })  # fmt: skip
    vllm = FakeVllm()
    try:
        sync = load("adapter_sync").Sync(registry, vllm.url, {"host"}, "vllm-a", ROOT)
        sync.round()
        sync.round()  # nothing new: no second load, no second log line
    finally:
        vllm.shutdown()
        vllm.server_close()
    posts = [(path, body) for method, path, _, body in vllm.requests if method == "POST"]
    assert posts == [("/v1/load_lora_adapter",
                      {"lora_name": "legal-bot", "lora_path": f"{ROOT}/guest/abcd1234", "load_inplace": False})]  # fmt: skip
    assert {auth for _, _, auth, _ in vllm.requests} == {"Bearer s3cret"}, "every call carries the key"
    status = json.loads((registry / ".status" / "vllm-a.json").read_text())
    assert status["adapters"]["legal-bot"]["loaded"] is True and "host" not in status["adapters"]
    assert {r["file"]: (r["name"], r["registered"]) for r in status["refused"]} == {
        "etc.json": ("legal-bot-2", 1.0),
        "own.json": ("host-base", 1.0),
    }, "each refusal names the registration, which its adapter Job matches"
    out = capsys.readouterr().out
    assert out.count("refused etc.json: /etc leads to /etc") == 1 and out.count("refused own.json") == 1


# -------------------------------------------------------- the registry is storage anyone may write: the Job
@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"ADAPTER_PATH": "/etc"}, "leads to /etc, not into the training output folder"),
        ({"ADAPTER_PATH": "{root}/guest/../../../etc"}, "not into the training output folder"),
        ({"ADAPTER_PATH": "{root}/victim/abcd1234"}, "leads into experiment victim's output folder"),
        ({"ADAPTER_NAME": "legal bot"}, "ADAPTER_NAME 'legal bot' is not of the form"),
        ({"EXPERIMENT": "../guest"}, "EXPERIMENT '../guest' is not of the form"),
        ({"RUN_ID": "$(id)"}, "RUN_ID"),
    ],
)
def test_register_refuses_at_once_what_the_sidecar_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, str], why: str
) -> None:
    share = load("adapter_share")
    env = share_env(tmp_path, adapter(tmp_path))
    env.update({k: v.format(root=env["OUTPUT_ROOT"]) for k, v in change.items()})
    assert share.register(env) == share.CANNOT_SHARE, "the same values would be refused again: no retry"
    assert why in capsys.readouterr().out
    assert not (tmp_path / "registry").exists()


def test_a_name_taken_by_an_earlier_registration_is_refused_to_the_job_that_registers_it_later(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another file names the same adapter (the registry can be written by hand): the sidecar keeps the earlier
    one, and the Job reads its refusal in the sidecar's report, says why and takes its entry back."""
    share = load("adapter_share")
    env = share_env(tmp_path, adapter(tmp_path))
    (tmp_path / "output" / "other" / "r1").mkdir(parents=True)
    registry_with(tmp_path, {
        "squatter.json": entry(name="guest", experiment="other", path=f"{tmp_path}/output/other/r1"),
    })  # fmt: skip
    sidecar = Sidecar(tmp_path / "registry", tmp_path / "output", ["vllm-a"])
    sidecar.start()
    try:
        assert share.register(env) == share.CANNOT_SHARE
    finally:
        sidecar.stop.set()
    out = capsys.readouterr().out
    assert "the host refused the registration: the name guest is already registered by squatter.json" in out
    assert (
        not (tmp_path / "registry" / "guest.json").exists()
        and (tmp_path / "registry" / "squatter.json").exists()
    )


def test_a_report_of_another_shape_is_not_taken_for_a_replicas(tmp_path: Path) -> None:
    share = load("adapter_share")
    status = tmp_path / "registry" / ".status"
    status.mkdir(parents=True)
    now = time.time()
    (status / "list.json").write_text("[]")
    (status / "no-adapters.json").write_text(json.dumps({"pod": "x", "time": now}))
    (status / "odd-adapter.json").write_text(json.dumps({"pod": "x", "time": now, "adapters": {"a": 1}}))
    (status / "huge.json").write_text(
        json.dumps({"pod": "x", "time": now, "adapters": {}, "pad": "x" * (1 << 20)})
    )
    (status / "good.json").write_text(json.dumps({"pod": "vllm-a", "time": now, "adapters": {}}))
    assert [s["pod"] for s in share.statuses(tmp_path / "registry", 30)] == ["vllm-a"]


@pytest.mark.parametrize(
    ("config", "why"),
    [
        ({"r": "8; rm"}, "gives the rank r as"),
        ({"target_modules": {"q_proj": 1}}, None),
    ],
)
def test_an_odd_adapter_config_is_named_not_a_crash(
    tmp_path: Path, config: dict[str, Any], why: str | None
) -> None:
    found = load("adapter_share").problems(adapter(tmp_path, **config), 16)
    assert (why in found[0]) if why else found == [], found


def test_an_adapter_config_that_is_not_json_or_too_large_is_named(tmp_path: Path) -> None:
    folder = adapter(tmp_path)
    (folder / "adapter_config.json").write_text("x" * ((1 << 20) + 1))
    [problem] = load("adapter_share").problems(folder, 16)
    assert "an unreadable adapter_config.json" in problem


def test_the_sidecar_stops_at_once_on_sigterm(tmp_path: Path) -> None:
    """The container's first process: without its own handler it would ignore SIGTERM (PID 1), and each
    deleted replica would wait out the pod's whole grace period. Here a handler is what tells a clean exit 0
    from a death by the signal (-15)."""
    import signal
    import subprocess
    import sys

    from generator.project import CHART_DIR

    env = {
        **os.environ,
        "REGISTRY": str(tmp_path / "registry"),
        "VLLM_URL": "http://127.0.0.1:1",  # nothing listens: the sidecar waits for vLLM
        "SYNC_INTERVAL_SECONDS": "60",
        "HOSTNAME": "vllm-a",
    }
    sidecar = subprocess.Popen(
        [sys.executable, str(CHART_DIR / "files" / "adapter_sync.py")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert sidecar.stdout is not None
        assert sidecar.stdout.readline().startswith("adapter-sync: ")  # started, then asleep between rounds
        sidecar.send_signal(signal.SIGTERM)
        assert sidecar.wait(timeout=10) == 0
        assert "adapter-sync: stopping (SIGTERM)" in sidecar.stdout.read()
    finally:
        sidecar.kill()
