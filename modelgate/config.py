"""Typed, validated ModelGate configuration (config/modelgate.yaml).

Parsed once in app.py into frozen objects; constructs receive these values and never read files themselves.
Every error names the file and the dotted key, e.g. `config/modelgate.yaml: environments.dev.account: ...`.
"""

from __future__ import annotations

import copy
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator

from modelgate.environments import ENVIRONMENTS
from modelgate.gpu_hosts import NoCompatibleHostError, inference_ami
from modelgate.instance_types import ALL_INSTANCE_TYPES, GLUE_VERSIONS, GLUE_WORKER_TYPES, GPU_INSTANCE_TYPES
from modelgate.triton_images import UnknownTritonImageError, image_uri

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "modelgate.yaml"

# Commercial regions where SageMaker, Glue, SES and API Gateway are all available.
REGIONS = frozenset(
    {
        "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "sa-east-1",
        "eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1", "eu-central-2", "eu-north-1", "eu-south-1",
        "eu-south-2", "ap-south-1", "ap-southeast-1", "ap-southeast-2", "ap-northeast-1", "ap-northeast-2",
        "ap-northeast-3", "ap-east-1", "me-south-1", "me-central-1", "af-south-1", "il-central-1",
    }
)  # fmt: skip

_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")


class ConfigError(ValueError):
    """A configuration problem a platform engineer can fix by editing the named key."""


def _check(pattern: str, what: str):
    compiled = re.compile(pattern)

    def validate(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{what}, got {value!r}")
        return value

    return AfterValidator(validate)


def did_you_mean(value: object, choices) -> str:
    """' (did you mean 'x'?)' when one of `choices` is close to `value`, else ''."""
    close = difflib.get_close_matches(str(value), sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _member(allowed: frozenset[str], what: str):
    def validate(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"{value!r} is not {what}{did_you_mean(value, allowed)}")
        return value

    return AfterValidator(validate)


def _gpu_instance_type(value: str) -> str:
    # Two different mistakes, two messages: a typo (no such type) and a real type that has no NVIDIA GPU.
    if value not in ALL_INSTANCE_TYPES:
        raise ValueError(f"{value!r} is an unknown SageMaker instance type{did_you_mean(value, GPU_INSTANCE_TYPES)}")
    if value not in GPU_INSTANCE_TYPES:
        raise ValueError(f"{value!r} has no NVIDIA GPU; training and serving need one (e.g. ml.g5.xlarge)")
    return value


AccountId = Annotated[str, _check(r"\d{12}", "must be a 12-digit AWS account id (quote it in YAML)")]
Region = Annotated[str, _member(REGIONS, "a supported AWS region")]
Email = Annotated[str, _check(_EMAIL.pattern, "must be an e-mail address")]
HttpsUrl = Annotated[str, _check(r"https://[^\s/$.?#][^\s]*", "must be an https:// URL")]
GpuInstanceType = Annotated[str, AfterValidator(_gpu_instance_type)]
InstanceType = Annotated[str, _member(ALL_INSTANCE_TYPES, "a known SageMaker instance type (e.g. ml.m5.xlarge)")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class Project(_Frozen):
    name: Annotated[str, _check(r"[a-z][a-z0-9-]{1,30}", "must be lowercase letters, digits and '-'")]
    model_package_group: Annotated[
        str, _check(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", "must be a valid SageMaker model package group name")
    ]


class Cicd(_Frozen):
    account: AccountId
    region: Region
    connection_arn: Annotated[
        str,
        _check(
            r"arn:aws:(codestar-connections|codeconnections):[a-z0-9-]+:\d{12}:connection/[0-9a-f-]{36}",
            "must be a CodeConnections (CodeStar) connection ARN",
        ),
    ]
    repository: Annotated[str, _check(r"[\w.-]+/[\w.-]+", "must be 'owner/name'")]
    branch: Annotated[str, Field(min_length=1)]


class CompanyIdentityProvider(_Frozen):
    """The company directory (any OIDC provider), federated into the approvers' Cognito user pool."""

    name: Annotated[str, _check(r"[\w.-]{3,32}", "must be 3-32 letters, digits, '.', '_' or '-'")]
    issuer: HttpsUrl
    client_id: Annotated[str, Field(min_length=1)]
    client_secret_name: Annotated[str, _check(r"[\w/+=.@-]{1,512}", "must be a Secrets Manager secret name")]
    groups_claim: Annotated[str, Field(min_length=1)] = "groups"  # the IdP's claim listing the user's groups


class Approvers(_Frozen):
    group: Annotated[str, _check(r"[\w+=,.@-]{1,128}", "must be a Cognito group name")]
    emails: Annotated[tuple[Email, ...], Field(min_length=1), Strict(False)]  # YAML lists
    link_ttl_hours: Annotated[int, Field(ge=1, le=14 * 24)] = 72  # how long approval links stay valid
    identity_provider: CompanyIdentityProvider | None = None


class Prep(_Frozen):
    engine: Literal["processing", "glue"]
    processing_instance_type: InstanceType
    glue_version: Annotated[str, _member(GLUE_VERSIONS, f"a Glue version ({', '.join(sorted(GLUE_VERSIONS))})")]
    glue_worker_type: Annotated[str, _member(GLUE_WORKER_TYPES, "a Glue worker type")]
    glue_workers: Annotated[int, Field(ge=2, le=299)]


class Training(_Frozen):
    instance_type: GpuInstanceType
    instance_count: Annotated[int, Field(ge=1, le=64)]
    max_runtime_minutes: Annotated[int, Field(ge=10, le=28 * 24 * 60)]
    epochs: Annotated[int, Field(ge=1, le=10_000)]
    metric_threshold: Annotated[float, Field(gt=0)]


class Serving(_Frozen):
    instance_type: GpuInstanceType
    min_instances: Annotated[int, Field(ge=1, le=100)]
    max_instances: Annotated[int, Field(ge=1, le=100)]
    triton_version: Annotated[str, _check(r"\d{2}\.\d{2}", "must be a Triton release like '24.09'")]
    data_capture: bool
    # SageMaker host image (NVIDIA driver) of the endpoint; default: the newest one that runs the Triton release on
    # the instance type (modelgate/gpu_hosts.py). Checked against the same table when given.
    inference_ami_version: Annotated[str, Field(min_length=1)] | None = None
    # Autoscaling targets: invocations per instance per minute, and percent of each GPU in use.
    target_invocations_per_instance: Annotated[int, Field(ge=1, le=100_000)] = 1000
    target_gpu_utilization: Annotated[int, Field(ge=10, le=95)] = 70

    @property
    def host_ami(self) -> str:
        """The endpoint variant's InferenceAmiVersion (checked with the environment, see Environment)."""
        return inference_ami(self.triton_version, self.instance_type, self.inference_ami_version)

    @model_validator(mode="after")
    def _bounds(self) -> Serving:
        if self.max_instances < self.min_instances:
            raise ValueError(f"max_instances ({self.max_instances}) is below min_instances ({self.min_instances})")
        return self


class Jwt(_Frozen):
    issuer: HttpsUrl
    audience: Annotated[str, Field(min_length=1)]
    jwks_url: HttpsUrl


class Api(_Frozen):
    throttle_rate: Annotated[int, Field(ge=1, le=10_000)]
    throttle_burst: Annotated[int, Field(ge=1, le=5_000)]
    jwt: Jwt


class Environment(_Frozen):
    name: str
    account: AccountId
    region: Region
    sender_email: Email
    approvers: Approvers
    prep: Prep
    training: Training
    serving: Serving
    api: Api

    @model_validator(mode="after")
    def _triton_image_exists(self) -> Environment:
        try:
            image_uri(self.region, self.serving.triton_version)
        except UnknownTritonImageError as error:
            raise ValueError(f"serving.triton_version: {error}") from None
        serving = self.serving
        try:
            inference_ami(serving.triton_version, serving.instance_type, serving.inference_ami_version)
        except NoCompatibleHostError as error:
            key = "inference_ami_version" if serving.inference_ami_version else "triton_version"
            raise ValueError(f"serving.{key}: {error} (serving.instance_type is {serving.instance_type})") from None
        return self


class ModelGateConfig(_Frozen):
    source: str
    project: Project
    cicd: Cicd | None = None
    environments: dict[str, Environment]

    def environment(self, name: str) -> Environment:
        if name not in self.environments:
            raise ConfigError(
                f"{self.source}: unknown environment {name!r}; configured: {', '.join(self.environments)}"
            )
        return self.environments[name]

    def select(self, selector: str | None) -> list[Environment]:
        """Environments named by a `-c env=` selector: one name, a comma-separated list, or all when empty."""
        if not selector or selector == "all":
            return list(self.environments.values())
        return [self.environment(name.strip()) for name in selector.split(",") if name.strip()]


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _has_path(document: Any, path: tuple) -> bool:
    for part in path:
        in_mapping = isinstance(document, dict) and part in document
        in_sequence = isinstance(document, list | tuple) and isinstance(part, int) and part < len(document)
        if not (in_mapping or in_sequence):
            return False
        document = document[part]
    return True


def _blame(loc: tuple, overrides: dict[str, Any], defaults: dict[str, Any]) -> str:
    """The key the user must edit: an environment's own value, or the shared `defaults` value it inherited."""
    if len(loc) > 2 and loc[0] == "environments":
        env, rest = loc[1], loc[2:]
        if not _has_path(overrides.get(env) or {}, rest) and _has_path(defaults, rest):
            return ".".join(str(part) for part in ("defaults", *rest))
    return ".".join(str(part) for part in loc) or "(top level)"


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The config model whose keys are valid at `loc` (a pydantic error location), for "did you mean"."""
    model: Any = ModelGateConfig
    parts = [part for part in loc if not isinstance(part, int)]
    while parts:
        part = parts.pop(0)
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return None
        model = _unwrap(fields[part].annotation)
        if typing.get_origin(model) is dict:  # environments: name -> Environment; skip the name
            model = _unwrap(typing.get_args(model)[1])
            if parts:
                parts.pop(0)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) in (typing.Union, types.UnionType, Annotated):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0]
    return annotation


def _format_errors(source: str, error: ValidationError, overrides: dict, defaults: dict) -> str:
    problems: dict[tuple[str, str], list[str]] = {}  # (key, message) -> environments that inherit it
    missing: dict[tuple, list[str]] = {}  # required keys absent from an environment and from defaults
    for item in error.errors():
        loc = item["loc"]
        if item["type"] == "missing" and len(loc) > 2 and loc[0] == "environments" and not _has_path(defaults, loc[2:]):
            missing.setdefault(loc[2:], []).append(str(loc[1]))
            continue
        key = _blame(loc, overrides, defaults)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] in {"string_type", "int_type", "float_type", "bool_type"}:
            message = f"{message.lower()} (got {item['input']!r}; quote strings in YAML)"
        elif item["type"] == "missing":
            message = "required value is missing"
        elif item["type"] == "extra_forbidden":
            model = _model_at(loc[:-1])
            hint = did_you_mean(loc[-1], model.model_fields) if model else ""
            message = f"unknown key{hint or ' (check the spelling against README configuration reference)'}"
        problems.setdefault((key, message), []).append(str(loc[1]) if len(loc) > 1 else "")
    for rest, envs in missing.items():
        dotted = ".".join(str(part) for part in rest)
        if len(envs) == len(ENVIRONMENTS):  # nobody sets it: one message, where it is best set once
            problems[(f"defaults.{dotted}", "required value is missing (set it here or in every environment)")] = []
        elif len(envs) > 1:
            message = f"required value is missing ({', '.join(envs)} have none of their own)"
            problems[(f"defaults.{dotted}", message)] = []
        else:
            problems[(f"environments.{envs[0]}.{dotted}", "required value is missing (not in defaults either)")] = []
    return "\n".join(
        f"{source}: {key}: {message}"
        + (f" (inherited by {', '.join(envs)})" if key.startswith("defaults.") and envs else "")
        for (key, message), envs in problems.items()
    )


def _check_top_level(raw: dict, source: str) -> None:
    allowed = {"project", "cicd", "defaults", "environments"}
    unknown = [key for key in raw if key not in allowed]
    if unknown:
        key = unknown[0]
        hint = did_you_mean(key, allowed) or f" (allowed: {', '.join(sorted(allowed))})"
        raise ConfigError(f"{source}: {key}: unknown top-level key{hint}")


def parse_config(raw: Any, source: str) -> ModelGateConfig:
    """Validate an already-loaded YAML document; raise ConfigError naming every bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    raw = dict(raw)
    _check_top_level(raw, source)
    defaults = raw.pop("defaults", {}) or {}
    environments = raw.get("environments")
    if not isinstance(environments, dict) or not environments:
        raise ConfigError(f"{source}: environments: required mapping of {', '.join(ENVIRONMENTS)}")
    unknown = [name for name in environments if name not in ENVIRONMENTS]
    if unknown:
        raise ConfigError(
            f"{source}: environments.{unknown[0]}: unknown environment{did_you_mean(unknown[0], ENVIRONMENTS)}; "
            f"allowed: {', '.join(ENVIRONMENTS)}"
        )
    missing = [name for name in ENVIRONMENTS if name not in environments]
    if missing:
        raise ConfigError(f"{source}: environments.{missing[0]}: required (promotion runs {' -> '.join(ENVIRONMENTS)})")
    raw["environments"] = {
        name: {**_deep_merge(defaults, environments[name] or {}), "name": name} for name in ENVIRONMENTS
    }
    raw["source"] = source
    try:
        return ModelGateConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_errors(source, error, environments, defaults)) from None


def load_config(path: str | Path = DEFAULT_CONFIG_PATH) -> ModelGateConfig:
    path = Path(path)
    try:
        shown = str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        shown = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{shown}: configuration file not found") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{shown}: not valid YAML: {error}") from None
    return parse_config(raw, shown)
