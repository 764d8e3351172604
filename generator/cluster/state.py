"""What a running local cluster is: one state directory (default `.cluster/`) with its data, logs, the
kubeconfig, and `state.json` holding the PID and port of every process and the admin token."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..project import REPO_ROOT

DEFAULT_STATE_DIR = REPO_ROOT / ".cluster"


@dataclass
class State:
    directory: Path
    pids: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    token: str = ""
    extra: dict[str, Any] = field(
        default_factory=dict
    )  # what a part records for its own stop (the real node)

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def certs(self) -> Path:
        return self.directory / "certs"

    @property
    def ca_file(self) -> Path:
        return self.certs / "apiserver.crt"

    @property
    def logs(self) -> Path:
        return self.directory / "logs"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    def save(self) -> None:
        data = {"pids": self.pids, "ports": self.ports, "token": self.token, "extra": self.extra}
        tmp = self.directory / "state.json.tmp"
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        tmp.replace(self.directory / "state.json")

    @classmethod
    def load(cls, directory: Path) -> State | None:
        try:
            data = json.loads((directory / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return cls(directory, data["pids"], data["ports"], data["token"], data.get("extra", {}))

    def api(self) -> Any:
        """The cluster's API client (the same one the operations use), as cluster admin."""
        from ..ops import kube

        return kube.client(str(self.kubeconfig))
