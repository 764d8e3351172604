"""lfk new NAME: a new experiment folder from the guide's questions (model, data format, method, GPU), asked
interactively with defaults, or given as flags; validated before anything is written."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..core.experiment import experiment_of
from ..core.render import render
from ..core.scaffold import FORMATS, METHODS, Answers, spec_text
from ..core.spec import spec_from_text
from ..core.write import atomic_write, write
from ..errors import SpecError
from ..project import SPEC_SCHEMA
from .output import Failed, print_problems

QUESTIONS = {
    "model": (
        "Base model: a Hugging Face id (downloaded on first use) or a folder under /storage",
        "meta-llama/Llama-3.1-8B-Instruct",
    ),
    "data_format": ("Data format", "alpaca"),
    "dataset": ("Dataset name (as registered in dataset_info.json)", "my_dataset"),
    "data_file": ("Its file, in the dataset directory", "my_dataset.json"),
    "method": ("Method: lora (16-bit base), qlora (4-bit base, least VRAM), oft, full, freeze", "lora"),
    "gpu_product": ("GPU (nvidia.com/gpu.product)", "NVIDIA-A100-SXM4-80GB"),
    "gpus": ("GPUs for training", 1),
    "namespace": ("Namespace", "llm-training"),
    "storage": (
        "Storage: NFS as server:/path, or the name of an existing claim",
        "nfs.example.internal:/exports/llm",
    ),
}
CHOICES = {"data_format": click.Choice(FORMATS), "method": click.Choice(METHODS)}


@click.command("new")
@click.argument("name")
@click.option("--dir", "values_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("values"), show_default=True,
              help="Where experiment folders live.")  # fmt: skip
@click.option("--model", help=QUESTIONS["model"][0])
@click.option("--data-format", type=click.Choice(FORMATS), help=QUESTIONS["data_format"][0])
@click.option("--dataset", help=QUESTIONS["dataset"][0])
@click.option("--data-file", help=QUESTIONS["data_file"][0])
@click.option("--method", type=click.Choice(METHODS), help=QUESTIONS["method"][0])
@click.option("--gpu-product", help=QUESTIONS["gpu_product"][0])
@click.option("--gpus", type=int, help=QUESTIONS["gpus"][0])
@click.option("--namespace", help=QUESTIONS["namespace"][0])
@click.option("--storage", help=QUESTIONS["storage"][0])
@click.option("--yes", "-y", is_flag=True, help="Take the default of every question not given as a flag.")
def new_cmd(name: str, values_dir: Path, yes: bool, **given: object) -> None:
    """Scaffold values/NAME/experiment.yaml (and its values files) from the guide's questions. Flags answer
    them; the rest are asked, or take their defaults with --yes. Nothing is written unless the spec is valid."""
    folder = values_dir / name
    if (folder / "experiment.yaml").exists():
        raise Failed(f"{folder / 'experiment.yaml'} exists already")
    answers = {}
    for key, (question, default) in QUESTIONS.items():
        value = given.get(key)
        if value is None:
            value = (
                default
                if yes
                else click.prompt(question, default=default, type=CHOICES.get(key, type(default)))
            )
        answers[key] = value
    text = spec_text(Answers(name=name, **answers), schema_for(folder))  # type: ignore[arg-type]
    source = validate_and_write(folder, text)
    click.echo(
        f"next: put {answers['data_file']} into the dataset directory (lfk data validate / sync), then lfk validate {source}"
    )


def schema_for(folder: Path) -> str:
    """The schema as the editor finds it from a new file in folder (yaml-language-server's modeline)."""
    return os.path.relpath(SPEC_SCHEMA.resolve(), folder.resolve())


def validate_and_write(folder: Path, text: str) -> str:
    """folder/experiment.yaml with text and its values files, when the spec is valid; else its problems and
    Failed, with nothing written. The spec's path."""
    source = str(folder / "experiment.yaml")
    try:
        spec = spec_from_text(text, source)
    except SpecError as exc:
        print_problems(source, exc.problems)
        raise Failed(f"{source}: not written") from None
    experiment = experiment_of(spec)
    print_problems(source, experiment.problems)
    if not experiment.valid:
        raise Failed(f"{source}: not written")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "experiment.yaml", text)
    written = write(render(spec, facts=experiment.facts), folder)
    click.echo(f"wrote {source} and {', '.join(p.name for p in written.written)}")
    return source
