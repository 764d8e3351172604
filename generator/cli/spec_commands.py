"""lfk validate | render | describe: spec in, problems or values out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..core.experiment import Experiment, load_experiment
from ..core.problems import Problem, errors
from ..errors import SpecError
from .output import Failed, print_problems

if TYPE_CHECKING:
    from ..checks.deep import Checker
    from ..core.render import Rendered

specs_argument = click.argument("specs", nargs=-1, required=True, metavar="SPEC...")


def load_and_check(
    path: str, deep: bool = False, storage_root: Path | None = None, checker: Checker | None = None
) -> tuple[Experiment | None, list[Problem]]:
    """The experiment, loaded once, and its schema + cross-field problems (+ LLaMA-Factory's own checks with
    deep, in the checker's child when given, + the storage's with a storage root); the experiment is None when
    its spec could not be loaded."""
    try:
        experiment = load_experiment(path)
    except SpecError as exc:
        return None, exc.problems
    problems = list(experiment.problems)
    if not experiment.valid:
        return experiment, problems
    if deep:
        from ..checks.deep import deep_problems

        problems += deep_problems(experiment.spec, storage_root, experiment.facts, checker)
    elif storage_root is not None:
        from ..checks.storage import storage_problems

        problems += storage_problems(experiment.spec, storage_root, experiment.facts)
    return experiment, problems


def load_valid(path: str) -> Experiment:
    """An experiment without errors (warnings are not shown); its errors printed and Failed otherwise."""
    experiment, problems = load_and_check(path)
    print_problems(path, errors(problems))
    if experiment is None or not experiment.valid or errors(problems):
        raise Failed()
    return experiment


@click.command("validate")
@specs_argument
@click.option(
    "--deep", is_flag=True, help="Also run the configs through the installed LLaMA-Factory (imports torch)."
)
@click.option(
    "--storage-root",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Where /storage is mounted here: also check the datasets (registered, usable) and the model's template.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print problems only.")
def validate_cmd(specs: tuple[str, ...], deep: bool, storage_root: Path | None, quiet: bool) -> None:
    """Check experiment specs: the schema, then every cross-field rule. Warnings do not fail."""
    import contextlib

    failed = False
    with contextlib.ExitStack() as stack:
        checker = None
        if deep:  # one LLaMA-Factory child for every spec
            from ..checks.deep import Checker

            checker = stack.enter_context(Checker())
        for path in specs:
            experiment, problems = load_and_check(path, deep, storage_root, checker)
            print_problems(path, problems)
            if errors(problems) or experiment is None or not experiment.valid:
                failed = True
            elif not quiet:
                facts = experiment.facts
                click.echo(
                    f"{path}: valid (run {facts.run_id}; releases {', '.join(facts.releases.values())})"
                )
    if failed:
        raise Failed()


@click.command("render")
@specs_argument
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Write here instead of next to the spec."
)
@click.option(
    "--check", is_flag=True, help="Write nothing; exit 1 with a diff when the committed values are stale."
)
@click.option("--stdout", "to_stdout", is_flag=True, help="Print the values instead of writing them.")
@click.option(
    "--gitops",
    "gitops_kinds",
    multiple=True,
    type=click.Choice(["argocd", "flux", "helmfile"]),
    help="Also write what a controller needs to apply the releases in order: argocd.yaml, flux.yaml, helmfile.yaml.",
)
@click.option("--repo", help="With --gitops argocd|flux: the Git URL of the repository holding values/.")
@click.option("--revision", default="main", show_default=True, help="Branch, tag or commit of --repo.")
@click.option(
    "--chart",
    "chart_ref",
    default="git",
    show_default=True,
    help="Where controllers get the chart: `git` (charts/llama-factory of --repo; helmfile: the local path) "
    "or oci://HOST/PATH/llama-factory (at the chart's version).",
)
def render_cmd(
    specs: tuple[str, ...], out: Path | None, check: bool, to_stdout: bool, gitops_kinds: tuple[str, ...],
    repo: str | None, revision: str, chart_ref: str,
) -> None:  # fmt: skip
    """Render the Helm values of every enabled release (webui, train, merge, eval, vllm, adapter) of each spec."""
    if out and len(specs) > 1:
        raise click.UsageError("--out takes a single SPEC")
    if set(gitops_kinds) & {"argocd", "flux"} and not repo:
        raise click.UsageError("--gitops argocd and flux need --repo (the Git repository holding values/)")
    if chart_ref != "git" and not chart_ref.startswith("oci://"):
        raise click.BadParameter("`git` or oci://HOST/PATH/llama-factory", param_hint="--chart")
    from ..core.render import render

    failed = False
    for path in specs:
        experiment, problems = load_and_check(path)
        print_problems(path, problems)
        if experiment is None or not experiment.valid or errors(problems):
            failed = True
            continue
        spec = experiment.spec
        out_dir = out or spec.folder
        try:
            rendered = render(spec, out_dir, experiment.facts)
        except SpecError as exc:
            print_problems(path, exc.problems)
            failed = True
            continue
        if gitops_kinds:
            rendered += gitops_files(
                experiment, rendered, out_dir, list(gitops_kinds), repo or "", revision, chart_ref
            )
        if to_stdout:
            for item in rendered:
                click.echo(f"---\n# {out_dir / (item.component + '.yaml')}\n{item.text}", nl=False)
            continue
        from ..core.write import write  # atomic writes and diffs: not for --stdout

        result = write(rendered, out_dir, check=check)
        if check:
            for diff in result.diffs:
                click.echo(diff, nl=False)
            if result.stale:
                click.secho(f"{path}: values are stale; run `lfk render {path}`", fg="red", err=True)
                failed = True
            else:
                click.echo(f"{path}: values are up to date")
        else:
            changed = [p.name for p in result.written] + [f"-{p.name}" for p in result.removed]
            click.echo(f"{path}: {'wrote ' + ', '.join(changed) if changed else 'unchanged'} in {out_dir}")
    if failed:
        raise Failed()


def gitops_files(
    experiment: Experiment,
    rendered: list[Rendered],
    out_dir: Path,
    kinds: list[str],
    repo: str,
    revision: str,
    chart_ref: str,
) -> list[Rendered]:
    import os

    import yaml

    from ..core import gitops
    from ..project import CHART_DIR

    spec = experiment.spec
    chart_version = ""
    if chart_ref.startswith("oci://"):
        chart_version = str(yaml.safe_load((CHART_DIR / "Chart.yaml").read_text(encoding="utf-8"))["version"])
    # the experiment's folder as a path inside the repository: lfk runs from the repository's root
    values_path = os.path.relpath(out_dir.resolve(), Path.cwd().resolve())
    source = gitops.Source(
        repo, revision, values_path, "" if chart_ref == "git" else chart_ref, chart_version
    )
    source_spec = os.path.relpath(os.path.abspath(spec.source), os.path.abspath(out_dir))
    return gitops.render_gitops(kinds, experiment.facts, rendered, source, source_spec, out_dir, CHART_DIR)


@click.command()
@specs_argument
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def describe(specs: tuple[str, ...], output: str) -> None:
    """Summarise each spec: releases and their GPUs, the VRAM estimate part by part against the GPU, and the
    paths of the run (--output json: the same facts, machine-readable, one object per spec in a list)."""
    import json

    from ..core.describe import description, text

    failed = False
    found = []
    for path in specs:
        experiment, problems = load_and_check(path)
        if experiment is None or not experiment.valid or errors(problems):
            print_problems(path, problems)
            failed = True
            continue
        data = description(experiment.spec, experiment.facts)
        found.append({"spec": path, **data})
        if output == "text":
            click.echo("\n".join(text(data)))
            print_problems(path, problems)
    if output == "json":
        click.echo(json.dumps(found, indent=1))
    if failed:
        raise Failed()
