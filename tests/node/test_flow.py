"""The guide's whole flow in real pods: values/tiny-cpu trains (preempted right after its first checkpoint by
a real eviction, then resumed), merges, is served by real vLLM on CPU and answers; LlamaBoard opens in a real
browser; the after-training checklist passes; helm test compares vLLM's prompts with the training's and fails a
served model of another template or with empty answers; a merge that lost its weights is never published; the
adapter is served on the base model too; DPO after SFT (values/tiny-cpu-dpo) trains, is gated on preference accuracy
and served."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from generator.core.facts import derive
from generator.core.spec import load_spec
from generator.core.storage import local
from generator.errors import KubeError
from generator.ops import kube
from generator.project import CHART_DIR
from tests.support import serving_load, tiny, tinymodel

from .conftest import (
    LFK,
    NAMESPACE,
    TINY,
    NodeCluster,
    PortForward,
    as_guest_of_tiny_cpu,
    as_shared_host,
    copy_artifact,
    edit_values,
    evict,
    http_json,
    variant,
    wait_for,
)

FACTS = derive(load_spec(TINY))
MAX_STEPS = load_spec(TINY).data["training"]["maxSteps"]


class Preemption(threading.Thread):
    """Evicts the training pod through the API as soon as its first checkpoint is complete on the storage."""

    def __init__(self, cluster: NodeCluster):
        super().__init__(daemon=True)
        self.cluster, self.stop = cluster, threading.Event()
        self.output = local(cluster.storage, FACTS.output_dir)
        self.evicted: str | None = None
        self.checkpoint: int | None = None
        self.disruption = False

    def run(self) -> None:
        while not self.stop.is_set():
            done = sorted(
                int(p.name.split("-")[1])
                for p in self.output.glob("checkpoint-*")
                if (p / "trainer_state.json").is_file()
            )
            if done:
                self.evict(done[0])
                return
            time.sleep(0.05)

    def evict(self, checkpoint: int) -> None:
        [pod] = [
            p for p in self.cluster.pods({kube.INSTANCE: FACTS.releases["train"], kube.COMPONENT: "train"})
            if p["status"].get("phase") == "Running"
        ]  # fmt: skip
        name = pod["metadata"]["name"]
        evict(self.cluster, name)
        self.evicted, self.checkpoint = name, checkpoint
        # the eviction deletes the pod: read its DisruptionTarget condition while it terminates
        path = f"/api/v1/namespaces/{NAMESPACE}/pods/{name}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self.disruption:
            try:
                self.disruption = kube.is_true(
                    kube.request(self.cluster.api, "GET", path), "DisruptionTarget"
                )
            except KubeError:
                return  # already gone
            time.sleep(0.05)


@pytest.fixture(scope="module")
def tiny_run(node_cluster: NodeCluster) -> Iterator[dict[str, Any]]:
    """`lfk run values/tiny-cpu/experiment.yaml`, the training pod evicted after its first checkpoint."""
    preemption = Preemption(node_cluster)
    preemption.start()
    started = time.monotonic()
    result = node_cluster.lfk("run", str(TINY), "--timeout", "900", "--pending-timeout", "180", timeout=1500)
    preemption.stop.set()
    yield {"result": result, "seconds": time.monotonic() - started, "preemption": preemption}


def trainer_log(cluster: NodeCluster) -> list[dict[str, Any]]:
    text = (local(cluster.storage, FACTS.output_dir) / "trainer_log.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_lfk_run_goes_from_nothing_to_a_served_model(tiny_run: dict[str, Any]) -> None:
    result = tiny_run["result"]
    assert result.returncode == 0, result.stdout + result.stderr
    for line in (
        f"train: job {FACTS.releases['train']}-",
        "merge: job",
        f"eval: job {FACTS.releases['eval']}-",
        "vllm: deployment tiny-cpu-vllm available",
        "vllm: helm test passed",
        "webui: deployment tiny-cpu-webui available",
    ):
        assert line in result.stdout, result.stdout
    # the gate passed before vLLM was installed
    assert re.search(r"^eval: job \S+ complete", result.stdout, re.M), result.stdout
    assert result.stdout.index("eval: job") < result.stdout.index("vllm: $ ")
    print(f"tiny experiment end to end: {tiny_run['seconds']:.0f} s")


def test_the_gate_scored_both_models_before_serving(
    node_cluster: NodeCluster, tiny_run: dict[str, Any]
) -> None:
    assert FACTS.eval_scores
    scores = json.loads(local(node_cluster.storage, FACTS.eval_scores).read_text())
    gate = load_spec(TINY).data["evaluate"]
    assert scores["passed"] and scores["metric"] == gate["metric"] == "rouge-l", scores
    # real LLaMA-Factory scores of real generations: the merged model answers its questions better than the
    # random base, and above the floor
    assert scores["tuned"]["rouge-l"] >= gate["floor"] > scores["base"]["rouge-l"], scores
    for role in ("base", "tuned"):
        predictions = local(
            node_cluster.storage, f"{FACTS.output_dir}/eval/{role}/generated_predictions.jsonl"
        )
        assert len(predictions.read_text().splitlines()) == gate["maxSamples"]
    status = node_cluster.lfk("status", str(TINY), "--read-log-in-cluster")
    assert status.returncode == 0, status.stderr
    tuned, base = scores["tuned"]["rouge-l"], scores["base"]["rouge-l"]
    assert (
        f"evaluation rouge-l: tuned {tuned:.2f} vs base {base:.2f} "
        f"(at most {gate['maxDrop']:g} below the base model's, and at least {gate['floor']:g}): passed"
        in status.stdout
    )


def test_the_evicted_training_resumes_from_its_checkpoint(
    node_cluster: NodeCluster, tiny_run: dict[str, Any]
) -> None:
    preemption = tiny_run["preemption"]
    assert preemption.evicted, "the first checkpoint never appeared while the pod ran"
    checkpoint = preemption.checkpoint
    assert preemption.disruption, (
        "an eviction marks the pod DisruptionTarget, which the failure policy ignores"
    )
    # the evicted pod is deleted; the Job's next pod resumed, and the eviction counted as no failure
    [resumed] = node_cluster.pods({kube.INSTANCE: FACTS.releases["train"], kube.COMPONENT: "train"})
    assert resumed["metadata"]["name"] != preemption.evicted
    [job] = kube.workloads(node_cluster.api, NAMESPACE, FACTS.releases["train"], "train")
    assert kube.workload_state(job)[0] == "Complete" and not job["status"].get("failed"), job["status"]
    log = node_cluster.log(resumed["metadata"]["name"])
    assert f"Resuming training from {FACTS.output_dir}/checkpoint-" in log, log[-3000:]
    resumed_from = int(re.search(r"Resuming training from \S+/checkpoint-(\d+)", log).group(1))  # type: ignore[union-attr]
    assert resumed_from >= checkpoint
    steps = [e["current_steps"] for e in trainer_log(node_cluster) if "loss" in e]
    # the log is appended to: the second run's steps follow the checkpoint, whether or not the first
    # run had logged steps past it before the eviction
    second = steps[len(steps) - (MAX_STEPS - resumed_from) :]
    assert second == list(range(resumed_from + 1, MAX_STEPS + 1)), f"the resumed run trained again: {steps}"
    assert resumed_from in steps[: len(steps) - len(second)], (
        f"the first run never reached the checkpoint: {steps}"
    )
    # the pods ran the chart's preflight for real before training
    assert "preflight: config, model, datasets and reporting are in order" in log
    # the release's GPU-less hook tokenized the data once; the resumed start loaded that set, tokenizing nothing
    [tokenized] = [p for p in local(node_cluster.storage, "/storage/tokenized").iterdir() if p.is_dir()]
    assert (tokenized / "dataset_dict.json").is_file()
    in_pod = f"/storage/tokenized/{tokenized.name}"
    assert f"starting: llamafactory-cli train /config/train.yaml tokenized_path={in_pod}" in log
    assert f"Loaded tokenized dataset from {in_pod}." in log and "Running tokenizer on dataset" not in log


def test_status_reads_real_progress_from_the_claim(
    node_cluster: NodeCluster, tiny_run: dict[str, Any]
) -> None:
    seen = []
    for how in (["--read-log-in-cluster"], ["--storage-root", str(node_cluster.storage)]):
        status = node_cluster.lfk("status", str(TINY), "--output", "json", *how)
        assert status.returncode == 0, status.stderr
        data = json.loads(status.stdout)
        training = data["training"]
        assert training["current_steps"] == MAX_STEPS == training["total_steps"], training
        assert isinstance(training["loss"], float) and training["loss"] > 0
        assert training["loss_curve"][-1][0] == MAX_STEPS
        # the checkpoints the trainer saved, as the folders on the claim say
        on_disk = sorted(
            int(p.name.split("-")[1])
            for p in local(node_cluster.storage, FACTS.output_dir).glob("checkpoint-*")
        )
        assert on_disk and [c["step"] for c in data["checkpoints"]] == on_disk, data["checkpoints"]
        assert all(c["size_bytes"] > 0 and c["saved_at"].endswith("Z") for c in data["checkpoints"])
        assert data["gpu_utilisation"] is None, "no training pod runs now, so no GPU to measure"
        seen.append([c["step"] for c in data["checkpoints"]])
    assert seen[0] == seen[1], "the reader pod and the local mount list the same checkpoints"
    assert not [p for p in node_cluster.pods({kube.COMPONENT: "reader"})], "the reader pods are deleted"
    plot = node_cluster.storage.parent / "loss.png"
    drawn = node_cluster.lfk(
        "status", str(TINY), "--storage-root", str(node_cluster.storage), "--plot", str(plot)
    )
    assert drawn.returncode == 0, drawn.stderr
    assert plot.read_bytes().startswith(b"\x89PNG") and "checkpoints " in drawn.stdout


def test_the_run_report_is_filled_from_the_real_run(
    node_cluster: NodeCluster, tiny_run: dict[str, Any]
) -> None:
    out = node_cluster.storage.parent / "report.html"
    result = node_cluster.lfk(
        "report",
        str(TINY),
        "--storage-root",
        str(node_cluster.storage),
        "--out",
        str(out),
        "--price-per-gpu-hour",
        "3",
    )
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert f"run id <code>{FACTS.run_id}</code>" in page
    assert re.search(
        r"<td>train/train</td><td><code>[^<]+</code></td><td><code>[^<]*sha256:[0-9a-f]{64}</code>", page
    ), page
    assert f"steps {MAX_STEPS}/{MAX_STEPS}" in page and "data:image/png;base64," in page
    assert re.search(r"<li>tokens/s: [\d.]+</li>", page), "the trainer logged its throughput"
    # the dataset as the tokenize hook hashed it, the same bytes as on the storage now
    data_file = local(node_cluster.storage, "/storage/data/tiny_qa.json")
    digest = hashlib.sha256(data_file.read_bytes()).hexdigest()[:16]
    assert (
        f"<li>dataset <code>tiny_qa</code>: <code>tiny_qa.json</code> sha256 <code>{digest}</code></li>"
        in page
    )
    assert "<li>MFU: not recorded (needs the GPU&#x27;s peak FLOPS)</li>" in page, "no GPU on the real node"
    for component in ("train", "merge", "eval"):  # real wall times from the Jobs, not "not recorded"
        assert re.search(
            rf"<td>{component}</td><td>Job <code>[^<]+</code></td><td>Complete</td><td>\d+ (min \d+ )?s</td>",
            page,
        ), page
    assert "GPU-hours of the finished workloads: 0.00" in page  # the real node has no GPU
    assert "<li>verdict: passed, served</li>" in page and re.search(r"<td>rouge-l</td><td>[\d.]+</td>", page)
    markdown = node_cluster.lfk("report", str(TINY), "--storage-root", str(node_cluster.storage), "--format", "md",
                                "--out", str(out.with_suffix(".md")))  # fmt: skip
    assert markdown.returncode == 0, markdown.stderr
    assert out.with_suffix(".loss.png").read_bytes().startswith(b"\x89PNG")


def test_the_reports_figures_become_tags_of_the_trainings_mlflow_run(
    node_cluster: NodeCluster, tiny_run: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lfk report --mlflow-tags` on the real run: the training's MLflow run (here a file store standing in for
    the server, its run tagged as the chart's MLFLOW_TAGS tags it) gets the report's figures as lfk.* tags."""
    from mlflow import MlflowClient

    store = f"file://{tmp_path / 'mlruns'}"
    env = {"MLFLOW_ALLOW_FILE_STORE": "true"}
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(store)
    experiment = client.create_experiment("tiny-cpu")
    tags = {"experiment": "tiny-cpu", "run_id": FACTS.run_id, "release": FACTS.releases["train"]}
    training = client.create_run(experiment, tags=tags).info.run_id

    def with_mlflow(d: dict[str, Any]) -> None:  # the same run: neither tracking nor images is in the run id
        d["tracking"] = {"mlflow": {"trackingUri": "http://mlflow.mlops.svc.cluster.local:5000"}}
        d["images"]["pipPackages"] = ["mlflow-skinny==3.17.2"]

    spec = variant(tmp_path, "tiny-cpu", with_mlflow)
    result = node_cluster.lfk("report", str(spec), "--storage-root", str(node_cluster.storage), "--mlflow-tags",
                              "--mlflow-uri", store, "--price-per-gpu-hour", "3", env=env)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"set on run {training} at {store}" in result.stdout
    logged = client.get_run(training).data.tags
    digest = hashlib.sha256(
        local(node_cluster.storage, "/storage/data/tiny_qa.json").read_bytes()
    ).hexdigest()
    assert logged["lfk.dataset.tiny_qa.tiny_qa.json.sha256"] == digest
    assert logged["lfk.llamafactory_version"] == "0.9.5" and logged["lfk.vllm_version"] == "0.32.0"
    assert float(logged["lfk.tokens_per_s"]) > 0 and int(logged["lfk.wall_seconds.train"]) > 0
    assert logged["lfk.gpu_hours"] == "0.000" and logged["lfk.cost"] == "0.00"  # no GPU on the real node
    assert "lfk.mfu" not in logged, "no GPU: no MFU"


def test_the_merged_model_is_published_whole(node_cluster: NodeCluster, tiny_run: dict[str, Any]) -> None:
    assert FACTS.merged_dir
    merged = local(node_cluster.storage, FACTS.merged_dir)
    files = {p.name for p in merged.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", ".lfk-merge.json"} <= files
    assert not merged.with_name(merged.name + ".partial").exists()


def test_vllm_answers_through_a_port_forward_and_the_after_checklist_passes(
    node_cluster: NodeCluster, tiny_run: dict[str, Any]
) -> None:
    with PortForward(node_cluster, TINY, "vllm") as forward:
        models = [m["id"] for m in http_json(f"{forward.url}/v1/models")["data"]]
        assert models == [FACTS.served_name]
        answer = http_json(f"{forward.url}/v1/chat/completions", {
            "model": FACTS.served_name, "messages": [{"role": "user", "content": "Czym jest LoRA?"}], "max_tokens": 8,
        })  # fmt: skip
        assert (
            answer["object"] == "chat.completion" and answer["choices"][0]["message"]["role"] == "assistant"
        )
        assert answer["usage"]["completion_tokens"] > 0
        check = node_cluster.check_after(TINY, forward.url)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "✓ merged model complete" in check.stdout and "✓ vLLM answers /v1/models" in check.stdout
    # the helm test pod found the Service by its DNS name and got an answer from it
    [test_pod] = node_cluster.pods({kube.INSTANCE: FACTS.releases["vllm"], kube.COMPONENT: "vllm-test"})
    assert test_pod["status"]["phase"] == "Succeeded"
    log = node_cluster.log(test_pod["metadata"]["name"])
    assert f"chat test: {FACTS.served_name} answered:" in log
    # and vLLM built the prompts of the merge's record exactly as LLaMA-Factory trained on them
    assert "token for token as LLaMA-Factory (template llama3) and stops on '<|eot_id|>'" in log, log
    assert "✓ vLLM builds the prompts LLaMA-Factory trained on, and stops on its stop tokens" in check.stdout


def test_helm_test_fails_a_template_of_another_family_and_a_model_that_answers_nothing(
    node_cluster: NodeCluster, tiny_run: dict[str, Any], tmp_path: Path
) -> None:
    """A copy of the merged model made mute (its final norm zeroed: every logit 0, so greedy decoding repeats
    token 0, <|begin_of_text|>, which the answer's text leaves out) and served by a second vLLM with a ChatML
    template: `helm test` fails, naming the first token that differs from the training's prompt, and the
    empty answer."""
    from safetensors.torch import load_file, save_file

    assert FACTS.merged_dir
    mute_dir = FACTS.merged_dir.replace("/tiny-cpu/", "/tiny-mute/")
    mute = local(node_cluster.storage, mute_dir)
    shutil.rmtree(mute, ignore_errors=True)
    shutil.copytree(local(node_cluster.storage, FACTS.merged_dir), mute)
    weights = load_file(mute / "model.safetensors")
    weights["model.norm.weight"].zero_()
    save_file(weights, mute / "model.safetensors", metadata={"format": "pt"})
    (mute / "chatml.jinja").write_text(tinymodel.CHATML, encoding="utf-8")
    for path in [mute.parent, mute, *mute.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)

    def serve_mute(values: dict[str, Any]) -> None:
        vllm = values["vllm"]
        vllm["model"], vllm["chatTemplate"] = mute_dir, f"{mute_dir}/chatml.jinja"
        # beside tiny-cpu's own vLLM on the 2-core node
        vllm["resources"] = {
            "requests": {"cpu": "100m", "memory": "2Gi"},
            "limits": {"cpu": "1", "memory": "6Gi"},
        }

    release = "tiny-mute-vllm"
    edited = edit_values(_copy_values(tmp_path), "vllm", serve_mute)
    try:
        installed = node_cluster.helm("install", release, str(CHART_DIR), "-n", NAMESPACE, "-f", str(edited))
        assert installed.returncode == 0, installed.stderr
        # helm's --wait counts a Deployment allowed one unavailable replica (ours) as ready at once: wait here
        path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{release}"
        ready = lambda: kube.request(node_cluster.api, "GET", path)["status"].get("readyReplicas")  # noqa: E731
        try:
            wait_for("the mute model's vLLM ready", ready, 600, interval=2)
        except AssertionError:
            pods = node_cluster.pods({kube.INSTANCE: release, kube.COMPONENT: "vllm"})
            raise AssertionError([node_cluster.log(p["metadata"]["name"])[-3000:] for p in pods]) from None
        tested = node_cluster.helm("test", release, "-n", NAMESPACE, "--timeout", "5m")
        assert tested.returncode != 0, tested.stdout
        [pod] = node_cluster.pods({kube.INSTANCE: release, kube.COMPONENT: "vllm-test"})
        log = node_cluster.log(pod["metadata"]["name"])
        assert (
            "vLLM's prompt differs from the one LLaMA-Factory trained on (template llama3) at token 1" in log
        ), log
        assert "trained '<|begin_of_text|>' (id 0), served " in log, log
        assert "the answer is empty ('')" in log, log
    finally:
        node_cluster.uninstall(release)
        shutil.rmtree(mute, ignore_errors=True)


def test_no_request_is_lost_when_a_served_replica_is_deleted_under_load(
    node_cluster: NodeCluster, tiny_run: dict[str, Any]
) -> None:
    """tiny-cpu's vLLM with two replicas behind its Service, a bounded load from a pod (120 requests, 4 at a
    time) and one replica deleted after 30 answers: every request sent once the deletion began is answered
    (readiness, the preStop sleep and the grace period make that hold). The figures are printed, not asserted;
    make bench-node prints them too. The release is left with its two replicas, both ready: the next test
    that serves tiny-cpu installs its own values (the API key), and a vLLM pod replaced while its engine
    starts holds the node's CPU for its whole grace period (60 s), so nothing is left starting."""
    release = FACTS.releases["vllm"]
    values = TINY.parent / "vllm.yaml"
    # two replicas on the 2-core node: small requests (the limits stay), so the replacement of the deleted
    # replica may wait for its CPU without disturbing the two that serve
    scaled = node_cluster.helm(
        "upgrade", release, str(CHART_DIR), "-n", NAMESPACE, "-f", str(values), "--set", "vllm.replicas=2",
        "--set", "vllm.resources.requests.cpu=300m", "--set", "vllm.resources.requests.memory=2Gi",
        "--wait", "--timeout", "600s",
    )  # fmt: skip
    assert scaled.returncode == 0, scaled.stderr
    try:
        # helm's --wait counts a Deployment ready at replicas - maxUnavailable: wait for both replicas
        wait_for(
            "two ready vLLM replicas",
            lambda: kube.deployment(node_cluster.api, NAMESPACE, release)["status"].get("readyReplicas") == 2,
            timeout=420,
        )
        spec = load_spec(TINY).data
        placement = {
            "nodeSelector": spec["resources"]["nodeSelector"], "tolerations": spec["resources"]["tolerations"]
        }  # fmt: skip
        figures = serving_load.run_with_a_replica_killed(
            node_cluster.api, NAMESPACE, release, FACTS.served_name, spec["images"]["vllm"], placement
        )
        print(f"vLLM under load, one of two replicas deleted: {figures.summary()}")
        assert len(figures.requests) == 120
        assert any(r["start"] >= figures.deleted_at for r in figures.requests), (
            "no request after the deletion"
        )
        assert not figures.failures_after_deletion, figures.failures_after_deletion
    finally:
        wait_for(
            "the deleted replica's successor ready",
            lambda: kube.deployment(node_cluster.api, NAMESPACE, release)["status"].get("readyReplicas") == 2,
            timeout=420,
        )


def test_logs_and_exec_reach_the_pods_through_the_real_kubelet(
    node_cluster: NodeCluster, tiny_run: dict[str, Any]
) -> None:
    exec_ = node_cluster.kubectl(
        "-n", NAMESPACE, "exec", f"deploy/{FACTS.releases['webui']}", "--", "id", "-u"
    )
    assert exec_.stdout.strip() == "1000", exec_.stderr
    logs = node_cluster.kubectl("-n", NAMESPACE, "logs", f"deploy/{FACTS.releases['vllm']}", "--tail", "200")
    assert "Application startup complete" in logs.stdout or "Uvicorn running" in logs.stdout, logs.stdout[
        -2000:
    ]


def test_llamaboard_opens_in_headless_chromium(
    node_cluster: NodeCluster, tiny_run: dict[str, Any], tmp_path: Path
) -> None:
    from playwright.sync_api import Route, sync_playwright
    from playwright.sync_api import TimeoutError as PageTimeout

    screenshot = tmp_path / "llamaboard.png"
    with PortForward(node_cluster, TINY, "webui") as forward, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            failed: list[str] = []
            page.on("requestfailed", lambda request: failed.append(f"{request.url} ({request.failure})"))

            # Gradio's page also asks public CDNs for a font and a script; what is tested is what the pod
            # serves, so those requests are refused at once instead of waiting on the machine's resolver
            def pod_only(route: Route) -> None:
                if route.request.url.startswith(forward.url):
                    route.continue_()
                else:
                    route.abort()

            page.route("**/*", pod_only)
            page.goto(forward.url, wait_until="domcontentloaded", timeout=120_000)
            # LlamaBoard's training tab: the model path and dataset fields rendered by Gradio
            model_path = page.get_by_text("Model path", exact=False).first

            def rendered(timeout_ms: int) -> bool:
                try:
                    model_path.wait_for(timeout=timeout_ms)
                except PageTimeout:
                    return False
                return True

            if not rendered(90_000):
                # one script lost on the port-forward leaves Gradio's page blank: say what was lost, load it again
                print(
                    f"LlamaBoard's page showed {page.inner_text('body')[:300]!r} after 90 s; failed: {failed}"
                )
                page.reload(wait_until="domcontentloaded", timeout=120_000)
                if not rendered(120_000):
                    page.screenshot(path=str(screenshot), full_page=False)
                    raise AssertionError(
                        f"LlamaBoard did not render its training tab (screenshot "
                        f"{copy_artifact(screenshot, 'llamaboard-failed.png')}): the page shows "
                        f"{page.inner_text('body')[:500]!r}; failed requests: {failed}"
                    )
            page.get_by_text("Dataset", exact=True).first.wait_for(timeout=30_000)
            page.screenshot(path=str(screenshot), full_page=False)
            title = page.title()
        finally:
            browser.close()
    assert "LLaMA" in title or "LlamaBoard" in title or title == "Gradio", title
    print(f"screenshot: {copy_artifact(screenshot, 'llamaboard.png')}")


def test_a_merge_that_lost_its_weights_is_refused_and_never_published(
    node_cluster: NodeCluster, tiny_run: dict[str, Any], tmp_path: Path
) -> None:
    """The export writes, then loses its weights (a fault injected into the real merge pod); the merge Job's
    own verification refuses the result, and the target folder never appears."""
    target = FACTS.merged_dir.replace("/tiny-cpu/", "/tiny-shard/")  # type: ignore[union-attr]
    faults = Path(__file__).resolve().parents[1] / "support" / "faults" / "sitecustomize.py"
    made = node_cluster.kubectl("-n", NAMESPACE, "create", "configmap", "lfk-faults", f"--from-file={faults}")
    assert made.returncode == 0, made.stderr

    def inject(values: dict[str, Any]) -> None:
        merge = values["merge"]
        merge["exportDir"] = target
        merge["config"]["export_dir"] = target
        merge["resources"] = {
            "requests": {"cpu": "250m", "memory": "4Gi"},
            "limits": {"cpu": "1", "memory": "4Gi"},
        }
        merge["backoffLimit"] = 0
        merge["extraEnv"] = [
            {"name": "PYTHONPATH", "value": "/faults"},
            {"name": "LFK_FAULT", "value": "drop-weights"},
        ]
        merge["extraVolumes"] = [{"name": "faults", "configMap": {"name": "lfk-faults"}}]
        merge["extraVolumeMounts"] = [{"name": "faults", "mountPath": "/faults", "readOnly": True}]

    edited = edit_values(_copy_values(tmp_path), "merge", inject)
    installed = node_cluster.helm(
        "install", "tiny-shard-merge", str(CHART_DIR), "-n", NAMESPACE, "-f", str(edited)
    )
    assert installed.returncode == 0, installed.stderr
    jobs = lambda: kube.request(  # noqa: E731
        node_cluster.api, "GET", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs",
        params={"labelSelector": f"{kube.INSTANCE}=tiny-shard-merge"},
    )["items"]  # fmt: skip
    job = wait_for(
        "the merge Job finished",
        lambda: next((j for j in jobs() if kube.workload_state(j)[0] in ("Complete", "Failed")), None),
        300,
    )
    assert kube.workload_state(job)[0] == "Failed"
    [pod] = node_cluster.pods({"job-name": job["metadata"]["name"]})
    log = node_cluster.log(pod["metadata"]["name"])
    assert "fault: removed" in log and "no model.safetensors" in log, log[-3000:]
    assert not local(node_cluster.storage, target).exists(), "a refused merge is never published"
    node_cluster.helm("uninstall", "tiny-shard-merge", "-n", NAMESPACE)
    node_cluster.kubectl("-n", NAMESPACE, "delete", "configmap", "lfk-faults")


def _copy_values(tmp_path: Path) -> Path:
    """The example's committed values files, copied where an edited one may be written beside them."""
    folder = tmp_path / "tiny-cpu"
    folder.mkdir()
    for path in TINY.parent.glob("*.yaml"):
        (folder / path.name).write_text(path.read_text())
    return folder / "experiment.yaml"


API_KEY = "tiny-secret-key"


def adapter_host(node_cluster: NodeCluster, tmp_path: Path) -> tuple[Path, str]:
    """tiny-cpu's vLLM serving the base model with its adapter, behind an API key from a Secret, and loading
    other experiments' adapters at run time (serve.sharedAdapters); installed, or left as it is when it already
    runs with these values."""
    node_cluster.kubectl("-n", NAMESPACE, "delete", "secret", "tiny-api-key", "--ignore-not-found")
    created = node_cluster.kubectl("-n", NAMESPACE, "create", "secret", "generic", "tiny-api-key",
                                   f"--from-literal=token={API_KEY}")  # fmt: skip
    assert created.returncode == 0, created.stderr

    spec = variant(tmp_path, "tiny-cpu", as_shared_host)
    result = node_cluster.lfk("run", str(spec), "--components", "vllm", "--timeout", "600", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return spec, result.stdout


def test_the_adapter_is_served_on_the_base_model_behind_an_api_key(
    node_cluster: NodeCluster, tiny_run: dict[str, Any], tmp_path: Path
) -> None:
    """serve.source: adapter for the same run: vLLM restarts with --enable-lora and the trained adapter, and
    with an API key from a Secret; `lfk chat` finds the served name and the key by itself."""
    key = API_KEY
    spec, output = adapter_host(node_cluster, tmp_path)
    assert "helm test passed" in output
    args = node_cluster.kubectl("-n", NAMESPACE, "get", "deploy", FACTS.releases["vllm"], "-o",
                                "jsonpath={.spec.template.spec.containers[0].args}").stdout  # fmt: skip
    assert "--enable-lora" in args and f"--lora-modules={FACTS.served_name}={FACTS.output_dir}" in args
    with PortForward(node_cluster, spec, "vllm") as forward:
        # the guide's curl, without the key, is refused: the reason the project's curl carries one
        with pytest.raises(urllib.error.HTTPError) as refused:
            http_json(f"{forward.url}/v1/models")
        assert refused.value.code == 401
        models = {m["id"] for m in http_json(f"{forward.url}/v1/models", api_key=key)["data"]}
        assert FACTS.served_name in models and len(models) == 2, models
        answer = http_json(f"{forward.url}/v1/chat/completions", {
            "model": FACTS.served_name, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4,
        }, api_key=key)  # fmt: skip
        assert answer["model"] == FACTS.served_name
    # two turns, one conversation: the key read from the Secret, the port-forward made and closed by lfk
    chat = node_cluster.lfk("chat", str(spec), "-m", "Hello", "-m", "And again?", "--max-tokens", "4")
    assert chat.returncode == 0, chat.stdout + chat.stderr
    turns = chat.stdout.splitlines()
    assert turns[0] == "> Hello" and "> And again?" in turns and len(turns) >= 3, chat.stdout
    # interactive: one line per turn from standard input, /reset forgets, end of input ends
    piped = node_cluster.run(LFK, "chat", str(spec), "--max-tokens", "2", stdin="Hi\n/reset\nHi again\n")
    assert piped.returncode == 0, piped.stdout + piped.stderr
    assert "(conversation forgotten)" in piped.stdout
    wrong = node_cluster.lfk("chat", str(spec), "-m", "Hello", env={"VLLM_API_KEY": "wrong"})
    assert wrong.returncode == 1 and "401" in wrong.stderr and "API key" in wrong.stderr, wrong.stderr


def served_models(cluster: NodeCluster, spec: Path) -> dict[str, dict[str, Any]]:
    with PortForward(cluster, spec, "vllm") as forward:
        return {m["id"]: m for m in http_json(f"{forward.url}/v1/models", api_key=API_KEY)["data"]}


def test_two_experiments_adapters_answer_from_one_vllm_pod_and_uninstall_unloads_one(
    node_cluster: NodeCluster, tiny_run: dict[str, Any], tmp_path: Path
) -> None:
    """serve.source: shared: a second experiment trains its own adapter and, instead of a vLLM of its own, has
    it loaded into tiny-cpu's running vLLM (its sidecar calls /v1/load_lora_adapter); both adapters answer from
    that one pod, a restarted replica loads the guest again, and uninstalling the guest unloads it."""
    host, _ = adapter_host(node_cluster, tmp_path)  # as the test before left it, or installed now
    # the 2-core node holds vLLM and the guest's training only without LlamaBoard (the tests before used it)
    node_cluster.uninstall(FACTS.releases["webui"])

    guest = variant(tmp_path, "tiny-guest", as_guest_of_tiny_cpu)
    guest_facts, host_facts = derive(load_spec(guest)), derive(load_spec(host))
    assert set(guest_facts.releases) == {"train", "adapter"}, "no vLLM of its own"
    result = node_cluster.lfk("run", str(guest), "--timeout", "900", timeout=1500)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "adapter: helm test passed: its pod sent a chat completion" in result.stdout, result.stdout
    assert (
        "is served as 'tiny-guest' by tiny-cpu's vLLM (the adapter answered its helm test)" in result.stdout
    )
    job_log = node_cluster.kubectl("-n", NAMESPACE, "logs", "-l",
                                   f"{kube.INSTANCE}=tiny-guest-adapter,{kube.COMPONENT}=adapter").stdout  # fmt: skip
    assert "is loaded on every running replica" in job_log, job_log
    registry = local(node_cluster.storage, host_facts.adapter_registry or "")
    assert json.loads((registry / "tiny-guest.json").read_text())["path"] == guest_facts.output_dir

    def vllm_pods() -> list[dict[str, Any]]:
        selector = {kube.INSTANCE: host_facts.releases["vllm"], kube.COMPONENT: "vllm"}
        return [p for p in node_cluster.pods(selector) if p["status"].get("phase") == "Running"]

    [pod] = vllm_pods()
    models = served_models(node_cluster, host)
    assert models["tiny-guest"]["root"] == guest_facts.output_dir, models
    assert models["tiny-cpu"]["root"] == host_facts.output_dir, models
    with PortForward(node_cluster, host, "vllm") as forward:
        for name in ("tiny-cpu", "tiny-guest"):
            answer = http_json(f"{forward.url}/v1/chat/completions", {
                "model": name, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4,
            }, api_key=API_KEY)  # fmt: skip
            assert answer["model"] == name and answer["choices"][0]["message"]["content"] is not None
    sidecar = node_cluster.kubectl(
        "-n", NAMESPACE, "logs", pod["metadata"]["name"], "-c", "adapter-sync"
    ).stdout
    assert f"loaded tiny-guest from {guest_facts.output_dir}" in sidecar, sidecar

    # a replica that restarts loads the registered adapters again
    node_cluster.kubectl("-n", NAMESPACE, "delete", "pod", pod["metadata"]["name"], "--wait=false")
    wait_for("a new vLLM pod, ready", lambda: [
        p for p in vllm_pods() if p["metadata"]["name"] != pod["metadata"]["name"]
        and kube.is_true(p, "Ready")
    ], 600, 2)  # fmt: skip
    wait_for(
        "tiny-guest loaded on the new pod", lambda: "tiny-guest" in served_models(node_cluster, host), 120, 2
    )

    uninstall = node_cluster.helm("uninstall", "tiny-guest-adapter", "-n", NAMESPACE, "--wait", timeout=300)
    assert uninstall.returncode == 0, uninstall.stdout + uninstall.stderr
    assert not (registry / "tiny-guest.json").exists()
    models = served_models(node_cluster, host)
    assert "tiny-guest" not in models and "tiny-cpu" in models, models


def test_lfk_exec_runs_a_command_in_a_pod_like_the_trainings(
    node_cluster: NodeCluster, tiny_run: dict[str, Any]
) -> None:
    script = "head -c 0 /config/train.yaml && ls /storage/models && echo user=$USER && exit 7"
    result = node_cluster.lfk("exec", str(TINY), "--", "bash", "-c", script, timeout=600)
    assert result.returncode == 7, result.stdout + result.stderr
    assert "tiny-llama" in result.stdout and "user=llamafactory" in result.stdout, result.stdout
    assert "(0 GPUs)" in result.stdout
    # LLaMA-Factory itself, with the training's config mounted
    version = node_cluster.lfk("exec", str(TINY), "--", "llamafactory-cli", "version", timeout=600)
    assert version.returncode == 0 and "0.9.5" in version.stdout, version.stdout + version.stderr
    # the pod and its ConfigMap are gone afterwards
    assert not node_cluster.pods({kube.COMPONENT: "exec"})
    left = node_cluster.kubectl(
        "-n", NAMESPACE, "get", "configmap", "-l", f"{kube.COMPONENT}=exec", "-o", "name"
    )
    assert left.stdout.strip() == "", left.stdout


DPO = TINY.parent.parent / "tiny-cpu-dpo" / "experiment.yaml"


def test_dpo_after_sft_trains_on_the_merged_model_passes_its_preference_gate_and_is_served(
    node_cluster: NodeCluster, tiny_run: dict[str, Any]
) -> None:
    """values/tiny-cpu-dpo in real pods: DPO on tiny-cpu's merged model (model.from). lfk run finds tiny-cpu's
    run finished, trains on the pairs with tiny-cpu's model as the reference, merges, the gate compares the
    preference accuracy of both models on the pairs, and vLLM serves the result (helm test). tiny-cpu's vLLM
    and LlamaBoard are uninstalled first: the real node has two cores."""
    node_cluster.uninstall(FACTS.releases["vllm"], FACTS.releases["webui"])
    tiny.prepare(node_cluster.storage, DPO)
    dpo = derive(load_spec(DPO))
    assert dpo.base_model == FACTS.merged_dir
    started = time.monotonic()
    result = node_cluster.lfk("run", str(DPO), "--timeout", "900", "--pending-timeout", "180", timeout=1500)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines()[0] == (
            f"train: starts from tiny-cpu run {FACTS.run_id}: {FACTS.merged_dir} is there"
        ), result.stdout
        assert "vllm: helm test passed" in result.stdout, result.stdout
        assert dpo.eval_scores
        scores = json.loads(local(node_cluster.storage, dpo.eval_scores).read_text())
        assert scores["metric"] == "preference-accuracy" and scores["passed"], scores
        assert scores["base"]["pairs"] == scores["tuned"]["pairs"] == 16
        print(
            f"DPO after SFT in real pods: {time.monotonic() - started:.0f} s; preference accuracy "
            f"{scores['base']['preference-accuracy']:.1f} (tiny-cpu) -> {scores['tuned']['preference-accuracy']:.1f}"
        )
    finally:
        node_cluster.uninstall(*dpo.releases.values())
