"""The real node's CoreDNS: the binary hack/build-tools.sh builds holds exactly the plugins the Corefile names."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from generator.cluster.realnode import corefile

ROOT = Path(__file__).resolve().parents[2]


def corefile_directives(text: str) -> list[str]:
    """The first word of each line directly inside a server block (a plugin's own block is its options)."""
    names, depth = [], 0
    for line in text.splitlines():
        words = line.split()
        if depth == 1 and words and words[0] != "}":
            names.append(words[0])
        depth += line.count("{") - line.count("}")
    return names


def built_plugins() -> list[str]:
    script = (ROOT / "hack" / "build-tools.sh").read_text(encoding="utf-8")
    found = re.search(r"^COREDNS_PLUGINS=\(([^)]*)\)", script, re.MULTILINE)
    assert found, "hack/build-tools.sh has no COREDNS_PLUGINS=(...)"
    return found.group(1).split()


def test_corefile_uses_only_the_plugins_built_in():
    state = SimpleNamespace(
        kubeconfig=Path("/state/kubeconfig"), ports={"coredns-health": 1, "coredns-ready": 2}
    )
    directives = corefile_directives(corefile(state))  # type: ignore[arg-type]
    assert directives == ["bind", "errors", "kubernetes", "health", "ready"]
    # a plugin left out of the build makes CoreDNS refuse the Corefile at start-up; one more is wasted build
    assert sorted(directives) == sorted(built_plugins())


def test_plugins_keep_coredns_order():
    # CoreDNS runs plugins in the order of dnsserver.Directives, which the build sets from this list: it must
    # follow CoreDNS's own order (core/dnsserver/zdirectives.go in v1.15.0) for the plugins to chain as upstream
    upstream = ["bind", "ready", "health", "errors", "kubernetes"]
    assert built_plugins() == upstream
