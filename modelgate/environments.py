"""The promotion chain. Every module that needs environment order imports it from here."""

from __future__ import annotations

ENVIRONMENTS: tuple[str, ...] = ("dev", "test", "uat", "prod")


class UnknownEnvironmentError(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown environment {name!r}; expected one of: {', '.join(ENVIRONMENTS)}")
        self.name = name


def check_environment(name: str) -> str:
    if name not in ENVIRONMENTS:
        raise UnknownEnvironmentError(name)
    return name


def next_environment(name: str) -> str | None:
    """The environment a model approved in `name` may be promoted to, or None after prod."""
    index = ENVIRONMENTS.index(check_environment(name))
    return ENVIRONMENTS[index + 1] if index + 1 < len(ENVIRONMENTS) else None


def previous_environment(name: str) -> str | None:
    """The environment that must have approved a model before `name` may; None for dev."""
    index = ENVIRONMENTS.index(check_environment(name))
    return ENVIRONMENTS[index - 1] if index > 0 else None
