"""One experiment, loaded once per command: its spec, the facts derived from it (with the shared host's spec,
read from disk once), and its problems. Commands make it once and pass it down, so the facts are derived once
and a host's spec is read and validated once, whatever the command goes on to do."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SpecError
from .facts import Facts, SharedHost, derive
from .problems import Problem, errors
from .rules import malformed_values, validate
from .spec import Spec, load_spec


@dataclass(frozen=True)
class Experiment:
    spec: Spec
    problems: list[Problem] = field(default_factory=list)
    # None only when values no schema keyword refuses (NaN, control characters) kept anything from being derived
    derived: Facts | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def valid(self) -> bool:
        return self.derived is not None and not errors(self.problems)

    @property
    def facts(self) -> Facts:
        """The derived facts; a SpecError with the problems when the spec's values allowed none."""
        if self.derived is None:
            raise SpecError(self.spec.source, errors(self.problems))
        return self.derived

    @property
    def host(self) -> SharedHost | None:
        """serve.source: shared: the experiment whose vLLM loads this one's adapter (its spec read once)."""
        return self.facts.host


def experiment_of(spec: Spec) -> Experiment:
    """The loaded spec's facts (derived once) and its cross-field problems (the rules see the same facts)."""
    malformed = list(malformed_values(spec.raw, []))
    if malformed:
        return Experiment(spec, malformed)
    facts = derive(spec)
    return Experiment(spec, validate(spec, facts), facts)


def load_experiment(path: str | Path) -> Experiment:
    """Read, schema-check and derive one spec; a SpecError (its schema problems) when it cannot be loaded."""
    return experiment_of(load_spec(path))
