"""Settings a Lambda reads from the environment variables its stack sets, and from the files the stack ships in
its code package (lists that outgrow Lambda's 4 KB environment): one rule for what is missing."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Lambda sets it to the directory of the function's unpacked code package (/var/task); the local world sets it
# to the deployed asset's folder (sandbox/cloudformation.py).
TASK_ROOT = "LAMBDA_TASK_ROOT"


class SettingsError(RuntimeError):
    """The function was deployed without a setting it needs: a deployment bug, named precisely."""


def required(environ: Mapping[str, str], *names: str, set_by: str) -> list[str]:
    """The values of `names`, stripped; one error naming every one that is unset or blank."""
    values = [environ.get(name, "").strip() for name in names]
    missing = [name for name, value in zip(names, values, strict=True) if not value]
    if missing:
        raise SettingsError(f"environment variables not set: {', '.join(missing)} ({set_by} sets them)")
    return values


def bundled_json(environ: Mapping[str, str], name: str, *, set_by: str) -> Any:
    """The JSON file `name` at the root of the function's code package, which `set_by` writes at synth."""
    root = environ.get(TASK_ROOT, "").strip()
    if not root:
        raise SettingsError(
            f"{TASK_ROOT} is not set: it names the function's code directory, where {set_by} ships {name} "
            "(Lambda sets it; elsewhere set it to the unpacked code package)"
        )
    path = Path(root) / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(
            f"{path} is missing: {set_by} ships {name} in the function's code package; redeploy the stack"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SettingsError(f"{path} is not a readable JSON file ({error}); {set_by} writes it: redeploy") from None
