"""lfk chat (ops/chat.py) over the OpenAI API: turns keep their history, and --image sends image files with
the first turn in the OpenAI message format (a data: URL beside the text), as vision-language models served by
vLLM take them; a file that is not an image is refused before anything is sent. The server here records the
requests (tests/support/fakeserver.py); the node tier talks to real vLLM."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from generator.cli import cli
from tests.support.fakeserver import serve

TINY = Path(__file__).resolve().parents[2] / "values" / "tiny-cpu" / "experiment.yaml"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


def answer(body: dict[str, Any]) -> dict[str, Any]:
    return {"choices": [{"message": {"role": "assistant", "content": f"turn {len(body['messages'])}"}}]}


def test_an_image_goes_with_the_first_turn_as_a_data_url(tmp_path: Path) -> None:
    image = tmp_path / "receipt.png"
    image.write_bytes(PNG)
    with serve({"/v1/chat/completions": answer}) as (url, requests):
        result = CliRunner().invoke(
            cli,
            [
                "chat",
                str(TINY),
                "--vllm-url",
                url,
                "--image",
                str(image),
                "-m",
                "What is on it?",
                "-m",
                "Thanks",
            ],
            env={"VLLM_API_KEY": "k"},
        )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["> What is on it?", "turn 1", "> Thanks", "turn 3"]
    first, second = (r["body"]["messages"] for r in requests)
    assert first[0]["content"] == [
        {"type": "text", "text": "What is on it?"},
        {
            "type": "image_url",
            "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()},
        },
    ]
    assert second[1:] == [{"role": "assistant", "content": "turn 1"}, {"role": "user", "content": "Thanks"}]
    assert requests[0]["auth"] == "Bearer k"


def test_a_file_that_is_not_an_image_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with serve({"/v1/chat/completions": answer}) as (url, requests):
        result = CliRunner().invoke(
            cli, ["chat", str(TINY), "--vllm-url", url, "--image", str(text), "-m", "Hi"]
        )
    assert result.exit_code == 1
    assert f"chat: {text} is not a PNG, JPEG, GIF, WebP or BMP image" in result.output
    assert "Traceback" not in result.output and requests == []
