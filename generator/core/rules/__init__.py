"""Cross-field checks: what the schema cannot say, each problem with the fix.

Every check takes the loaded spec and its derived facts and yields Problems; `validate` runs them all, in
the order their modules register them (`registry`): names and method, serving, training, stages, paths,
security, then what LLaMA-Factory itself accepts. They read no files but a shared host's and neighbours' specs (through
the facts) and import nothing heavy; checks against the storage or LLaMA-Factory itself live in `checks`.
"""

from __future__ import annotations

import importlib

from ..facts import Facts, derive
from ..problems import Problem
from ..spec import Spec
from .malformed import malformed_values
from .naming import HELM_RELEASE_MAX
from .registry import CHECKS, Check, check
from .security import secret_in_text
from .training import vram_advice

# the rule modules register their checks at import (in any order); this order, then each module's own, is the
# order the checks run and their problems are printed in
RULE_MODULES = ("naming", "serving", "training", "stages", "paths", "security", "llamafactory")
for _module in RULE_MODULES:
    importlib.import_module(f"{__name__}.{_module}")
ORDERED_CHECKS: tuple[Check, ...] = tuple(
    sorted(CHECKS, key=lambda fn: RULE_MODULES.index(fn.__module__.rsplit(".", 1)[-1]))
)

__all__ = [
    "CHECKS",
    "HELM_RELEASE_MAX",
    "ORDERED_CHECKS",
    "Check",
    "check",
    "malformed_values",
    "secret_in_text",
    "validate",
    "vram_advice",
]


def validate(spec: Spec, facts: Facts | None = None) -> list[Problem]:
    """Every cross-field problem of a schema-valid spec (errors and warnings). Values no schema keyword can
    refuse (control characters, NaN, YAML's dates) are refused first: nothing is derived from them. The facts
    are derived here unless the caller has them already (an experiment loaded once)."""
    malformed = list(malformed_values(spec.raw, []))
    if malformed:
        return malformed
    if facts is None:
        facts = derive(spec)
    return [problem for fn in ORDERED_CHECKS for problem in fn(spec, facts)]
