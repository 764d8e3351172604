"""The llamafactory tier: the real `llamafactory` package and `llamafactory-cli` on CPU, with a tiny model
this tier builds itself (no download). The flow's steps live in generator.smoke, shared with `make smoke`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import smoke

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> smoke.Workspace:
    """/storage stand-in with the tiny model, two registered datasets and the rendered experiment."""
    return smoke.prepare(tmp_path_factory.mktemp("storage"))


@pytest.fixture(scope="session")
def run_log(workspace: smoke.Workspace) -> Path:
    return workspace.root / "flow.log"


@pytest.fixture(scope="session")
def tokenizer(workspace: smoke.Workspace) -> Iterator[Any]:
    from transformers import AutoTokenizer

    yield AutoTokenizer.from_pretrained(workspace.base_model)
