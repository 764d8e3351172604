"""What only the storage can tell about a spec, read through a locally mounted storage root: the datasets are
registered and usable, the model is there and speaks the template the spec trains with. Light: no torch."""

from __future__ import annotations

from pathlib import Path

from ..core.facts import Facts, derive
from ..core.models import template_from_model_dir
from ..core.problems import Problem
from ..core.spec import Spec
from ..core.storage import local
from ..errors import DataError
from . import datasets


def storage_problems(spec: Spec, storage_root: Path, facts: Facts | None = None) -> list[Problem]:
    """What only the storage can tell: datasets registered and usable, the model's own template."""
    problems = []
    data_dir = local(storage_root, spec.data["data"]["dir"])
    try:
        info = datasets.read_dataset_info(data_dir)
    except DataError as exc:
        return [Problem("$.data.dir", str(exc))]
    for path, name, stage in datasets.spec_datasets(spec.data):
        entry = info.get(name)
        if entry is None:
            pending = name in spec.data["data"]["register"]
            hint = (
                "run `lfk data sync SPEC --storage-root ...`"
                if pending
                else "register it with `lfk data register`"
            )
            problems.append(
                Problem(path, f"dataset {name!r} is not in {data_dir / datasets.DATA_CONFIG}", hint)
            )
            continue
        if "file_name" not in entry:
            continue  # hub datasets are fetched at training time
        try:
            # an entry written by anyone: what it names must be on the storage (no absolute path, `..` or
            # symlink leading out)
            file = datasets.data_file(data_dir, str(entry["file_name"]), bound=storage_root)
            report = datasets.check(file, datasets.Attrs.of_entry(entry), stage, media_dir=data_dir)
        except DataError as exc:
            problems.append(Problem(path, f"{name}: {exc}"))
            continue
        if report.fatal:
            index, reason = report.fatal[0]
            problems.append(
                Problem(
                    path,
                    f"{name}: {len(report.fatal)} example(s) would stop training, the first ({index}): {reason}",
                    "run `lfk data validate`",
                )
            )
        elif not report.valid:
            problems.append(
                Problem(
                    path,
                    f"{name}: none of {report.total} examples is usable for stage {stage}",
                    f"run `lfk data validate --stage {stage}`",
                )
            )
        elif report.dropped:
            problems.append(
                Problem(
                    path,
                    f"{name}: {len(report.dropped)} of {report.total} examples will be dropped",
                    "run `lfk data validate`",
                    "warning",
                )
            )
    model_dir = local(storage_root, spec.data["model"]["path"])
    expected = template_from_model_dir(model_dir)
    given = (facts or derive(spec)).template
    if expected and given and expected != given:
        problems.append(
            Problem(
                "$.model.template",
                f"the model in {model_dir} uses the {expected!r} template, not {given!r}",
                f"set template: {expected}",
            )
        )
    return problems
