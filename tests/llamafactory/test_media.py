"""Images in the data, for real: a tiny Qwen2-VL shaped model (random weights, its processor built here,
tests/support/tinymodel.py) trained by the chart's scripts from a rendered experiment on a few pictures
(ShareGPT with an images column, `data.media` scaling them), the images tokenized once by the tokenize hook
through the model's processor; `lfk data validate`'s media checks agree with what LLaMA-Factory stops on."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from generator.checks import datasets
from tests.support import smoke, tinymodel

COLOURS = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 160, 0), "yellow": (255, 255, 0)}
ENTRY = {
    "file": "shapes.json", "format": "sharegpt", "columns": {"messages": "messages", "images": "images"},
    "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
}  # fmt: skip


def pictures(data_dir: Path) -> list[dict[str, object]]:
    """A square of each colour as a PNG, and a question about each; the rows, written to shapes.json."""
    from PIL import Image

    (data_dir / "img").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    for name, rgb in COLOURS.items():
        Image.new("RGB", (64, 64), rgb).save(data_dir / "img" / f"{name}.png")
        rows.append({
            "messages": [{"role": "user", "content": "<image>What is on the picture?"},
                         {"role": "assistant", "content": f"a {name} square"}],
            "images": [f"img/{name}.png"],
        })  # fmt: skip
    (data_dir / "shapes.json").write_text(json.dumps(rows * 4), encoding="utf-8")
    return rows


@pytest.fixture(scope="module")
def vision(tmp_path_factory: pytest.TempPathFactory) -> smoke.Workspace:
    root = tmp_path_factory.mktemp("media")
    pictures(root / "data")
    spec = yaml.safe_load(smoke.SPEC)
    spec.update(
        name="vision", model={"path": "/storage/models/tiny-vl", "template": "qwen2_vl", "parametersB": 0.001}
    )
    spec["data"].update(datasets=["shapes"], media={"imageMaxPixels": 112 * 112, "imageMinPixels": 56 * 56})
    spec["data"]["register"]["shapes"] = ENTRY
    spec["training"].update(maxSteps=4, saveSteps=2)
    spec.pop("evaluate")
    return smoke.prepare(root, yaml.safe_dump(spec), build=tinymodel.build_vision_model)


def test_a_vision_language_model_trains_on_pictures_from_the_rendered_config(vision: smoke.Workspace) -> None:
    config = yaml.safe_load(vision.train_config.read_text())
    assert (config["template"], config["image_max_pixels"], config["image_min_pixels"]) == (
        "qwen2_vl",
        12544,
        3136,
    )
    report = datasets.check(
        vision.root / "data" / "shapes.json", datasets.Attrs.of_entry(datasets.spec_entry(ENTRY))
    )
    assert (report.valid, report.media, report.fatal) == (16, {"images": 16}, [])
    log = vision.root / "vision.log"
    assert smoke.tokenize(vision, log) == 0, log.read_text()[-3000:]
    assert smoke.train(vision, log) == 0, log.read_text()[-3000:]
    assert [e["current_steps"] for e in smoke.trainer_log(vision)][-1] == 4
    assert (vision.output_dir / "adapter_model.safetensors").is_file()


def test_a_missing_picture_stops_llamafactory_as_the_check_says(
    vision: smoke.Workspace, tmp_path: Path
) -> None:
    """The check counts a missing image as fatal; LLaMA-Factory's own tokenizing stops on it."""
    rows = json.loads((vision.root / "data" / "shapes.json").read_text())
    rows[0]["images"] = ["img/missing.png"]
    (vision.root / "data" / "broken.json").write_text(json.dumps(rows), encoding="utf-8")
    datasets.register(
        vision.root / "data", "broken", {**datasets.spec_entry(ENTRY), "file_name": "broken.json"}
    )
    report = datasets.check(
        vision.root / "data" / "broken.json", datasets.Attrs.of_entry(datasets.spec_entry(ENTRY))
    )
    assert [index for index, _ in report.fatal] == [0] and "img/missing.png is not in" in report.fatal[0][1]
    config = yaml.safe_load(vision.train_config.read_text())
    config.update(dataset="broken", output_dir=str(tmp_path / "out"))
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(config))
    log = tmp_path / "broken.log"
    command = [
        sys.executable,
        str(smoke.SCRIPTS / "tokenize_once.py"),
        "run",
        str(broken),
        str(tmp_path / "tok"),
    ]
    assert smoke.run_logged(command, smoke.environment(), log, 600) != 0
    assert "missing.png" in log.read_text(), log.read_text()[-3000:]
