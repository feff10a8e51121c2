"""Parameter Store contract: where the approved model of each environment is recorded, and its payload.

Path: `/<project>/<model package group>/<environment>`, e.g. `/modelgate/energy-forecast/<environment>`.
Value: the JSON of `ApprovedModel` (a String parameter, so the value's own version history is also kept by
SSM; the complete, unbounded decision history lives in the history table, see the approval stack).

Writers: the decision Lambda. Readers: the serving deploy step, the CI/CD promotion gate, the CLI.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

PAYLOAD_SCHEMA_VERSION = 1


class ApprovedModelFormatError(ValueError):
    """A parameter value that is not a valid ApprovedModel payload."""


def _segment(value: str, what: str) -> str:
    # Any environment name of the promotion chain (config-validated); only what would break the path is refused.
    if not isinstance(value, str) or not value or "/" in value:
        raise ValueError(f"{what} must be a non-empty name without '/', got {value!r}")
    return value


def parameter_name(project: str, model_package_group: str, environment: str) -> str:
    """Names only: whether `environment` is in the promotion chain is the caller's check (config, Chain)."""
    return f"/{project}/{model_package_group}/{_segment(environment, 'environment')}"


def pipeline_name(project: str, model: str, environment: str) -> str:
    """The SageMaker pipeline that trains `model` (its config name) in `environment`: a name the stack sets and
    the CLI derives (SageMaker pipeline names: letters, digits and '-', at most 256; config names fit)."""
    return f"{project}-{environment}-{model}"


def parameter_path(project: str, model_package_group: str) -> str:
    """The prefix under which all environments' parameters of a group live (for IAM scoping and listing)."""
    return f"/{project}/{model_package_group}"


@dataclass(frozen=True)
class ApprovedModel:
    model_package_group: str
    environment: str
    model_version: int
    model_package_arn: str
    model_data_url: str
    approved_by: str
    approved_at: str  # ISO 8601, UTC
    source_environment: str | None  # None for the first environment of the chain (approved from the registry)

    def to_json(self) -> str:
        return json.dumps({"schema": PAYLOAD_SCHEMA_VERSION, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ApprovedModel:
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as error:
            raise ApprovedModelFormatError(f"approved-model parameter is not JSON: {error}") from None
        if not isinstance(data, dict) or data.get("schema") != PAYLOAD_SCHEMA_VERSION:
            raise ApprovedModelFormatError(
                f"approved-model parameter has schema {data.get('schema') if isinstance(data, dict) else None!r},"
                f" expected {PAYLOAD_SCHEMA_VERSION}"
            )
        fields = {name: data.get(name) for name in cls.__dataclass_fields__}
        missing = [name for name, value in fields.items() if value is None and name != "source_environment"]
        if missing:
            raise ApprovedModelFormatError(f"approved-model parameter lacks: {', '.join(missing)}")
        if not isinstance(fields["model_version"], int) or fields["model_version"] < 1:
            raise ApprovedModelFormatError(f"model_version must be a positive integer, got {fields['model_version']!r}")
        try:
            _segment(fields["environment"], "environment")
        except ValueError as error:
            raise ApprovedModelFormatError(f"approved-model parameter: {error}") from None
        return cls(**fields)
