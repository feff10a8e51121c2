"""Parameter Store contract: where the approved model of each environment is recorded, and its payload.

Path: `/<project>/<model package group>/<environment>`, e.g. `/modelgate/energy-forecast/test`.
Value: the JSON of `ApprovedModel` (a String parameter, so the value's own version history is also kept by
SSM; the complete, unbounded decision history lives in the history table, see the approval stack).

Writers: the decision Lambda. Readers: the serving deploy step, the CI/CD promotion gate, the CLI.

Also owned here: the names both the stacks and the runtime derive for a (model, environment), e.g.
`pipeline_name` (the SageMaker pipeline that trains one model in one environment).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

PAYLOAD_SCHEMA_VERSION = 1
# One path segment: the chain's names and the groups are config values, never '/' or empty.
_SEGMENT = re.compile(r"[A-Za-z0-9_.-]+")
PIPELINE_NAME_LIMIT = 256  # SageMaker PipelineName: up to 256 of [a-zA-Z0-9-]


class ApprovedModelFormatError(ValueError):
    """A parameter value that is not a valid ApprovedModel payload."""


def _segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not _SEGMENT.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid {what} (letters, digits, '.', '_', '-')")
    return value


def parameter_name(project: str, model_package_group: str, environment: str) -> str:
    """`/<project>/<group>/<environment>`: one parameter per (model package group, environment)."""
    return (
        f"/{_segment(project, 'project name')}/{_segment(model_package_group, 'model package group')}"
        f"/{_segment(environment, 'environment name')}"
    )


def pipeline_name(project: str, model: str, environment: str) -> str:
    """The SageMaker pipeline that trains `model` (its config name) in `environment`: `<project>-<env>-<model>`,
    lower case, a name the pipeline stack sets and the CLI (`modelgate pipeline start|watch`) derives.

    SageMaker pipeline names: letters, digits and '-', at most 256 (other characters of config names become '-').
    """
    name = f"{_segment(project, 'project name')}-{_segment(environment, 'environment')}-{_segment(model, 'model name')}"
    name = re.sub(r"[^a-z0-9-]", "-", name.lower())
    if len(name) > PIPELINE_NAME_LIMIT:
        raise ValueError(f"pipeline name {name!r} is longer than SageMaker's {PIPELINE_NAME_LIMIT} characters")
    return name


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
    source_environment: str | None  # None for the chain's first environment (approved straight from the registry)

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
        if not isinstance(fields["environment"], str) or not _SEGMENT.fullmatch(fields["environment"]):
            raise ApprovedModelFormatError(f"environment must be an environment name, got {fields['environment']!r}")
        return cls(**fields)
