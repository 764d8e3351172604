"""Rules on paths: every spec path on the shared storage without `..`, and a merge target that replaces
nothing anyone else reads (the base model, the adapter, the data, a neighbouring experiment's folders)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from ..facts import Facts, neighbour_paths
from ..problems import Problem, json_path
from ..spec import Spec
from ..storage import MERGED_DIR, MODELS_DIR, STORAGE_ROOT, climbs, normalise, on_storage, within
from .registry import check

# LLaMA-Factory arguments that name a file or folder without saying so in a suffix
PATH_ARGS = {
    "resume_from_checkpoint",
    "fsdp_config",
    "new_special_tokens_config",
    "export_quantization_dataset",
}
PATH_ARG_SUFFIX = re.compile(r"(_dir|_path|_file|_folder|_logdir)$")


def _storage_paths(spec: Spec) -> Iterator[tuple[str, str]]:
    d = spec.data
    yield "$.model.path", d["model"]["path"]
    yield "$.data.dir", d["data"]["dir"]
    if "exportDir" in d["merge"]:
        yield "$.merge.exportDir", d["merge"]["exportDir"]
    if d["stage"]["type"] == "ppo":
        yield "$.stage.ppo.rewardModel.path", d["stage"]["ppo"]["rewardModel"]["path"]
    for key, value in d["llamafactoryArgs"].items():
        if isinstance(value, str) and (key in PATH_ARGS or PATH_ARG_SUFFIX.search(key)):
            yield json_path(["llamafactoryArgs", key]), value


def _leaf(value: str) -> str:
    """The last named segment of a path, for a hint."""
    segments = [s for s in value.split("/") if s not in ("", ".", "..")]
    return segments[-1] if segments else "name"


@check
def paths_on_storage(spec: Spec, facts: Facts) -> Iterator[Problem]:
    refused = set()
    for path, value in _storage_paths(spec):
        if climbs(value):
            refused.add(path)
            yield Problem(path, f"{value!r} has a `..` segment", "write the path without `..`")
        elif value.startswith("/") and normalise(value) == STORAGE_ROOT:
            refused.add(path)
            yield Problem(path, f"{value!r} is the storage mount itself", "name a folder inside it")
        elif not on_storage(value):
            refused.add(path)
            yield Problem(
                path,
                f"{value!r} is not under the storage mount {STORAGE_ROOT}",
                f"put it on the shared storage, e.g. {STORAGE_ROOT}/{_leaf(value)}",
            )
    nfs_path = spec.data["storage"].get("nfs", {}).get("path", "")
    if climbs(nfs_path):
        yield Problem("$.storage.nfs.path", f"{nfs_path!r} has a `..` segment", "write the path without `..`")
    if facts.merged_dir and "$.merge.exportDir" not in refused and "$.model.path" not in refused:
        yield from _export_dir(spec, facts)
    if spec.data["storage"].get("nfs", {}).get("readOnly"):
        yield Problem(
            "$.storage.nfs.readOnly",
            "training writes to the storage; it cannot be read-only",
            "remove readOnly",
        )


def _export_dir(spec: Spec, facts: Facts) -> Iterator[Problem]:
    """The merge Job replaces its target folder whole (merge.sh moves it aside and removes it): the target must
    be a folder of the merge's own, holding nothing else anyone reads."""
    given = spec.data["merge"].get("exportDir")
    if not given or facts.merged_dir is None:
        return  # the default, under the managed folder: one per experiment and run
    export = facts.merged_dir
    own = f"choose a folder of its own, e.g. {MODELS_DIR}/{spec.name}-merged"
    if export in (facts.base_model, facts.output_dir):
        yield Problem(
            "$.merge.exportDir", "the merged model would overwrite the base model or the adapter", own
        )
        return
    if not within(export, MODELS_DIR) or export == MODELS_DIR:
        yield Problem(
            "$.merge.exportDir",
            f"{given!r} is not a folder under {MODELS_DIR}/: publishing the merged model replaces the whole folder",
            own,
        )
        return
    if within(export, MERGED_DIR):
        yield Problem(
            "$.merge.exportDir",
            f"{given!r} is in {MERGED_DIR}, where every experiment's runs are published by default",
            f"leave exportDir out to publish there, or {own}",
        )
        return
    others = [
        ("the base model", facts.base_model),
        ("the adapter", facts.output_dir),
        ("the data", normalise(spec.data["data"]["dir"])),
    ]
    others += [(f"experiment {name}'s {field}", path) for name, field, path in neighbour_paths(spec)]
    for what, path in others:
        if within(export, path) or within(path, export):
            where = "is" if export == path else "contains" if within(path, export) else "is inside"
            yield Problem(
                "$.merge.exportDir",
                f"{given!r} {where} {what} ({path}): publishing the merged model replaces the whole folder",
                own,
            )
            return
    if spec.data["storage"].get("nfs", {}).get("readOnly"):
        yield Problem(
            "$.storage.nfs.readOnly",
            "training writes to the storage; it cannot be read-only",
            "remove readOnly",
        )
