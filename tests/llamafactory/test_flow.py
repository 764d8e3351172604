"""The rendered experiment, run for real by the chart's scripts: train, preempted after the first checkpoint,
resumed to the planned step count; merged, verified and published with the prompts LLaMA-Factory trained on;
loaded and generating; scored by the gate; asked through an OpenAI-compatible server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from generator.core import trainlog
from generator.core.contract import PROMPT_PARITY_RECORD
from tests.support import podfiles, smoke, tinymodel


@pytest.fixture(scope="module")
def trained(workspace: smoke.Workspace, run_log: Path) -> dict[str, Any]:
    tokenized = smoke.tokenize(workspace, run_log)
    first = smoke.train(workspace, run_log, preempt=True)
    steps_first = [e["current_steps"] for e in smoke.trainer_log(workspace)]
    # a second preemption in the middle of writing a checkpoint: the folder exists, trainer_state.json does not
    half_written = workspace.output_dir / f"checkpoint-{smoke.SAVE_STEPS + 2}"
    half_written.mkdir()
    (half_written / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    second = smoke.train(workspace, run_log)
    steps_all = [e["current_steps"] for e in smoke.trainer_log(workspace)]
    return {
        "tokenized": tokenized,
        "first": first,
        "second": second,
        "before": steps_first,
        "after": steps_all[len(steps_first) :],
        "half": half_written,
    }


def test_the_data_is_tokenized_once_and_both_training_starts_load_it(
    trained: dict[str, Any], workspace: smoke.Workspace, run_log: Path
) -> None:
    assert trained["tokenized"] == 0, run_log.read_text()[-3000:]
    [tokenized] = [p for p in workspace.tokenized_root.iterdir() if p.is_dir()]
    assert (tokenized / "dataset_dict.json").is_file(), "LLaMA-Factory's own saved set"
    log = run_log.read_text(errors="replace")
    assert log.count(f"Tokenized dataset is saved at {workspace.tokenized_root}/.") == 1, "saved once, staged"
    assert log.count(f"Loaded tokenized dataset from {tokenized}.") == 2, "the first and the resumed start"
    saved = log.index("tokenize: saved at")
    assert "Running tokenizer on dataset" in log[:saved]
    assert "Running tokenizer on dataset" not in log[saved:], "no training start tokenized again"
    assert (
        log.count(f"starting: llamafactory-cli train {workspace.train_config} tokenized_path={tokenized}")
        == 2
    )


def test_the_first_run_is_killed_right_after_its_first_checkpoint(
    trained: dict[str, Any], workspace: smoke.Workspace
) -> None:
    assert trained["first"] == 137, "train.sh passes on the trainer's SIGKILL as 128 + 9"
    assert trained["before"] == list(range(1, smoke.SAVE_STEPS + 1))
    assert (workspace.output_dir / f"checkpoint-{smoke.SAVE_STEPS}" / "trainer_state.json").is_file()


def test_the_restarted_run_resumes_and_finishes_at_the_planned_step(
    trained: dict[str, Any], workspace: smoke.Workspace, run_log: Path
) -> None:
    assert trained["second"] == 0, run_log.read_text()[-3000:]
    log = run_log.read_text()
    assert f"removing incomplete {trained['half']}" in log, (
        "the half-written checkpoint must be cleared, or resume fails"
    )
    assert f"Resuming training from {workspace.output_dir}/checkpoint-{smoke.SAVE_STEPS}" in log
    assert trained["after"][0] == smoke.SAVE_STEPS + 1, "steps continue rather than restart"
    assert trained["after"][-1] == smoke.MAX_STEPS
    assert (workspace.output_dir / "adapter_model.safetensors").is_file()


def test_train_sh_takes_its_temporary_files_with_it(
    trained: dict[str, Any], workspace: smoke.Workspace
) -> None:
    """Outside a pod /tmp is shared and outlives the script: its trainer's output copy goes with it, whether
    the trainer was killed (the first run) or finished."""
    assert (trained["first"], trained["second"]) == (137, 0)
    assert smoke.leftovers(workspace) == []


def test_progress_parses_from_the_real_trainer_log(
    trained: dict[str, Any], workspace: smoke.Workspace
) -> None:
    text = (workspace.output_dir / "trainer_log.jsonl").read_text()
    progress = trainlog.parse(text)
    assert progress is not None and progress.finished
    assert progress.total_steps == smoke.MAX_STEPS and progress.percentage == 100
    assert progress.loss is not None or progress.losses
    assert progress.elapsed and progress.remaining
    broken = (
        text
        + json.dumps({**json.loads(text.splitlines()[-2]), "loss": float("nan"), "current_steps": 13})
        + "\n"
    )
    assert any("Loss = NaN" in p for p in trainlog.parse(broken).problems)


@pytest.fixture(scope="module")
def merged(trained: dict[str, Any], workspace: smoke.Workspace, run_log: Path) -> Path:
    assert smoke.merge(workspace, run_log) == 0, run_log.read_text()[-3000:]
    return workspace.merged_dir


def test_merge_is_published_only_after_verification(
    merged: Path, run_log: Path, workspace: smoke.Workspace
) -> None:
    assert merged.is_dir() and not Path(str(merged) + ".partial").exists()
    result = subprocess.run(
        [sys.executable, str(smoke.SCRIPTS / "verify_merge.py"), str(merged), "--base", str(workspace.base_model), "--dtype", "bfloat16", "--adapter", str(workspace.output_dir)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "merge: published" in run_log.read_text()


def test_merged_weights_have_the_requested_dtype_and_the_base_size(
    merged: Path, workspace: smoke.Workspace
) -> None:
    sys.path.insert(0, str(smoke.SCRIPTS))
    try:
        import verify_merge
    finally:
        sys.path.pop(0)
    files, problems = verify_merge.weight_files(str(merged))
    assert not problems
    parameters, by_dtype = verify_merge.count_parameters(files)
    base_parameters, _ = verify_merge.count_parameters(
        verify_merge.weight_files(str(workspace.base_model))[0]
    )
    assert set(by_dtype) == {"BF16"}, "not fp32-doubled"
    assert parameters == base_parameters
    assert sum(by_dtype.values()) == 2 * base_parameters


def test_rerunning_the_merge_over_a_complete_result_does_nothing(
    merged: Path, workspace: smoke.Workspace, run_log: Path
) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in merged.iterdir()}
    assert smoke.merge(workspace, run_log) == 0
    assert "is complete for adapter" in run_log.read_text().splitlines()[-1]
    assert {p.name: p.stat().st_mtime_ns for p in merged.iterdir()} == before


def test_verification_refuses_an_incomplete_or_doubled_model(
    merged: Path, workspace: smoke.Workspace, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(merged, broken)
    (broken / "generation_config.json").unlink()
    verify = [
        sys.executable,
        str(smoke.SCRIPTS / "verify_merge.py"),
        str(broken),
        "--base",
        str(workspace.base_model),
    ]
    result = subprocess.run(verify, capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "generation_config.json is missing" in result.stderr
    result = subprocess.run(
        [*verify[:3], "--base", str(workspace.base_model), "--dtype", "float32"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1 and "expected F32 only" in result.stderr


def test_the_merged_model_loads_generates_and_speaks_the_training_template(
    merged: Path, workspace: smoke.Workspace, tokenizer: Any
) -> None:
    text, model, merged_tokenizer = smoke.generate(merged)
    assert isinstance(text, str) and model.dtype.__str__() == "torch.bfloat16"
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    get_template_and_fix_tokenizer(tokenizer, DataArguments(template="llama3"))
    assert merged_tokenizer.chat_template == tokenizer.chat_template
    assert "<|start_header_id|>" in merged_tokenizer.chat_template


def test_the_training_and_the_merge_record_the_prompts_vllm_must_build(
    merged: Path, workspace: smoke.Workspace
) -> None:
    from transformers import AutoTokenizer

    parity = podfiles.load("prompt_parity")
    trained = parity.load_record(str(workspace.output_dir / PROMPT_PARITY_RECORD))
    record = parity.load_record(str(merged / PROMPT_PARITY_RECORD))
    names = [c["name"] for c in record["conversations"]]
    assert names == [c["name"] for c in trained["conversations"]]
    assert names[:2] == ["system and user", "several turns"] and names[2].endswith("prompt 1"), names
    assert record["template"] == "llama3" and record["stopTokens"][0] == "<|eot_id|>"
    # vLLM's way with the merged folder: its tokenizer's chat template, the text encoded without special tokens
    tokenizer = AutoTokenizer.from_pretrained(merged)
    for trained_one, conversation in zip(trained["conversations"], record["conversations"], strict=True):
        text = tokenizer.apply_chat_template(
            conversation["messages"], tokenize=False, add_generation_prompt=True
        )
        assert tokenizer.encode(text, add_special_tokens=False) == conversation["promptIds"], conversation[
            "name"
        ]
        assert trained_one["promptIds"] == conversation["promptIds"]
    tokenizer.chat_template = tinymodel.CHATML
    conversation = record["conversations"][0]
    text = tokenizer.apply_chat_template(conversation["messages"], tokenize=False, add_generation_prompt=True)
    served = tokenizer.encode(text, add_special_tokens=False)
    index = parity.first_difference(conversation["promptIds"], served)
    assert index == 0
    line = parity.describe_difference(conversation, served, index, tokenizer.decode, "llama3")
    assert "at token 1 of" in line and "trained '<|begin_of_text|>' (id" in line
    assert f"served {tokenizer.decode([served[0]])!r} (id {served[0]})" in line


@pytest.fixture(scope="module")
def gate(merged: Path, workspace: smoke.Workspace, run_log: Path) -> dict[str, Any]:
    code = smoke.evaluate(workspace, run_log)
    scores = json.loads(workspace.local(workspace.eval_values["scoresFile"]).read_text())
    return {"code": code, "scores": scores}


def test_the_gate_scores_both_models_on_the_same_questions_and_lets_the_better_one_through(
    gate: dict[str, Any], run_log: Path
) -> None:
    assert gate["code"] == 0, run_log.read_text()[-3000:]
    scores = gate["scores"]
    assert scores["passed"] and not scores["why"] and scores["metric"] == "rouge-l"
    for model in ("base", "tuned"):
        assert set(scores[model]) == {"bleu-4", "rouge-1", "rouge-2", "rouge-l", "seconds"}, scores
    # the tiny model learned its training answers: LLaMA-Factory's own scores say so
    assert scores["tuned"]["rouge-l"] > scores["base"]["rouge-l"], scores
    assert "eval: gate passed (rouge-l" in run_log.read_text()


def test_the_gate_logs_both_scores_on_the_trainings_mlflow_run(
    merged: Path, workspace: smoke.Workspace, run_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    # an MLflow store like the training's (a local file store: no server here): its run carries the tags the
    # chart's MLFLOW_TAGS gives it
    env = {"MLFLOW_TRACKING_URI": f"file://{tmp_path / 'mlruns'}", "MLFLOW_ALLOW_FILE_STORE": "true"}
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.create_experiment("smoke")
    tags = {"experiment": "smoke", "run_id": workspace.facts.run_id, "release": "smoke-train"}
    training = client.create_run(experiment, tags=tags).info.run_id
    env.update(MLFLOW_EXPERIMENT_NAME="smoke", MLFLOW_TAGS=json.dumps({**tags, "release": "smoke-eval"}))
    assert smoke.evaluate(workspace, run_log, env=env) == 0, run_log.read_text()[-3000:]
    scores = json.loads(workspace.local(workspace.eval_values["scoresFile"]).read_text())
    logged = client.get_run(training).data
    assert logged.metrics["eval_tuned_rouge-l"] == scores["tuned"]["rouge-l"]
    assert logged.metrics["eval_base_bleu-4"] == scores["base"]["bleu-4"]
    assert logged.tags["eval_gate"] == "passed" and logged.tags["eval_metric"] == "rouge-l"
    assert f"eval: scores logged to MLflow run {training} (experiment smoke)" in run_log.read_text()


def test_the_gate_stops_a_model_worse_than_its_base(
    gate: dict[str, Any], workspace: smoke.Workspace, run_log: Path, tmp_path: Path
) -> None:
    import yaml

    # made worse on purpose: the trained model as the base, the untrained one as the "tuned" model
    swapped = {}
    for role, source in (("base", workspace.eval_tuned_config), ("tuned", workspace.eval_base_config)):
        config = yaml.safe_load(source.read_text())
        config["output_dir"] = str(tmp_path / role)
        swapped[role] = tmp_path / f"{role}.yaml"
        swapped[role].write_text(yaml.safe_dump(config))
    code = smoke.evaluate(workspace, run_log, swapped["base"], swapped["tuned"])
    assert code == 5, run_log.read_text()[-3000:]
    scores = json.loads(workspace.local(workspace.eval_values["scoresFile"]).read_text())
    assert not scores["passed"] and scores["why"][0].startswith("rouge-l ")
    assert "below the base model's" in scores["why"][0]
    assert "eval: gate failed, the tuned model is not served: rouge-l" in run_log.read_text()


@pytest.fixture(scope="module")
def openai_server(merged: Path, workspace: smoke.Workspace, run_log: Path) -> Any:
    """`llamafactory-cli api` serving the merged model: a real OpenAI-compatible server, standing in for vLLM
    (which needs a GPU) to test the after-training check and the chart's helm test script against."""
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = workspace.root / "api.yaml"
    config.write_text(
        f"model_name_or_path: {merged}\ntemplate: llama3\ninfer_backend: huggingface\ninfer_dtype: bfloat16\n"
    )
    env = {
        **smoke.environment(),
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "API_MODEL_NAME": workspace.facts.served_name,
    }
    with run_log.open("ab") as out:
        process = subprocess.Popen(
            ["llamafactory-cli", "api", str(config)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"the API server did not start; see {run_log}") from None
            time.sleep(1)
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_after_training_checklist_passes_against_a_real_openai_server(
    openai_server: str, workspace: smoke.Workspace
) -> None:
    from click.testing import CliRunner

    from generator.cli import cli

    spec = workspace.root / "values" / "experiment-serving.yaml"
    spec.write_text(smoke.SPEC.replace("serve: {enabled: false}", "serve: {enabled: true}"))
    result = CliRunner().invoke(
        cli,
        [
            "check",
            str(spec),
            "--after",
            "--no-cluster",
            "--storage-root",
            str(workspace.root),
            "--vllm-url",
            openai_server,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "✓ merged model complete" in result.output
    assert f"✓ vLLM answers /v1/models with the served name: {openai_server} serves 'smoke'" in result.output
    # LLaMA-Factory's API server cannot tokenize chats: the prompt check needs vLLM, and says so
    assert (
        f"- vLLM builds the prompts LLaMA-Factory trained on, and stops on its stop tokens: not checked: {openai_server} has no /tokenize: is it vLLM?"
        in result.output
    )


def test_the_charts_helm_test_script_accepts_a_real_chat_completion(openai_server: str) -> None:
    env = {
        "VLLM_URL": openai_server,
        "MODEL": "smoke",
        "PROMPT": "Co to jest LLaMA?",
        "MAX_TOKENS": "4",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, str(smoke.SCRIPTS / "chat_test.py")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("chat test: smoke answered:")
    wrong = subprocess.run(
        [sys.executable, str(smoke.SCRIPTS / "chat_test.py")],
        env={**env, "VLLM_URL": openai_server + "/nowhere"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert wrong.returncode == 1
