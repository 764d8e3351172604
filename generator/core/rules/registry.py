"""The rules' registry: each rule module registers its checks with `@check` at import; `validate` (the
package's) runs them in registration order. It stands apart so rule modules import it, never each other."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..facts import Facts
from ..problems import Problem
from ..spec import Spec

Check = Callable[[Spec, Facts], Iterator[Problem]]
CHECKS: list[Check] = []


def check(fn: Check) -> Check:
    CHECKS.append(fn)
    return fn
