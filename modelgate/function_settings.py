"""Settings a Lambda reads from the environment variables its stack sets: one rule for what is missing."""

from __future__ import annotations

from collections.abc import Mapping


class SettingsError(RuntimeError):
    """The function was deployed without a setting it needs: a deployment bug, named precisely."""


def required(environ: Mapping[str, str], *names: str, set_by: str) -> list[str]:
    """The values of `names`, stripped; one error naming every one that is unset or blank."""
    values = [environ.get(name, "").strip() for name in names]
    missing = [name for name, value in zip(names, values, strict=True) if not value]
    if missing:
        raise SettingsError(f"environment variables not set: {', '.join(missing)} ({set_by} sets them)")
    return values
