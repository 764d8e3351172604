"""API helpers only the tests need, over the client the operations use."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from generator.errors import KubeError
from generator.ops import kube


def jobs(api: Any, namespace: str, release: str, component: str | None = None) -> list[dict[str, Any]]:
    """The release's batch Jobs; with a component, only that component's (not its preflight or checks)."""
    selector = f"{kube.INSTANCE}={release}" + (f",{kube.COMPONENT}={component}" if component else "")
    answer = kube.request(
        api, "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs", params={"labelSelector": selector}
    )
    return list(answer.get("items", []))


def remove_nodes(api: Any, names: Iterable[str]) -> None:
    for name in names:
        try:
            kube.request(api, "DELETE", f"/api/v1/nodes/{name}")
        except KubeError as exc:
            if exc.status != 404:
                raise
