"""What the deployed LLaMA-Factory version accepts, without importing it (and so without torch).

The details are a snapshot taken from the installed `llamafactory` package by `hack/snapshot-llamafactory.py`:
template names, the media each template's plugin takes (images, videos, audio), the model -> template table of its
web UI, and every legal config key. The llamafactory
test tier checks the snapshot against the installed package, so it cannot drift unnoticed.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from .contract import LLAMAFACTORY_VERSION

DATA_DIR = Path(__file__).resolve().parent / "data"
# how media in the data are prepared: LLaMA-Factory's arguments and their spec fields under data.media
MEDIA_ARGS = {
    "image_max_pixels": "imageMaxPixels",
    "image_min_pixels": "imageMinPixels",
    "video_max_pixels": "videoMaxPixels",
    "video_min_pixels": "videoMinPixels",
    "video_fps": "videoFps",
    "video_maxlen": "videoMaxlen",
    "audio_sampling_rate": "audioSamplingRate",
}
# the stages LLaMA-Factory trains, in its own order (FinetuningArguments.stage)
STAGES = ("pt", "sft", "rm", "ppo", "dpo", "kto")
# the dataset_info.json columns of each medium
MEDIA_COLUMNS = ("images", "videos", "audios")
# the snapshot of the version the chart deploys by default (the contract's)
SNAPSHOT_VERSION = LLAMAFACTORY_VERSION


@dataclass(frozen=True)
class LlamaFactoryInfo:
    version: str
    templates: frozenset[str]
    model_templates: dict[str, str]  # lower-cased hub id or model name -> template
    arguments: frozenset[str]  # legal keys of a train/export config
    defaults: dict[str, object]  # the value of each key a config leaves out (those with a plain default)
    media_templates: dict[
        str, tuple[str, ...]
    ]  # template -> the media its plugin takes: images, videos, audios


def snapshot_path(version: str = SNAPSHOT_VERSION) -> Path:
    return DATA_DIR / f"llamafactory-{version}.json"


@functools.cache
def info(version: str = SNAPSHOT_VERSION) -> LlamaFactoryInfo:
    with snapshot_path(version).open(encoding="utf-8") as f:
        raw = json.load(f)
    return LlamaFactoryInfo(
        version=raw["version"],
        templates=frozenset(raw["templates"]),
        model_templates=dict(raw["model_templates"]),
        arguments=frozenset(raw["arguments"]),
        defaults=dict(raw["defaults"]),
        media_templates={name: tuple(media) for name, media in raw["media_templates"].items()},
    )


def image_version(image: str) -> str | None:
    """`hiyouga/llamafactory:0.9.5` -> `0.9.5`; None for latest, a digest only, or a non-version tag."""
    name = image.split("@", 1)[0]
    tail = name.rsplit("/", 1)[-1]
    if ":" not in tail:
        return None
    tag = tail.split(":", 1)[1].removeprefix("v")
    head = tag.split("-", 1)[0]
    return head if head.replace(".", "").isdigit() and head.count(".") >= 1 else None


def installed_package_dir() -> Path | None:
    """Where the installed llamafactory package lives, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("llamafactory")
    return Path(spec.origin).parent if spec and spec.origin else None


def _model_templates_from_source(constants_py: Path) -> dict[str, str]:
    """Every model of every `register_model_group(models=..., template=...)` call, by name and by hub id.

    Read from the source rather than from DEFAULT_TEMPLATE, which keeps only chat models: base models of a
    family are fine-tuned with the family's template too.
    """
    import ast

    table: dict[str, str] = {}
    tree = ast.parse(constants_py.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register_model_group"):
            continue
        kwargs = {k.arg: k.value for k in node.keywords}
        template = kwargs.get("template")
        models = kwargs.get("models")
        if not (isinstance(template, ast.Constant) and isinstance(models, ast.Dict)):
            continue
        for name, sources in zip(models.keys, models.values, strict=True):
            if isinstance(name, ast.Constant):
                table[str(name.value).lower()] = str(template.value)
            if isinstance(sources, ast.Dict):
                for value in sources.values:
                    if isinstance(value, ast.Constant):
                        table[str(value.value).lower()] = str(template.value)
    return table


def live_snapshot() -> dict[str, object]:
    """Read the facts from the installed package (imports llamafactory, so torch: seconds, not milliseconds)."""
    import dataclasses

    import llamafactory
    from llamafactory.data.template import TEMPLATES
    from llamafactory.hparams import (
        DataArguments,
        FinetuningArguments,
        GeneratingArguments,
        ModelArguments,
        TrainingArguments,
    )

    package = installed_package_dir()
    assert package is not None
    arguments: set[str] = set()
    defaults: dict[str, object] = {}
    for cls in (ModelArguments, DataArguments, TrainingArguments, FinetuningArguments, GeneratingArguments):
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            arguments.add(f.name)
            value = getattr(f.default, "value", f.default)  # an enum (lr_scheduler_type): its value
            if isinstance(value, (str, int, float, bool)) or value is None:
                defaults[f.name] = value
    media = {}
    for name, template in TEMPLATES.items():
        plugin = template.mm_plugin
        kinds = [
            kind for kind in ("image", "video", "audio") if getattr(plugin, f"{kind}_token", None) is not None
        ]
        if kinds:
            media[name] = [f"{kind}s" for kind in kinds]
    return {
        "version": llamafactory.__version__,
        "defaults": dict(sorted(defaults.items())),
        "media_templates": dict(sorted(media.items())),
        "templates": sorted(TEMPLATES),
        "model_templates": dict(
            sorted(_model_templates_from_source(package / "extras" / "constants.py").items())
        ),
        "arguments": sorted(arguments),
    }
