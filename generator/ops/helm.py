"""Helm for an experiment's releases: the commands (built from the spec's facts, printable before they run),
the runner that adds the cluster's kubeconfig and context, and the plan of `lfk run`."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..core.components import COMPONENTS, INSTALL_ORDER
from ..core.facts import Facts
from ..errors import LfkError
from ..project import CHART_DIR

# how long `helm test` waits for its chat-completion pod
TEST_TIMEOUT = "10m"


def selected(facts: Facts, component: str) -> list[str]:
    """Components named by COMPONENT (one, or `all`), in install order, that the spec enables."""
    if component == "all":
        return [c for c in INSTALL_ORDER if c in facts.releases]
    if component not in facts.releases:
        enabled = ", ".join(c for c in INSTALL_ORDER if c in facts.releases)
        raise LfkError(f"{component} is not enabled in experiment {facts.name} (enabled: {enabled})")
    return [component]


def install_command(facts: Facts, component: str, values_dir: Path, helm: str = "helm") -> list[str]:
    return [
        helm, "upgrade", "--install", facts.releases[component], _relative(CHART_DIR),
        "--namespace", facts.namespace, "--create-namespace",
        "--values", _relative(values_dir / f"{component}.yaml"),
        "--timeout", facts.install_timeout(component),
    ]  # fmt: skip


def uninstall_command(facts: Facts, component: str, helm: str = "helm") -> list[str]:
    return [helm, "uninstall", facts.releases[component], "--namespace", facts.namespace]


def test_command(facts: Facts, component: str, helm: str = "helm") -> list[str]:
    return [
        helm,
        "test",
        facts.releases[component],
        "--namespace",
        facts.namespace,
        "--timeout",
        TEST_TIMEOUT,
    ]


def _relative(path: Path) -> str:
    """Paths as a person would type them from the repository root, when they lie under the current dir."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class Helm:
    """The helm binary pointed at one cluster."""

    binary: str
    kubeconfig: str | None = None
    context: str | None = None

    def command(self, *args: str) -> list[str]:
        """A helm command line for this cluster (args without the binary)."""
        command = [self.binary, *args]
        if self.kubeconfig:
            command += ["--kubeconfig", self.kubeconfig]
        if self.context:
            command += ["--kube-context", self.context]
        return command

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(self.command(*args))


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


@dataclass(frozen=True)
class Step:
    """One component of `lfk run`: its release, the install command and, for vLLM, the test command."""

    component: str
    release: str
    install: list[str]
    test: list[str] | None = None

    @property
    def commands(self) -> list[list[str]]:
        return [self.install, *([self.test] if self.test else [])]


def plan(facts: Facts, values_dir: Path, helm: Helm, components: list[str]) -> list[Step]:
    """The helm commands of each selected component the spec enables, in the guide's order."""
    steps = []
    for component in INSTALL_ORDER:
        if component not in components or component not in facts.releases:
            continue
        install = helm.command(*install_command(facts, component, values_dir)[1:])
        test = helm.command(*test_command(facts, component)[1:]) if COMPONENTS[component].helm_test else None
        steps.append(Step(component, facts.releases[component], install, test))
    return steps
