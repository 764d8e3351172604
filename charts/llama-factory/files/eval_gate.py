"""The evaluation gate between the merge and serving: the base and the tuned model answer the same held-out
data, LLaMA-Factory scores both (BLEU-4 and ROUGE with predict_with_generate), and the tuned model passes only
if it is not worse than the base by more than the allowed drop on the chosen metric (and reaches the floor,
when one is set). For what a stage is for, the gate may instead score the models' likelihoods
(likelihood.py): preference accuracy on held-out pairs (DPO, ORPO, SimPO, KTO) or perplexity on held-out
text (pre-training, where lower is better and the allowed drop is a rise in perplexity), or a reward
model's pairwise accuracy on held-out pairs, against chance (50).

    eval_gate.py BASE_CONFIG TUNED_CONFIG --metric rouge-l --max-drop 1.0 [--floor 20] --scores FILE

Each config is a complete `llamafactory-cli train` config with do_predict; its predict_results.json lands in
its output_dir. The scores of both are written to FILE (atomically) and printed side by side; with MLflow
configured (MLFLOW_TRACKING_URI, as the chart sets it) they are also logged on the training's MLflow run,
found by the experiment's run id tag. Exit 0: the gate passed; 5: it failed (the Job's podFailurePolicy
fails it at once: a retry scores the same); anything else: a prediction failed. Standard library + PyYAML +
the image's llamafactory (and mlflow, when reporting to MLflow).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

# podlib beside this script (the pods' /scripts), also when this file is imported by its path
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from podlib import CONTRACT, EXIT, atomic_write  # noqa: E402

GATE_FAILED = EXIT["gateFailed"]
GENERATION_METRICS = tuple(CONTRACT["gate"]["generationMetrics"])
LIKELIHOOD_METRICS = tuple(CONTRACT["gate"]["likelihoodMetrics"])  # likelihood.py's
METRICS = GENERATION_METRICS + LIKELIHOOD_METRICS
LOWER_IS_BETTER = tuple(CONTRACT["gate"]["lowerIsBetter"])
# a reward model's score needs its trained value head, which the base model lacks: its reference is chance
AGAINST_CHANCE = tuple(CONTRACT["gate"]["againstChance"])
CHANCE = 50.0  # a value head that learnt nothing ranks half the pairs right
PREDICTIONS = "generated_predictions.jsonl"  # LLaMA-Factory's answers, one JSON object per line


def output_dir_of(config_file: str) -> Path:
    with open(config_file, encoding="utf-8") as f:
        return Path(yaml.safe_load(f)["output_dir"])


def predict(config_file: str, metric: str) -> dict[str, float]:
    """Run LLaMA-Factory's prediction of one config; its scores (0-100) by metric name, and its runtime. A
    likelihood metric is computed here, from the same config, without generating."""
    if metric in LIKELIHOOD_METRICS:
        import likelihood

        with open(config_file, encoding="utf-8") as f:
            config = yaml.safe_load(f)
        print(f"eval: {metric} of {config['model_name_or_path']} on {config['eval_dataset']}", flush=True)
        scores: dict[str, float] = likelihood.score(config, metric)
        return scores
    output_dir = output_dir_of(config_file)
    results = output_dir / "predict_results.json"
    # a score or an answer from an earlier attempt must not stand in for this one's
    results.unlink(missing_ok=True)
    (output_dir / PREDICTIONS).unlink(missing_ok=True)
    print(f"eval: llamafactory-cli train {config_file}", flush=True)
    code = subprocess.run(["llamafactory-cli", "train", config_file], check=False).returncode
    if code != 0 or not results.is_file():
        raise SystemExit(f"eval: the prediction of {config_file} failed (exit code {code})")
    try:
        return read_scores(results.read_text(encoding="utf-8"), metric)
    except ValueError as exc:
        raise SystemExit(f"eval: the prediction of {config_file} gave no usable scores: {exc}") from None


def read_scores(text: str, metric: str) -> dict[str, float]:
    """The scores of a predict_results.json by metric name, and its runtime; ValueError when the gate's metric
    is missing or a score is not a finite number (NaN compares false to everything: it would pass any gate)."""
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("predict_results.json is not a JSON object")
    if f"predict_{metric}" not in raw:
        raise ValueError(f"no predict_{metric} in predict_results.json (is predict_with_generate set?)")
    scores = {}
    for m in GENERATION_METRICS:
        if f"predict_{m}" in raw:
            value = raw[f"predict_{m}"]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"predict_{m} is {json.dumps(value)[:40]}, not a finite number")
            scores[m] = round(float(value), 2)
    runtime = raw.get("predict_runtime", 0.0)
    scores["seconds"] = round(float(runtime), 1) if isinstance(runtime, (int, float)) else 0.0
    return scores


def answers(output_dir: Path) -> dict[str, int] | None:
    """How many answers a prediction gave and how many of them are empty (blank after the special tokens are
    dropped): LLaMA-Factory's generated_predictions.jsonl, one {"predict": ...} per question. None when it
    wrote none."""
    path = output_dir / PREDICTIONS
    if not path.is_file():
        return None
    total = empty = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                total += 1
                predict = json.loads(line).get("predict")
                empty += not (isinstance(predict, str) and predict.strip())
    return {"total": total, "empty": empty}


def judge(
    base: dict[str, float],
    tuned: dict[str, float],
    metric: str,
    max_drop: float,
    floor: float | None,
    tuned_answers: dict[str, int] | None = None,
) -> list[str]:
    """Why the tuned model fails the gate; empty when it passes."""
    why = []
    # a model that says nothing can still score near a base that says little; mostly silent is never served
    if tuned_answers and tuned_answers["empty"] * 2 > tuned_answers["total"]:
        why.append(
            f"{tuned_answers['empty']} of the tuned model's {tuned_answers['total']} answers are empty "
            "(a missing or wrong end-of-sequence token, or a chat template it was not trained on)"
        )
    if metric in LOWER_IS_BETTER:
        if tuned[metric] > base[metric] + max_drop:
            why.append(
                f"{metric} {tuned[metric]:.2f} is {tuned[metric] - base[metric]:.2f} above the base model's "
                f"{base[metric]:.2f} (at most {max_drop:g} allowed)"
            )
        if floor is not None and tuned[metric] > floor:
            why.append(f"{metric} {tuned[metric]:.2f} is above the ceiling {floor:g}")
        return why
    if tuned[metric] < base[metric] - max_drop:
        why.append(
            f"{metric} {tuned[metric]:.2f} is {base[metric] - tuned[metric]:.2f} below the base model's "
            f"{base[metric]:.2f} (at most {max_drop:g} allowed)"
        )
    if floor is not None and tuned[metric] < floor:
        why.append(f"{metric} {tuned[metric]:.2f} is below the floor {floor:g}")
    return why


def table(base: dict[str, float], tuned: dict[str, float], metric: str) -> str:
    shown = [m for m in METRICS if m in base and m in tuned]
    width = max([10, *(len(m) for m in shown)])
    lines = [f"{'metric':<{width}} {'base':>8} {'tuned':>8} {'change':>8}"]
    for m in shown:
        mark = "  <- the gate's" if m == metric else ""
        lines.append(f"{m:<{width}} {base[m]:>8.2f} {tuned[m]:>8.2f} {tuned[m] - base[m]:>+8.2f}{mark}")
    return "\n".join(lines)


def log_to_mlflow(document: dict[str, Any]) -> None:
    """Both models' scores and the verdict on the training's MLflow run (tagged with the experiment's run id by
    the chart's MLFLOW_TAGS); a run of its own when the training did not report to MLflow. MLflow being down
    does not change the verdict: it is said, and the gate goes on."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return
    try:
        import mlflow
    except ImportError:
        print("eval: mlflow is not in the image; the scores are not logged to MLflow", flush=True)
        return
    tags = json.loads(os.environ.get("MLFLOW_TAGS") or "{}")
    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or str(tags.get("experiment", "default"))
    try:
        client = mlflow.MlflowClient()
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        runs = client.search_runs([experiment_id], f"tags.run_id = '{tags.get('run_id', '')}'")
        training = [r for r in runs if str(r.data.tags.get("release", "")).endswith("-train")]
        if training:
            run_id = max(training, key=lambda r: r.info.start_time).info.run_id
        else:
            run_id = client.create_run(
                experiment_id, tags={**tags, "mlflow.runName": f"{experiment}-eval"}
            ).info.run_id
        for role in ("base", "tuned"):
            for metric in METRICS:
                if metric in document[role]:
                    client.log_metric(run_id, f"eval_{role}_{metric}", document[role][metric])
        client.set_tag(run_id, "eval_gate", "passed" if document["passed"] else "failed")
        client.set_tag(run_id, "eval_metric", document["metric"])
        print(f"eval: scores logged to MLflow run {run_id} (experiment {experiment})", flush=True)
    except Exception as exc:  # noqa: BLE001 - whatever MLflow raises, the verdict stands
        print(f"eval: the scores could not be logged to MLflow: {exc}", flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_config")
    parser.add_argument("tuned_config")
    parser.add_argument("--metric", choices=METRICS, required=True)
    parser.add_argument("--max-drop", type=float, required=True)
    parser.add_argument("--floor", type=float)
    parser.add_argument("--scores", required=True)
    args = parser.parse_args(argv)
    # NaN compares false to everything: a gate with it would pass any model
    if not math.isfinite(args.max_drop) or args.max_drop < 0:
        parser.error(f"--max-drop {args.max_drop}: a finite number of points, 0 or more")
    if args.floor is not None and not math.isfinite(args.floor):
        parser.error(f"--floor {args.floor}: a finite score")
    if args.metric in AGAINST_CHANCE:
        base = {args.metric: CHANCE, "chance": 1.0}
        print(f"eval: {args.metric} of the tuned model against chance (50)", flush=True)
    else:
        base = predict(args.base_config, args.metric)
    tuned = predict(args.tuned_config, args.metric)
    said = {
        "base": answers(output_dir_of(args.base_config)),
        "tuned": answers(output_dir_of(args.tuned_config)),
    }
    why = judge(base, tuned, args.metric, args.max_drop, args.floor, said["tuned"])
    document = {
        "metric": args.metric,
        "maxDrop": args.max_drop,
        "floor": args.floor,
        "base": base,
        "tuned": tuned,
        "answers": said,
        "passed": not why,
        "why": why,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write(Path(args.scores), json.dumps(document, indent=2) + "\n")
    log_to_mlflow(document)
    print(table(base, tuned, args.metric), flush=True)
    if said["base"] and said["tuned"]:
        print(
            f"empty answers: base {said['base']['empty']} of {said['base']['total']}, "
            f"tuned {said['tuned']['empty']} of {said['tuned']['total']}",
            flush=True,
        )
    if why:
        print("eval: gate failed, the tuned model is not served: " + "; ".join(why), flush=True)
        return GATE_FAILED
    print(
        f"eval: gate passed ({args.metric} {tuned[args.metric]:.2f} vs base {base[args.metric]:.2f})",
        flush=True,
    )
    return EXIT["ok"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
