"""lfk data validate | register | sync: the guide's "Walidacja datasetu" and "Rejestracja datasetu"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..checks import datasets
from .output import Failed


def parse_pairs(text: str | None, option: str) -> dict[str, str] | None:
    """`prompt=question,response=answer` -> a dict."""
    if not text:
        return None
    pairs = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise click.BadParameter(f"expected key=value[,key=value], got {item!r}", param_hint=option)
        pairs[key.strip()] = value.strip()
    return pairs


format_option = click.option(
    "--format",
    "formatting",
    type=click.Choice(["alpaca", "sharegpt"]),
    help="Data format (default alpaca, or the registered entry's).",
)
columns_option = click.option(
    "--columns",
    help="Column names where they differ from the defaults, e.g. prompt=question,response=answer.",
)
ranking_option = click.option(
    "--ranking",
    is_flag=True,
    default=None,
    help="Pairs of a chosen and a rejected answer (stages dpo and rm).",
)
stage_option = click.option(
    "--stage",
    type=click.Choice(datasets.STAGES),
    help="Check for this training stage (default: dpo for pairs, kto with a kto_tag column, else sft).",
)
tags_option = click.option(
    "--tags",
    help="ShareGPT role/content keys, e.g. role_tag=role,content_tag=content,user_tag=user,assistant_tag=assistant.",
)


@click.group()
def data() -> None:
    """Check data files against LLaMA-Factory's rules and register them in dataset_info.json."""


def print_report(report: datasets.Report) -> None:
    click.echo(
        f"{report.path}: {report.total} examples ({report.formatting}): {report.valid} valid, {len(report.dropped)} dropped"
    )
    for index, reason in report.dropped:
        click.secho(f"  dropped example {index}: {reason}", fg="yellow", err=True)
    for index, reason in report.fatal:
        click.secho(f"  example {index} stops training: {reason}", fg="red", err=True)
    for note in report.notes:
        click.secho(f"  note: {note}", fg="yellow", err=True)
    if report.first:
        click.echo("  first example:")
        for message in report.first:
            content = message["content"].replace("\n", " ")
            click.echo(f"    {message['role']:>11}: {content[:200]}{'...' if len(content) > 200 else ''}")


@data.command("validate")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@format_option
@columns_option
@tags_option
@ranking_option
@stage_option
@click.option(
    "--media-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the images, videos and audio the examples name are (default: the file's folder).",
)
@click.option(
    "--dataset",
    "name",
    help="Read format, columns and tags from this entry of the dataset_info.json beside the file.",
)
def validate_data(
    file: Path,
    formatting: str | None,
    columns: str | None,
    tags: str | None,
    ranking: bool | None,
    stage: str | None,
    media_dir: Path | None,
    name: str | None,
) -> None:
    """Report how many examples LLaMA-Factory will train on at a stage, and why the others are dropped. Never
    rewrites the file. Exit 1 when an example is dropped or the file cannot be used."""
    entry: dict[str, Any] = {}
    if name:
        info = datasets.read_dataset_info(file.parent)
        if name not in info:
            raise Failed(f"{file.parent / datasets.DATA_CONFIG}: no dataset {name!r}")
        entry = dict(info[name])
    if formatting:
        entry["formatting"] = formatting
    if (parsed := parse_pairs(columns, "--columns")) is not None:
        entry["columns"] = parsed
    if (parsed_tags := parse_pairs(tags, "--tags")) is not None:
        entry["tags"] = parsed_tags
    if ranking is not None:
        entry["ranking"] = ranking
    attrs = datasets.Attrs.of_entry(entry)
    report = datasets.check(file, attrs, stage or datasets.natural_stage(attrs), media_dir)
    print_report(report)
    if report.dropped or report.fatal or not report.valid:
        raise Failed()


@data.command("register")
@click.argument("dataset_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("name")
@click.argument("file")
@format_option
@columns_option
@tags_option
@ranking_option
@stage_option
def register_data(
    dataset_dir: Path,
    name: str,
    file: str,
    formatting: str | None,
    columns: str | None,
    tags: str | None,
    ranking: bool | None,
    stage: str | None,
) -> None:
    """Add or update NAME in DATASET_DIR/dataset_info.json (atomically, other entries kept). FILE is relative
    to DATASET_DIR; it is checked first (for --stage) and nothing is written when no example would be usable."""
    entry = datasets.entry_for(
        file,
        formatting or "alpaca",
        parse_pairs(columns, "--columns"),
        parse_pairs(tags, "--tags"),
        bool(ranking),
    )
    _register(dataset_dir, name, entry, stage=stage)


def _register(
    dataset_dir: Path,
    name: str,
    entry: dict[str, object],
    bound: Path | None = None,
    stage: str | None = None,
) -> None:
    """Check and register one entry; its file must lie in `bound` (the dataset directory unless given)."""
    path = datasets.data_file(dataset_dir, str(entry["file_name"]), bound)
    attrs = datasets.Attrs.of_entry(entry)
    report = datasets.check(path, attrs, stage or datasets.natural_stage(attrs), media_dir=dataset_dir)
    print_report(report)
    if not report.valid or report.fatal:
        raise Failed(
            f"{name}: not registered: {'LLaMA-Factory would stop on it' if report.fatal else 'no usable example'}"
        )
    changed = datasets.register(dataset_dir, name, entry)
    where = dataset_dir / datasets.DATA_CONFIG
    click.echo(f"{where}: {'registered' if changed else 'already registered'} {name}: {json.dumps(entry)}")


@data.command("sync")
@click.argument("spec")
@click.option(
    "--storage-root",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Where /storage is mounted here.",
)
@click.option(
    "--bundled",
    is_flag=True,
    help="First copy the files of LLaMA-Factory's bundled demo sets the spec registers (alpaca_en_demo, ...) "
    "and the storage lacks, from llamafactory's source package (pip downloads it once).",
)
def sync_data(spec: str, storage_root: Path, bundled: bool) -> None:
    """Register every entry of the spec's data.register in its dataset directory. Every file read and the
    dataset directory itself must lie on the storage root, symlinks followed."""
    from ..core.storage import local
    from .spec_commands import load_valid

    loaded = load_valid(spec).spec
    data_dir = local(storage_root, loaded.data["data"]["dir"])
    root = storage_root.resolve()
    if data_dir.resolve() != root and root not in data_dir.resolve().parents:
        raise Failed(f"{data_dir} leads to {data_dir.resolve()}, outside the storage root {root}")
    entries = loaded.data["data"]["register"]
    if not entries:
        click.echo(f"{spec}: data.register is empty; nothing to do")
    # a set the spec reads is checked as the data it must be; the others by their own kind
    stages = {name: stage for _, name, stage in datasets.spec_datasets(loaded.data)}
    if bundled:
        copy_bundled(entries, data_dir)
    for name, entry in entries.items():
        _register(data_dir, name, datasets.spec_entry(entry), bound=root, stage=stages.get(name))


def copy_bundled(entries: dict[str, dict[str, object]], data_dir: Path) -> None:
    """The files of the bundled demo sets among entries (registered as LLaMA-Factory has them) that data_dir
    lacks, from the llamafactory source package; an existing file is never replaced."""
    from ..checks import llamafactory_source
    from ..core import bundled
    from ..core.write import atomic_write

    demo = bundled.datasets()
    wanted = {n: str(e["file"]) for n, e in entries.items() if n in demo and e.get("file") == demo[n]["file"]}
    missing = {n: f for n, f in wanted.items() if not (data_dir / f).exists()}
    for name in sorted(set(entries) & set(demo) - set(wanted)):
        click.echo(
            f"{name}: named like LLaMA-Factory's bundled demo set, but registered as another file; not copied"
        )
    if not missing:
        if wanted:
            click.echo(f"bundled demo sets {', '.join(sorted(wanted))}: already on the storage")
        return
    try:
        sdist = llamafactory_source.source_package()
        data_dir.mkdir(parents=True, exist_ok=True)
        for name, file_name in sorted(missing.items()):
            data = bundled.read_file(sdist, file_name)
            atomic_write(data_dir / file_name, data)
            click.echo(f"{data_dir / file_name}: copied {name} from {sdist.name}")
            media = [m for m in bundled.media_files(data, demo[name]) if not (data_dir / m).exists()]
            for relative in media:  # mllm_demo's pictures, videos and sounds
                content = bundled.read_file(sdist, relative)  # KeyError for a path leaving the data folder
                (data_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                atomic_write(data_dir / relative, content)
            if media:
                click.echo(f"{data_dir}: copied the {len(media)} media files {name} names")
    except KeyError as exc:  # the package lacks the file: its message alone, not its repr
        raise Failed(f"bundled demo sets: {exc.args[0]}") from None
    except (RuntimeError, OSError) as exc:
        raise Failed(f"bundled demo sets: {exc}") from None
