"""Helm commands for an experiment's releases, built from the spec's facts (pure: nothing is run here)."""

from __future__ import annotations

from pathlib import Path

from .facts import Facts
from .render import CHART_DIR

# the seed's order: train, then merge, then serving; the web UI last
INSTALL_ORDER = ("train", "merge", "vllm", "webui")


def selected(facts: Facts, component: str) -> list[str]:
    """Components named by COMPONENT (one, or `all`), in install order, that the spec enables."""
    if component == "all":
        return [c for c in INSTALL_ORDER if c in facts.releases]
    if component not in facts.releases:
        enabled = ", ".join(c for c in INSTALL_ORDER if c in facts.releases)
        raise ValueError(f"{component} is not enabled in experiment {facts.name} (enabled: {enabled})")
    return [component]


# how long helm waits for the train release's preflight hook: it pulls the multi-GB image on a fresh node
HOOK_TIMEOUT = "20m"


def install_command(
    facts: Facts, component: str, values_dir: Path, helm: str = "helm", *extra: str
) -> list[str]:
    return [
        helm, "upgrade", "--install", facts.releases[component], _relative(CHART_DIR),
        "--namespace", facts.namespace, "--create-namespace",
        "--values", _relative(values_dir / f"{component}.yaml"),
        *(["--timeout", HOOK_TIMEOUT] if component == "train" else []),
        *extra,
    ]  # fmt: skip


def uninstall_command(facts: Facts, component: str, helm: str = "helm", *extra: str) -> list[str]:
    return [helm, "uninstall", facts.releases[component], "--namespace", facts.namespace, *extra]


def _relative(path: Path) -> str:
    """Paths as a person would type them from the repository root, when they lie under the current dir."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
