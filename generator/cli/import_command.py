"""lfk import CONFIG --name NAME: an experiment folder from a LLaMA-Factory training config (core/importer.py),
with a line for each argument the cluster decides instead; validated before anything is written."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from ..core.importer import import_config
from ..core.scaffold import MODELINE, storage_block
from ..errors import SpecError
from .new_command import QUESTIONS, schema_for, validate_and_write
from .output import Failed, print_problems

MAX_CONFIG = 1 << 20


def comment(text: str) -> str:
    """text for one comment line: a line break or other control character in a value of the config (or its
    file name) is written escaped, so it can never end the comment and start YAML of its own."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@click.command("import")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="The experiment's name (its folder, its releases).")
@click.option("--output", "folder", type=click.Path(file_okay=False, path_type=Path),
              help="The experiment's folder  [default: values/NAME]")  # fmt: skip
@click.option(
    "--namespace", default=QUESTIONS["namespace"][1], show_default=True, help=QUESTIONS["namespace"][0]
)
@click.option("--storage", default=QUESTIONS["storage"][1], show_default=True, help=QUESTIONS["storage"][0])
@click.option(
    "--gpu-product", default=QUESTIONS["gpu_product"][1], show_default=True, help=QUESTIONS["gpu_product"][0]
)
@click.option("--gpus", type=int, default=QUESTIONS["gpus"][1], show_default=True, help=QUESTIONS["gpus"][0])
def import_cmd(
    config: Path, name: str, folder: Path | None, namespace: str, storage: str, gpu_product: str, gpus: int
) -> None:
    """Turn a LLaMA-Factory training config (the YAML of `llamafactory-cli train`) into values/NAME/experiment.yaml
    and its values files: every argument to its spec field or to llamafactoryArgs; what the cluster decides
    (output folder, overwriting, reporting) changed, one line each. Nothing is written unless the spec is valid."""
    folder = folder or Path("values") / name
    if (folder / "experiment.yaml").exists():
        raise Failed(f"{folder / 'experiment.yaml'} exists already")
    source = str(config)
    if config.stat().st_size > MAX_CONFIG:
        raise Failed(f"{source}: larger than {MAX_CONFIG} bytes: not a training config")
    try:
        document = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise Failed(f"{source}: not YAML: {exc}") from None
    if not isinstance(document, dict) or not all(isinstance(k, str) for k in document):
        raise Failed(f"{source}::$: a LLaMA-Factory config is a mapping of argument names to values")
    try:
        imported = import_config(document, name, source)
    except SpecError as exc:
        print_problems(source, exc.problems)
        raise Failed(f"{source}: not imported") from None
    spec = imported.spec
    spec["namespace"] = namespace
    spec["storage"] = storage_block(storage)
    spec["resources"] = {"gpus": gpus, "gpu": {"product": gpu_product}}
    order = (
        "name",
        "namespace",
        "storage",
        "model",
        "data",
        "method",
        "training",
        "distributed",
        "resources",
    )
    ordered = {k: spec[k] for k in order if k in spec} | {k: v for k, v in spec.items() if k not in order}
    body = yaml.safe_dump(ordered, sort_keys=False, default_flow_style=None, width=110)
    notes = "".join(f"#   {comment(note)}\n" for note in imported.notes)
    text = (
        MODELINE.format(schema=schema_for(folder))
        + f"# {comment(name)}: imported from {comment(config.name)} by `lfk import`; every key left out takes the "
        "schema's default.\n"
        + (f"# Changed on the way, because the cluster decides it:\n{notes}" if notes else "")
        + body
    )
    for note in imported.notes:
        click.echo(f"changed: {comment(note)}")
    written = validate_and_write(folder, text)
    click.echo(f"next: lfk validate {written}, lfk check {written}, lfk run {written}")
