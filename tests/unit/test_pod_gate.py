"""The evaluation gate's verdict (files/eval_gate.py): the tuned model passes when it scores no more than the
allowed drop below the base model and reaches the floor; a missing or non-numeric score, a failed prediction or
a meaningless bound is an error, never a pass. The script runs whole, as the eval Job runs it; only
`llamafactory-cli` stands in, handing over a predict_results.json prepared by the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.podfiles import FILES, load

EXIT = json.loads((FILES / "contract.json").read_text())["exitCodes"]


def results(rouge_l: Any, **more: Any) -> dict[str, Any]:
    return {"predict_bleu-4": 30.0, "predict_rouge-l": rouge_l, "predict_runtime": 12.34, **more}


def run_gate(
    tmp_path: Path,
    base: dict[str, Any] | str,
    tuned: dict[str, Any] | str,
    *flags: str,
    cli_exit: int = 0,
    said: dict[str, list[str]] | None = None,
) -> subprocess.CompletedProcess[str]:
    """eval_gate.py BASE TUNED --metric rouge-l FLAGS --scores FILE; each model's `llamafactory-cli train`
    writes the prepared predict_results.json into the config's output_dir and exits with cli_exit."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    cli = bin_dir / "llamafactory-cli"
    cli.write_text(
        f"#!{sys.executable}\nimport shutil, sys, yaml\n"
        "config = yaml.safe_load(open(sys.argv[2]))\n"
        "shutil.copyfile(config['prepared'], config['output_dir'] + '/predict_results.json')\n"
        "if config.get('predictions'):\n"
        "    shutil.copyfile(config['predictions'], config['output_dir'] + '/generated_predictions.jsonl')\n"
        f"sys.exit({cli_exit})\n"
    )
    cli.chmod(0o755)
    configs = []
    for role, prepared in (("base", base), ("tuned", tuned)):
        output_dir = tmp_path / role
        output_dir.mkdir(exist_ok=True)
        text = prepared if isinstance(prepared, str) else json.dumps(prepared)
        (tmp_path / f"{role}-results.json").write_text(text)
        config = {"output_dir": str(output_dir), "prepared": str(tmp_path / f"{role}-results.json")}
        if said and role in said:  # the answers, as LLaMA-Factory writes them
            lines = [json.dumps({"prompt": "q", "predict": answer, "label": "a"}) for answer in said[role]]
            (tmp_path / f"{role}-predictions.jsonl").write_text("\n".join(lines) + "\n")
            config["predictions"] = str(tmp_path / f"{role}-predictions.jsonl")
        (tmp_path / f"{role}.yaml").write_text(yaml.safe_dump(config))
        configs.append(str(tmp_path / f"{role}.yaml"))
    command = [sys.executable, str(FILES / "eval_gate.py"), *configs, "--metric=rouge-l", *flags]
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "MLFLOW_TRACKING_URI": ""}
    return subprocess.run(
        [*command, f"--scores={tmp_path / 'out' / 'scores.json'}"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def scores(tmp_path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((tmp_path / "out" / "scores.json").read_text())
    return document


def test_a_tuned_model_within_the_allowed_drop_passes_and_both_scores_are_written(tmp_path: Path) -> None:
    result = run_gate(tmp_path, results(40.0), results(39.2), "--max-drop=1")
    assert result.returncode == EXIT["ok"], result.stdout + result.stderr
    assert "eval: gate passed (rouge-l 39.20 vs base 40.00)" in result.stdout
    assert "rouge-l       40.00    39.20    -0.80  <- the gate's" in result.stdout
    document = scores(tmp_path)
    assert document["passed"] is True and document["why"] == []
    assert document["base"] == {"bleu-4": 30.0, "rouge-l": 40.0, "seconds": 12.3}
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["scores.json"], "written whole, no temp file"


def test_a_tuned_model_worse_than_the_allowed_drop_fails_with_the_contracts_gate_code(tmp_path: Path) -> None:
    result = run_gate(tmp_path, results(40.0), results(38.5), "--max-drop=1")
    assert result.returncode == EXIT["gateFailed"] == 5, result.stdout + result.stderr
    why = "rouge-l 38.50 is 1.50 below the base model's 40.00 (at most 1 allowed)"
    assert f"eval: gate failed, the tuned model is not served: {why}" in result.stdout
    assert scores(tmp_path)["passed"] is False and scores(tmp_path)["why"] == [why]


def test_a_tuned_model_under_the_floor_fails_even_when_it_beats_the_base(tmp_path: Path) -> None:
    result = run_gate(tmp_path, results(10.0), results(15.0), "--max-drop=0", "--floor=20")
    assert result.returncode == EXIT["gateFailed"], result.stdout + result.stderr
    assert scores(tmp_path)["why"] == ["rouge-l 15.00 is below the floor 20"]


@pytest.mark.parametrize(
    ("base", "tuned", "max_drop", "floor", "failures"),
    [
        (40.0, 39.0, 1.0, None, 0),  # exactly the allowed drop
        (40.0, 38.99, 1.0, None, 1),
        (40.0, 45.0, 0.0, 45.0, 0),  # exactly the floor
        (40.0, 30.0, 1.0, 35.0, 2),  # both reasons are given
    ],
)
def test_the_verdict_at_its_bounds(
    base: float, tuned: float, max_drop: float, floor: float | None, failures: int
) -> None:
    judge = load("eval_gate").judge
    assert len(judge({"rouge-l": base}, {"rouge-l": tuned}, "rouge-l", max_drop, floor)) == failures


@pytest.mark.parametrize(
    ("base", "tuned", "max_drop", "ceiling", "failures"),
    [
        (400.0, 401.0, 1.0, None, 0),  # exactly the allowed rise
        (400.0, 401.5, 1.0, None, 1),
        (400.0, 380.0, 0.0, 380.0, 0),  # exactly the ceiling
        (400.0, 420.0, 5.0, 390.0, 2),
    ],
)
def test_perplexity_is_judged_lower_is_better(
    base: float, tuned: float, max_drop: float, ceiling: float | None, failures: int
) -> None:
    judge = load("eval_gate").judge
    why = judge({"perplexity": base}, {"perplexity": tuned}, "perplexity", max_drop, ceiling)
    assert len(why) == failures
    assert all("above" in reason for reason in why)


@pytest.mark.parametrize(
    ("tuned", "error"),
    [
        (results(float("nan")), "predict_rouge-l is NaN, not a finite number"),
        (results("39.5"), 'predict_rouge-l is "39.5", not a finite number'),
        (
            {"predict_bleu-4": 30.0},
            "no predict_rouge-l in predict_results.json (is predict_with_generate set?)",
        ),
        ("[1, 2]", "predict_results.json is not a JSON object"),
        ("{not json", "gave no usable scores: Expecting property name"),
    ],
    ids=["nan", "string", "metric-missing", "not-an-object", "not-json"],
)
def test_a_missing_or_unusable_score_is_an_error_not_a_verdict(
    tmp_path: Path, tuned: dict[str, Any] | str, error: str
) -> None:
    """NaN compares false to everything: read as a score, it would pass any gate."""
    result = run_gate(tmp_path, results(40.0), tuned, "--max-drop=100")
    assert result.returncode == EXIT["failed"], result.stdout + result.stderr
    assert "the prediction of" in result.stderr and error in result.stderr
    assert not (tmp_path / "out" / "scores.json").exists(), "no verdict is written"


def test_a_failed_prediction_is_an_error_and_an_earlier_attempts_scores_do_not_count(tmp_path: Path) -> None:
    result = run_gate(tmp_path, results(40.0), results(40.0), "--max-drop=1", cli_exit=1)
    assert result.returncode == EXIT["failed"]
    assert "the prediction of" in result.stderr and "failed (exit code 1)" in result.stderr
    # a results file left by an earlier attempt, and a prediction that writes none this time
    stale = tmp_path / "base" / "predict_results.json"
    stale.write_text(json.dumps(results(40.0)))
    (tmp_path / "base.yaml").write_text(
        yaml.safe_dump({"output_dir": str(tmp_path / "base"), "prepared": "/nowhere"})
    )
    command = [
        sys.executable,
        str(FILES / "eval_gate.py"),
        str(tmp_path / "base.yaml"),
        str(tmp_path / "tuned.yaml"),
    ]
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [*command, "--metric=rouge-l", "--max-drop=1", f"--scores={tmp_path / 's.json'}"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == EXIT["failed"] and not stale.exists()


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--max-drop=nan"], "--max-drop nan: a finite number of points, 0 or more"),
        (["--max-drop=-1"], "--max-drop -1.0: a finite number of points, 0 or more"),
        (["--max-drop=1", "--floor=inf"], "--floor inf: a finite score"),
        (["--max-drop=1", "--metric=accuracy"], "invalid choice: 'accuracy'"),
    ],
)
def test_a_meaningless_bound_is_refused_before_any_prediction(
    tmp_path: Path, flags: list[str], error: str
) -> None:
    result = run_gate(tmp_path, results(40.0), results(0.0), *flags, cli_exit=9)
    assert result.returncode == EXIT["usage"], result.stdout + result.stderr
    assert error in result.stderr
    assert "llamafactory-cli" not in result.stdout, "nothing was predicted"


def test_a_tuned_model_whose_answers_are_mostly_empty_fails_naming_how_many(tmp_path: Path) -> None:
    said = {"base": ["yes", "no", "maybe", "so"], "tuned": ["", "  ", "\n", "fine"]}
    result = run_gate(tmp_path, results(10.0), results(12.0), "--max-drop=1", said=said)
    assert result.returncode == EXIT["gateFailed"], result.stdout + result.stderr
    assert "3 of the tuned model's 4 answers are empty" in result.stdout
    assert "empty answers: base 0 of 4, tuned 3 of 4" in result.stdout
    document = scores(tmp_path)
    assert document["passed"] is False
    assert document["answers"] == {"base": {"total": 4, "empty": 0}, "tuned": {"total": 4, "empty": 3}}


def test_a_tuned_model_with_half_its_answers_empty_is_judged_on_its_scores(tmp_path: Path) -> None:
    said = {"base": ["a", "b", "c", "d"], "tuned": ["", "b", "", "d"]}
    result = run_gate(tmp_path, results(10.0), results(12.0), "--max-drop=1", said=said)
    assert result.returncode == EXIT["ok"], result.stdout + result.stderr
    assert scores(tmp_path)["answers"]["tuned"] == {"total": 4, "empty": 2}


def test_answers_of_an_earlier_attempt_never_stand_in(tmp_path: Path) -> None:
    stale = tmp_path / "tuned"
    stale.mkdir()
    (stale / "generated_predictions.jsonl").write_text(json.dumps({"predict": ""}) + "\n")
    result = run_gate(tmp_path, results(10.0), results(12.0), "--max-drop=1")
    assert result.returncode == EXIT["ok"], result.stdout + result.stderr
    assert scores(tmp_path)["answers"] == {"base": None, "tuned": None}
