"""One experiment on one cluster: the spec and its facts, the helm runner and the API client for that
cluster, and where the storage is mounted here (if it is)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.facts import Facts, derive
from ..core.spec import Spec
from ..core.storage import local
from ..project import kubectl_binary
from . import kube
from .helm import Helm


@dataclass
class Target:
    spec: Spec
    facts: Facts
    helm: Helm
    storage_root: Path | None = None
    _api: Any = field(default=None, repr=False)

    @classmethod
    def of(
        cls,
        spec: Spec,
        helm: str,
        kubeconfig: str | None = None,
        context: str | None = None,
        storage_root: Path | None = None,
        facts: Facts | None = None,
    ) -> Target:
        """The target of a loaded spec; its facts when the caller derived them already (no second derive)."""
        return cls(spec, facts or derive(spec), Helm(helm, kubeconfig, context), storage_root)

    @property
    def api(self) -> Any:
        """The cluster's API client, made on first use (commands that only print never need one)."""
        if self._api is None:
            self._api = kube.client(self.helm.kubeconfig, self.helm.context)
        return self._api

    @property
    def namespace(self) -> str:
        return self.facts.namespace

    def engine(self, component: str) -> str:
        """What runs a component's workload: the training engine for train, plain Jobs otherwise."""
        return str(self.spec.data["distributed"]["engine"]) if component == "train" else "job"

    def kubectl(self, *args: str) -> list[str]:
        """A kubectl command line for this cluster and namespace (for what the API client cannot do simply:
        streaming logs, attach, exec)."""
        command = [kubectl_binary(), *args, "--namespace", self.namespace]
        if self.helm.kubeconfig:
            command += ["--kubeconfig", self.helm.kubeconfig]
        if self.helm.context:
            command += ["--context", self.helm.context]
        return command

    def local_path(self, storage_path: str) -> Path | None:
        """A path under /storage as seen through the local mount; None without one."""
        if self.storage_root is None:
            return None
        return local(self.storage_root, storage_path)
