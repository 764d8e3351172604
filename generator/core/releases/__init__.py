"""Each release's Helm values, built from the spec and its facts: one module per component, named as the
chart names it (train, merge, eval, vllm, adapter, webui), on the shared blocks of `common`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..facts import Facts
from . import adapter, eval, merge, train, vllm, webui
from .yamltext import Block

BUILDERS: dict[str, Callable[[dict[str, Any], Facts], Block]] = {
    "webui": webui.values,
    "train": train.values,
    "merge": merge.values,
    "eval": eval.values,
    "vllm": vllm.values,
    "adapter": adapter.values,
}
