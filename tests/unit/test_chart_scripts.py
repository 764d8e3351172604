"""The chart's pod scripts (charts/llama-factory/files/) on real files: the model download's lock (one pod per
node does not download the same model at once), train.sh's exit codes and its hand-over of the tokenized set,
tokenize_once.py's key, and that the pods install extra packages in one place (boot.py). The gate, the
preflight, the merge check, podlib and boot.py have tests of their own (test_pod_*.py); the llamafactory tier
runs train.sh, merge.sh and the gate on a real model."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.podfiles import load, ready_training, scripts_folder


@pytest.fixture()
def download(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = load("download")
    monkeypatch.setattr(module, "POLL_SECONDS", 0.05)
    return module


def test_a_complete_model_is_left_alone(
    download: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    monkeypatch.setattr(download, "download", lambda *a: pytest.fail("must not download"))
    assert download.main("org/model", "main", str(model)) == 0
    assert not (tmp_path / "model.download.lock").exists()


def test_a_model_downloaded_once_serves_the_same_revision_and_refuses_another(
    download: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model"

    def fetch(repo_id: str, revision: str, local_dir: str, **_: object) -> None:
        Path(local_dir, "config.json").write_text("{}")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fetch)
    assert download.main("org/model", "v1", str(model)) == 0
    assert (model / ".lfk-download.json").is_file()
    monkeypatch.setattr(download, "download", lambda *a: pytest.fail("must not download again"))
    assert download.main("org/model", "v1", str(model)) == 0, (
        "another experiment on the same model: nothing to do"
    )
    assert download.main("org/model", "v2", str(model)) == 3, (
        "another revision into the same folder is refused"
    )


def test_a_second_pod_waits_for_the_first_ones_download(
    download: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model"
    (tmp_path / "model.download.lock").mkdir()  # another pod holds the lock

    def finish() -> None:
        time.sleep(0.3)
        model.mkdir()
        (model / "config.json").write_text("{}")

    monkeypatch.setattr(download, "download", lambda *a: pytest.fail("only the lock holder downloads"))
    threading.Thread(target=finish).start()
    assert download.main("org/model", "main", str(model)) == 0


def test_the_lock_holder_downloads_and_releases_the_lock(
    download: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model"
    calls = []
    monkeypatch.setattr(download, "download", lambda *a: calls.append(a) or 0)
    assert download.main("org/model", "main", str(model)) == 0
    assert calls == [("org/model", "main", str(model))]
    assert not (tmp_path / "model.download.lock").exists()


def test_a_stale_lock_is_taken_over(
    download: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / "model.download.lock"
    lock.mkdir()
    old = time.time() - download.STALE_LOCK_SECONDS - 5
    os.utime(lock, (old, old))
    calls = []
    monkeypatch.setattr(download, "download", lambda *a: calls.append(a) or 0)
    assert download.main("org/model", "main", str(tmp_path / "model")) == 0
    assert len(calls) == 1


def fake_trainer(tmp_path: Path, output: str, code: int, real_preflight: bool = False) -> dict[str, str]:
    """Stand-ins for the trainer on PATH and in the pods' /scripts: train.sh's own logic runs for real. The
    trainer is `llamafactory-cli` (the launch of several processes, FORCE_TORCHRUN) and train_in_process.py
    (the one-process training); both print output and exit with code. The preflight is the real one (it then
    needs a ready config; train_in_process.py is then the real one too) or, where only train.sh's handling of
    the trainer's exit is tested, one that passes at once."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "llamafactory-cli").write_text(f"#!/bin/bash\nprintf '%s\\n' {output!r}\nexit {code}\n")
    (bin_dir / "llamafactory-cli").chmod(0o755)
    scripts = scripts_folder(
        tmp_path / "scripts", "train.sh", "preflight.py", "readiness.py", "tokenize_once.py",
        "train_in_process.py", "prompt_parity.py",
    )  # fmt: skip
    if not real_preflight:
        (scripts / "preflight.py").write_text("import sys\nsys.exit(0)\n")
        (scripts / "train_in_process.py").write_text(f"import sys\nprint({output!r})\nsys.exit({code})\n")
    return {
        **os.environ,
        # python3 is this environment's, which has LLaMA-Factory (the image's version) for the real preflight
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "TRAIN_CONFIG": str(tmp_path / "train.yaml"),
        "CUDA_VISIBLE_DEVICES": "",
        "DISABLE_VERSION_CHECK": "1",
    }


# the launch train.sh makes: one process (train_in_process.py), or llamafactory-cli's of several
LAUNCHES = {"one process": {}, "llamafactory-cli": {"FORCE_TORCHRUN": "1"}}


@pytest.mark.parametrize("launch", LAUNCHES)
@pytest.mark.parametrize(
    ("output", "code", "expected"),
    [
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", 1, 4),
        ("RuntimeError: something else broke", 1, 1),
        ("{'train_loss': 1.2}", 0, 0),
    ],
)
def test_train_sh_turns_cuda_out_of_memory_into_exit_4(
    tmp_path: Path, output: str, code: int, expected: int, launch: str
) -> None:
    import subprocess

    env = {**fake_trainer(tmp_path, output, code), **LAUNCHES[launch]}
    result = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "train.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == expected, result.stdout + result.stderr
    assert output in result.stdout, "the trainer's output still reaches the pod's log"
    if expected == 4:
        assert "the GPU ran out of memory" in result.stderr


@pytest.mark.parametrize(
    ("switches", "launch"),
    [
        ({}, "one process"),
        ({"FORCE_TORCHRUN": "0"}, "one process"),
        ({"FORCE_TORCHRUN": "1"}, "llamafactory-cli"),
        ({"FORCE_TORCHRUN": "True"}, "llamafactory-cli"),
        ({"USE_RAY": "y"}, "llamafactory-cli"),
        ({"USE_MCA": "1"}, "llamafactory-cli"),
    ],
)
def test_train_sh_trains_in_one_process_unless_llamafactorys_launcher_would_start_torchrun_or_ray(
    tmp_path: Path, switches: dict[str, str], launch: str
) -> None:
    """The switches as LLaMA-Factory's launcher reads them (true, y or 1, in any case), so what runs under
    torchrun or on Ray still goes through it, also when a person sets one in train.extraEnv."""
    import subprocess

    env = fake_trainer(tmp_path, "", 0)
    (tmp_path / "scripts" / "train_in_process.py").write_text("print('trained in one process')\n")
    (tmp_path / "bin" / "llamafactory-cli").write_text("#!/bin/bash\necho 'trained by llamafactory-cli'\n")
    for name in ("FORCE_TORCHRUN", "USE_RAY", "USE_MCA"):
        env.pop(name, None)
    result = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "train.sh")], env={**env, **switches},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    trained = "trained in one process" if launch == "one process" else "trained by llamafactory-cli"
    assert trained in result.stdout and result.stdout.count("trained ") == 1, result.stdout


def test_train_sh_hands_the_operators_group_to_the_launcher_and_keeps_its_rank_from_every_step_before(
    tmp_path: Path,
) -> None:
    """The training operator sets PET_* and also WORLD_SIZE and RANK: the launcher gets the group as the names
    LLaMA-Factory reads, and the preflight (whose argument parsing would join a process group at MASTER_ADDR
    with RANK set: a replaced Worker then waits there for ever) and the launcher see no rank."""
    import subprocess

    env = fake_trainer(tmp_path, "", 0)
    ranks = 'print("preflight sees", os.environ.get("WORLD_SIZE"), os.environ.get("RANK"))'
    (tmp_path / "scripts" / "preflight.py").write_text(f"import os\n{ranks}\n")
    (tmp_path / "bin" / "llamafactory-cli").write_text(
        '#!/bin/bash\necho "launch: ${NNODES} ${NODE_RANK} ${MASTER_ADDR}:${MASTER_PORT} ${FORCE_TORCHRUN}'
        ' ${WORLD_SIZE-none} ${RANK-none}"\n'
    )
    operator = {"PET_NNODES": "2", "PET_NODE_RANK": "1", "PET_NPROC_PER_NODE": "1", "MASTER_ADDR": "job-master-0",
                "MASTER_PORT": "23456", "WORLD_SIZE": "2", "RANK": "1"}  # fmt: skip
    result = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "train.sh")], env={**env, **operator},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "distributed: node 1 of 2, 1 processes, rendezvous job-master-0:23456" in result.stdout
    assert "preflight sees None None" in result.stdout
    assert "launch: 2 1 job-master-0:23456 1 none none" in result.stdout


# ------------------------------------------------------------------------------------------ tokenize once
@pytest.fixture()
def tokenize_once() -> ModuleType:
    return load("tokenize_once")


def data_and_model(tmp_path: Path) -> dict[str, object]:
    """A training's dataset and model folders (podfiles.ready_training) with a tokenizer of its own (the key
    reads the tokenizer's files), and the config with the keys that do and do not shape the tokens."""
    config = ready_training(tmp_path)
    (tmp_path / "data" / "qa.json").write_text('[{"instruction": "Co to jest LLaMA?", "output": "Model."}]')
    (tmp_path / "model" / "tokenizer.json").write_text('{"model": {"vocab": {"a": 0}}}')
    (tmp_path / "model" / "tokenizer_config.json").write_text('{"chat_template": "x"}')
    return {**config, "cutoff_len": 128, "learning_rate": 1e-4, "output_dir": "/storage/outputs/a",
            "preprocessing_num_workers": 4}  # fmt: skip


def test_the_key_changes_with_everything_that_changes_the_tokens(
    tokenize_once: ModuleType, tmp_path: Path
) -> None:
    config = data_and_model(tmp_path)
    base = tokenize_once.key(config)
    assert base == tokenize_once.key(dict(config)), "the same inputs give the same key"
    changed = {
        "template": {**config, "template": "qwen"},
        "cutoff_len": {**config, "cutoff_len": 256},
        "packing": {**config, "packing": True},
        "another dataset": {**config, "dataset": "qa,other"},
    }
    for what, other in changed.items():
        assert tokenize_once.key(other) != base, what
    (tmp_path / "data" / "qa.json").write_text('[{"instruction": "Co to jest LLaMA?", "output": "Inny."}]')
    after_data = tokenize_once.key(config)
    assert after_data != base, "an edited dataset file"
    (tmp_path / "data" / "dataset_info.json").write_text(
        '{"qa": {"file_name": "qa.json", "formatting": "alpaca"}}'
    )
    after_entry = tokenize_once.key(config)
    assert after_entry != after_data, "an edited dataset_info.json entry"
    (tmp_path / "model" / "tokenizer_config.json").write_text('{"chat_template": "y"}')
    assert tokenize_once.key(config) != after_entry, "an edited tokenizer file"


def test_the_key_ignores_what_does_not_change_the_tokens(tokenize_once: ModuleType, tmp_path: Path) -> None:
    config = data_and_model(tmp_path)
    base = tokenize_once.key(config)
    same = {
        **config,
        "learning_rate": 5e-4,
        "output_dir": "/storage/outputs/b",
        "preprocessing_num_workers": 16,
    }
    assert tokenize_once.key(same) == base
    (tmp_path / "model" / "model.safetensors").write_bytes(b"\1" * 16)
    assert tokenize_once.key(config) == base, "the weights do not change the tokens"


def test_an_existing_set_is_not_tokenized_again(
    tokenize_once: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import yaml

    config_file = tmp_path / "train.yaml"
    config_file.write_text(yaml.safe_dump(data_and_model(tmp_path)))
    root = tmp_path / "tokenized"
    assert tokenize_once.main(["path", str(config_file), str(root)]) == 0
    target = Path(capsys.readouterr().out.strip())
    assert target.parent == root and len(target.name) == 20

    calls: list[Path] = []

    def fake_tokenize(config: dict[str, object], into: Path) -> None:
        calls.append(into)
        into.mkdir(parents=True)
        (into / "dataset_dict.json").write_text('{"splits": ["train"]}')

    monkeypatch.setattr(tokenize_once, "tokenize", fake_tokenize)
    assert tokenize_once.main(["run", str(config_file), str(root)]) == 0
    assert len(calls) == 1 and calls[0].parent == root and calls[0] != target, "written to a staging folder"
    assert (target / "dataset_dict.json").is_file() and not calls[0].exists(), "then renamed into place"
    assert "qa.json" in (root / f"{target.name}.json").read_text(), "what it was made from, beside it"
    assert tokenize_once.main(["run", str(config_file), str(root)]) == 0
    assert len(calls) == 1 and "already tokenized" in capsys.readouterr().out


def test_a_run_trains_on_the_set_its_install_noted_without_reading_the_data_again(
    tokenize_once: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import yaml

    config = {**data_and_model(tmp_path), "output_dir": str(tmp_path / "output" / "run")}
    config_file = tmp_path / "train.yaml"
    config_file.write_text(yaml.safe_dump(config))
    root = tmp_path / "tokenized"
    keyed = root / tokenize_once.key(config)
    assert tokenize_once.resolve(str(config_file), str(root)) == keyed, "no note yet: the key from the inputs"

    def fake_tokenize(config: dict[str, object], into: Path) -> None:
        into.mkdir(parents=True)

    monkeypatch.setattr(tokenize_once, "tokenize", fake_tokenize)
    assert tokenize_once.main(["run", str(config_file), str(root)]) == 0
    assert (tmp_path / "output" / "run" / ".lfk-tokenized").read_text().strip() == str(keyed)
    # a restart after the data changed trains on what the run was tokenized from, reading no dataset
    (tmp_path / "data" / "qa.json").unlink()
    assert tokenize_once.main(["resolve", str(config_file), str(root)]) == 0
    assert capsys.readouterr().out.strip().endswith(str(keyed))
    # a note naming a set that is gone (or outside the root) is not trusted
    keyed.rmdir()
    (tmp_path / "data" / "qa.json").write_text("[]")
    assert tokenize_once.resolve(str(config_file), str(root)) == root / tokenize_once.key(config)


@pytest.mark.parametrize("tokenized", [True, False])
def test_train_sh_hands_the_tokenized_set_to_the_trainer_only_when_it_exists(
    tmp_path: Path, tokenized: bool
) -> None:
    import subprocess

    import yaml

    # the real preflight once (LLaMA-Factory's parse takes seconds): the whole start, as the pod runs it
    # the launch of several processes; train_in_process.py takes the same arguments (its own tests)
    env = {**fake_trainer(tmp_path, "trained", 0, real_preflight=tokenized), **LAUNCHES["llamafactory-cli"]}
    (tmp_path / "bin" / "llamafactory-cli").write_text('#!/bin/bash\necho "args: $*"\n')
    config = data_and_model(tmp_path)
    (tmp_path / "model" / "config.json").write_text('{"model_type": "llama"}')
    # the real preflight passes it: a training config LLaMA-Factory accepts
    (tmp_path / "train.yaml").write_text(
        yaml.safe_dump({**config, "do_train": True, "finetuning_type": "lora"})
    )
    root = tmp_path / "tokenized"
    target = root / load("tokenize_once").key(config)
    if tokenized:
        target.mkdir(parents=True)
    result = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "train.sh")],
        env={**env, "TOKENIZED_ROOT": str(root)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    if tokenized:
        assert "✓ LLaMA-Factory arguments: accepted" in result.stdout
        assert f"args: train {tmp_path / 'train.yaml'} tokenized_path={target}" in result.stdout
    else:
        assert f"args: train {tmp_path / 'train.yaml'}\n" in result.stdout
        assert f"no tokenized set at {target}; the trainer tokenizes the data itself" in result.stderr


def test_the_report_reads_each_dataset_file_hash_from_what_the_set_was_made_from(
    tokenize_once: ModuleType, tmp_path: Path
) -> None:
    import hashlib
    import json

    from generator.ops.status import parse_data

    config = data_and_model(tmp_path)
    manifest = json.dumps(tokenize_once.inputs(config))  # what `run` writes beside the set, <key>.json
    digest = hashlib.sha256((tmp_path / "data" / "qa.json").read_bytes()).hexdigest()
    assert parse_data(manifest) == {"qa": {"qa.json": digest}}
    assert parse_data(None) is None and parse_data("not json") is None


@pytest.mark.parametrize("launch", LAUNCHES)
def test_train_sh_stops_at_a_config_error_the_real_preflight_finds_before_the_trainer_starts(
    tmp_path: Path, launch: str
) -> None:
    import subprocess

    import yaml

    env = {**fake_trainer(tmp_path, "the trainer ran", 0, real_preflight=True), **LAUNCHES[launch]}
    config = {**data_and_model(tmp_path), "do_train": True, "finetuning_type": "lora"}
    (tmp_path / "model" / "model.safetensors").unlink()
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "train.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3, "configError: the Job's podFailurePolicy fails it at once"
    assert "✗ base model:" in result.stdout and "weights (*.safetensors)" in result.stdout
    assert "the trainer ran" not in result.stdout and "starting:" not in result.stdout


def test_extra_packages_are_installed_in_one_place_boot_py() -> None:
    """The chart's pods and `lfk exec` install the values' pip packages through files/boot.py, not a copy."""
    from generator.project import CHART_DIR

    root = CHART_DIR.parents[1]
    sources = [
        *(CHART_DIR / "templates").glob("*"),
        *(CHART_DIR / "files").glob("*"),
        *(root / "generator").rglob("*.py"),
    ]
    copies = [
        str(path.relative_to(root))
        for path in sources
        if path.is_file() and path.name != "boot.py"
        and any(step in path.read_text(encoding="utf-8") for step in ('"pip", "install"', "-m pip install"))
    ]  # fmt: skip
    assert copies == []
