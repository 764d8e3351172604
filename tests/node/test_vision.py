"""A vision-language model in real pods: values/tiny-cpu-vision (a tiny Qwen2-VL-shaped model, random weights,
its processor built here) trained on four pictures, merged, and served by real vLLM on CPU, which takes one
image a request at the pixel budget the training scaled the pictures to; its `helm test` asks with a picture,
and `lfk chat --image` gets an answer."""

from __future__ import annotations

import base64
import io
import json
import re
import time
import urllib.error

import pytest

from generator.core.facts import derive
from generator.core.spec import load_spec
from generator.core.storage import local
from generator.ops import kube
from generator.project import REPO_ROOT
from tests.support import tiny

from .conftest import NodeCluster, PortForward, http_json

VISION = REPO_ROOT / "values" / "tiny-cpu-vision" / "experiment.yaml"
RED = VISION.parent / "data" / "img" / "red.png"


def picture(side: int) -> str:
    """A side x side PNG as the data: URL an OpenAI chat message carries."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (255, 0, 0)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def ask(url: str, model: str, *images: str) -> dict[str, object]:
    content = [{"type": "text", "text": "What is on the picture?"}]
    content += [{"type": "image_url", "image_url": {"url": image}} for image in images]
    return http_json(f"{url}/v1/chat/completions", {  # type: ignore[no-any-return]
        "model": model, "max_tokens": 4, "messages": [{"role": "user", "content": content}],
    })  # fmt: skip


def test_a_vision_language_model_tuned_on_pictures_is_served_and_answers_about_one(
    node_cluster: NodeCluster,
) -> None:
    tiny.prepare(node_cluster.storage, VISION)
    facts = derive(load_spec(VISION))
    started = time.monotonic()
    result = node_cluster.lfk(
        "run", str(VISION), "--timeout", "900", "--pending-timeout", "180", timeout=1500
    )
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "vllm: helm test passed" in result.stdout, result.stdout
        ran = time.monotonic() - started
        assert facts.merged_dir
        merged = local(node_cluster.storage, facts.merged_dir)
        processor = {"processor_config.json", "preprocessor_config.json"} & {p.name for p in merged.iterdir()}
        assert processor, sorted(p.name for p in merged.iterdir())
        # helm test asked again with a picture, which reached the prompt
        [test_pod] = node_cluster.pods({kube.INSTANCE: facts.releases["vllm"], kube.COMPONENT: "vllm-test"})
        log = node_cluster.log(test_pod["metadata"]["name"])
        # at least its 4 image tokens (32 x 32 pixels is scaled up to 56 x 56, the budget's least), and vLLM's
        # markers around them
        took = re.search(r"chat test: a 32 x 32 picture took (\d+) prompt tokens and was answered", log)
        assert took and int(took.group(1)) >= 4, log
        # vLLM started with the media the training had: one image, no video, the training's pixel budget
        [pod] = node_cluster.pods({kube.INSTANCE: facts.releases["vllm"], kube.COMPONENT: "vllm"})
        args = pod["spec"]["containers"][0]["args"]
        assert '--limit-mm-per-prompt={"image":1,"video":0}' in args, args
        assert '--mm-processor-kwargs={"max_pixels":3136,"min_pixels":1024}' in args, args

        with PortForward(node_cluster, VISION, "vllm") as forward:
            # the budget, 56 x 56 pixels, is 4 x 4 patches of 14, merged 2 x 2 into 4 image tokens; a picture of
            # 112 x 112 is scaled down to the same 4, as the training scaled it (at the processor's own budget,
            # 112 x 112, it would be 16)
            small, large = (ask(forward.url, facts.served_name, picture(side)) for side in (56, 112))
            assert small["usage"]["prompt_tokens"] == large["usage"]["prompt_tokens"], (small, large)  # type: ignore[index]
            with pytest.raises(urllib.error.HTTPError) as refused:
                ask(forward.url, facts.served_name, picture(112), picture(112))
            assert refused.value.code == 400
            assert "at most 1 image" in refused.value.read().decode().lower()
            check = node_cluster.check_after(VISION, forward.url)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "✓ vLLM takes a picture into the prompt and answers about it" in check.stdout, check.stdout

        chat = node_cluster.lfk(
            "chat", str(VISION), "--image", str(RED), "-m", "What is on the picture?", "--max-tokens", "8",
            timeout=300,
        )  # fmt: skip
        assert chat.returncode == 0, chat.stdout + chat.stderr
        assert chat.stdout.strip(), chat.stderr
        print(
            f"vision-language model tuned on pictures and served in real pods: lfk run {ran:.0f} s; "
            f"an image of 56 x 56 or 112 x 112 is {small['usage']['prompt_tokens']} prompt tokens; "  # type: ignore[index]
            f"lfk chat --image answered {json.dumps(chat.stdout.strip()[:60])}"
        )
    finally:
        node_cluster.uninstall(*facts.releases.values())
