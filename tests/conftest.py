"""Shared fixtures and the tier markers: a test's folder names its tier (unit, chart, cluster, node, llamafactory)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TIERS = ("unit", "chart", "cluster", "node", "llamafactory")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite the expected files of tests/cases and the chart snapshots instead of comparing",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO_ROOT / "tests").parts
        if parts and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def tmp_path(tmp_path: Path) -> Path:
    """pytest's own tmp_path, one folder deeper. The generator reads the experiments beside a spec (a merge may
    not publish over a neighbour's model), and pytest's folders for all the other tests are siblings of each
    other: a spec written straight into one would see them, and its result would depend on the test order."""
    own = tmp_path / "work"
    own.mkdir()
    return own
