"""The promotion chain: the ordered environments of one deployment, as data.

Configured at synth (`environments:` in config/modelgate.yaml, any names, any length >= 1) and handed to every
Lambda as MODELGATE_CHAIN ("a,b,c"). Versions arrive in the first environment (where the Model Registry is);
each later one may only approve what the one before it approved. No environment name means anything else.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

CHAIN = "MODELGATE_CHAIN"


class UnknownEnvironmentError(ValueError):
    def __init__(self, name: str, chain: Chain) -> None:
        super().__init__(f"unknown environment {name!r}; the promotion chain is {' -> '.join(chain.names)}")
        self.name = name


@dataclass(frozen=True)
class Chain:
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.names or any(not name or "," in name for name in self.names):
            raise ValueError(f"a promotion chain needs at least one environment name, got {self.names!r}")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"environment names repeat in the promotion chain {self.names!r}")

    @classmethod
    def parse(cls, value: str) -> Chain:
        return cls(tuple(name.strip() for name in value.split(",") if name.strip()))

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Chain:
        env = os.environ if environ is None else environ
        value = env.get(CHAIN, "").strip()
        if not value:
            raise ValueError(f"{CHAIN} is not set (the stack sets it to the promotion chain, e.g. 'dev,test,prod')")
        return cls.parse(value)

    def value(self) -> str:
        """What MODELGATE_CHAIN holds."""
        return ",".join(self.names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    @property
    def first(self) -> str:
        """Where versions arrive: the environment that holds the Model Registry and trains."""
        return self.names[0]

    @property
    def last(self) -> str:
        return self.names[-1]

    def check(self, name: str) -> str:
        if name not in self.names:
            raise UnknownEnvironmentError(name, self)
        return name

    def next(self, name: str) -> str | None:
        """The environment a version approved in `name` may be promoted to; None after the last."""
        index = self.names.index(self.check(name))
        return self.names[index + 1] if index + 1 < len(self.names) else None

    def previous(self, name: str) -> str | None:
        """The environment that must have approved a version before `name` may; None for the first."""
        index = self.names.index(self.check(name))
        return self.names[index - 1] if index > 0 else None
