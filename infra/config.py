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
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator

from infra.gpu_hosts import NoCompatibleHostError, inference_ami
from infra.instance_types import ALL_INSTANCE_TYPES, GLUE_VERSIONS, GLUE_WORKER_TYPES, GPU_INSTANCE_TYPES
from infra.triton_images import UnknownTritonImageError, image_uri
from modelgate.chain import Chain

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


class ConfigDeprecationWarning(UserWarning):
    """A key that is still accepted but does nothing: synth goes on, and says to remove it."""


# Keys accepted for old configs only: (section, key) -> why they do nothing. Removed before validation.
DEPRECATED_KEYS = {
    ("training", "epochs"): "has no effect since the closed-form fit (pipelines/steps/forecaster.py: one pass, no "
    "epochs); remove it",
}


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


Name = Annotated[str, _check(r"[a-z][a-z0-9-]{1,30}", "must be 2-31 lowercase letters, digits and '-'")]
# Environment names end up in stack names, Parameter Store paths, bus and role names: short and plain.
EnvironmentName = Annotated[str, _check(r"[a-z][a-z0-9-]{0,15}", "must be 1-16 lowercase letters, digits and '-'")]
ModelPackageGroup = Annotated[
    str, _check(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", "must be a valid SageMaker model package group name")
]


class Project(_Frozen):
    name: Name


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
    # Distinct approvers (never the registrant) who must approve before a version moves into the environment.
    quorum: Annotated[int, Field(ge=1, le=20)] = 1
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
    metric_threshold: Annotated[float, Field(gt=0)]


class Serving(_Frozen):
    instance_type: GpuInstanceType
    min_instances: Annotated[int, Field(ge=1, le=100)]
    max_instances: Annotated[int, Field(ge=1, le=100)]
    triton_version: Annotated[str, _check(r"\d{2}\.\d{2}", "must be a Triton release like '24.09'")]
    data_capture: bool
    # SageMaker host image (NVIDIA driver) of the endpoint; default: the newest one that runs the Triton release on
    # the instance type (infra/gpu_hosts.py). Checked against the same table when given.
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
    """One environment's settings; `ModelProject.environments` holds the same with a model's overrides merged."""

    name: EnvironmentName
    account: AccountId
    region: Region
    sender_email: Email
    manual_approval: bool = False  # CI/CD waits for a person (a CodePipeline manual approval) before deploying it
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


class ModelProject(_Frozen):
    """One model of the platform: its Model Registry group, and its settings in every environment of the chain."""

    name: Name
    model_package_group: ModelPackageGroup
    environments: dict[str, Environment]  # chain order; defaults < environment < model < model.environments.<env>


class ModelGateConfig(_Frozen):
    source: str
    project: Project
    cicd: Cicd | None = None
    environments: dict[str, Environment]  # the promotion chain, in order; versions arrive in the first
    models: tuple[ModelProject, ...]

    @property
    def chain(self) -> Chain:
        return Chain(tuple(self.environments))

    def environment(self, name: str) -> Environment:
        if name not in self.environments:
            raise ConfigError(
                f"{self.source}: unknown environment {name!r}{did_you_mean(name, self.environments)}; "
                f"configured: {', '.join(self.environments)}"
            )
        return self.environments[name]

    def model(self, name: str) -> ModelProject:
        """A model by its name or its model package group."""
        for model in self.models:
            if name in (model.name, model.model_package_group):
                return model
        names = [model.name for model in self.models]
        raise ConfigError(
            f"{self.source}: unknown model {name!r}{did_you_mean(name, names)}; configured: {', '.join(names)}"
        )

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


# What a model may set for itself, everywhere or in one environment. Accounts, regions, the sender and the
# inference API belong to the environment (one per environment, shared by its models).
MODEL_KEYS = ("approvers", "prep", "training", "serving")


@dataclass(frozen=True)
class _Layers:
    """The documents merged into one environment's settings, least specific first, each with its dotted key."""

    environments: dict[str, dict]
    defaults: dict
    models: list[dict]

    def of(self, loc: tuple) -> tuple[list[tuple[str, dict]], tuple, str]:
        """(layers, key path inside an Environment, environment name) for a pydantic error location."""
        if len(loc) > 2 and loc[0] == "environments":
            env, rest = str(loc[1]), loc[2:]
            return [("defaults", self.defaults), (f"environments.{env}", self.environments.get(env) or {})], rest, env
        if len(loc) > 4 and loc[0] == "models" and loc[2] == "environments":
            model = self.models[loc[1]]
            env, rest = str(loc[3]), loc[4:]
            name = f"models.{model.get('name', loc[1])}"
            return (
                [
                    ("defaults", self.defaults),
                    (f"environments.{env}", self.environments.get(env) or {}),
                    (name, model),
                    (f"{name}.environments.{env}", (model.get("environments") or {}).get(env) or {}),
                ],
                rest,
                env,
            )
        return [], loc, ""


def _blame(loc: tuple, layers: _Layers) -> str:
    """The key the user must edit: the most specific document that set the value (an environment's own value,
    a model's, or the shared `defaults` value it inherited)."""
    stack, rest, _ = layers.of(loc)
    for prefix, document in reversed(stack):
        if _has_path(document, rest):
            return ".".join(str(part) for part in (prefix, *rest))
    if stack:
        return ".".join(str(part) for part in (stack[-1][0], *rest))
    if len(loc) > 1 and loc[0] == "models" and isinstance(loc[1], int) and loc[1] < len(layers.models):
        loc = ("models", layers.models[loc[1]].get("name", loc[1]), *loc[2:])
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
        elif typing.get_origin(model) is tuple:  # models: a list of ModelProject
            model = _unwrap(typing.get_args(model)[0])
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) in (typing.Union, types.UnionType, Annotated):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0]
    return annotation


def _format_errors(source: str, error: ValidationError, layers: _Layers) -> str:
    problems: dict[tuple[str, str], list[str]] = {}  # (key, message) -> environments that inherit it
    missing: dict[tuple, list[str]] = {}  # required keys absent from an environment and from defaults
    for item in error.errors():
        loc = item["loc"]
        stack, rest, env = layers.of(loc)
        if item["type"] == "missing" and stack and not any(_has_path(doc, rest) for _, doc in stack):
            if loc[0] == "environments":  # a model's environment misses it too: reported once, here
                missing.setdefault(rest, []).append(env)
            continue
        key = _blame(loc, layers)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] in {"string_type", "int_type", "float_type", "bool_type"}:
            message = f"{message.lower()} (got {item['input']!r}; quote strings in YAML)"
        elif item["type"] == "missing":
            message = "required value is missing"
        elif item["type"] == "extra_forbidden":
            model = _model_at(loc[:-1])
            hint = did_you_mean(loc[-1], model.model_fields) if model else ""
            message = f"unknown key{hint or ' (check the spelling against README configuration reference)'}"
        inheritors = problems.setdefault((key, message), [])
        if env and env not in inheritors:
            inheritors.append(env)
    for rest, envs in missing.items():
        dotted = ".".join(str(part) for part in rest)
        if len(envs) == len(layers.environments):  # nobody sets it: one message, where it is best set once
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


def _unknown_key(source: str, where: str, document: dict, allowed) -> None:
    unknown = [key for key in document if key not in allowed]
    if unknown:
        key = unknown[0]
        hint = did_you_mean(key, allowed) or f" (allowed: {', '.join(sorted(allowed))})"
        raise ConfigError(f"{source}: {where}{key}: unknown {'top-level ' if not where else ''}key{hint}")


def _chain(source: str, environments: Any) -> dict[str, dict]:
    """The promotion chain, in order: a list of environments (each with `name`). The mapping form of earlier
    releases (name -> settings) is still read, in its order."""
    if isinstance(environments, dict):
        environments = [{**(settings or {}), "name": name} for name, settings in environments.items()]
    if not isinstance(environments, list) or not environments:
        raise ConfigError(
            f"{source}: environments: required: the promotion chain, an ordered list of environments "
            "(e.g. `- name: dev`), at least one"
        )
    chain: dict[str, dict] = {}
    for index, environment in enumerate(environments):
        if not isinstance(environment, dict) or not isinstance(environment.get("name"), str):
            raise ConfigError(f"{source}: environments[{index}]: each environment needs a `name`")
        name = environment["name"]
        if name in chain:
            raise ConfigError(f"{source}: environments[{index}]: environment {name!r} appears twice in the chain")
        chain[name] = dict(environment)
    return chain


def _models(source: str, raw: dict, chain: dict[str, dict]) -> list[dict]:
    """The `models` list. A file of earlier releases names one group as `project.model_package_group`."""
    project = raw.get("project")
    legacy = project.get("model_package_group") if isinstance(project, dict) else None
    if "models" not in raw and legacy is not None:
        raw["project"] = {k: v for k, v in project.items() if k != "model_package_group"}
        return [{"name": str(legacy).lower(), "model_package_group": legacy}]
    if isinstance(project, dict) and legacy is not None:
        raise ConfigError(f"{source}: project.model_package_group: remove it; the groups are listed under `models`")
    models = raw.get("models")
    if not isinstance(models, list) or not models:
        raise ConfigError(
            f"{source}: models: required: a list of models, each with `name` and `model_package_group`, at least one"
        )
    seen: dict[str, set] = {"name": set(), "model_package_group": set()}
    for index, model in enumerate(models):
        if not isinstance(model, dict):
            raise ConfigError(f"{source}: models[{index}]: expected a mapping with `name` and `model_package_group`")
        label = f"models.{model.get('name', index)}."
        _unknown_key(source, label, model, ("name", "model_package_group", "environments", *MODEL_KEYS))
        for key in seen:
            if model.get(key) in seen[key]:
                raise ConfigError(f"{source}: {label}{key}: {model[key]!r} is used by another model")
            seen[key].add(model.get(key))
        overrides = model.get("environments") or {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"{source}: {label}environments: expected a mapping of environment name -> settings")
        for env, settings in overrides.items():
            if env not in chain:
                raise ConfigError(
                    f"{source}: {label}environments.{env}: not in the promotion chain{did_you_mean(env, chain)}; "
                    f"the chain is {' -> '.join(chain)}"
                )
            _unknown_key(source, f"{label}environments.{env}.", settings or {}, MODEL_KEYS)
    return models


def _without_deprecated(source: str, raw: dict) -> dict:
    """`raw` without the DEPRECATED_KEYS, a ConfigDeprecationWarning naming each place one was set."""
    raw = copy.deepcopy(raw)

    def strip(settings: Any, where: str) -> None:
        for (section, key), why in DEPRECATED_KEYS.items():
            block = settings.get(section) if isinstance(settings, dict) else None
            if isinstance(block, dict) and key in block:
                del block[key]
                warnings.warn(f"{source}: {where}{section}.{key} {why}", ConfigDeprecationWarning, stacklevel=4)

    strip(raw.get("defaults"), "defaults.")
    for env in raw.get("environments") or []:
        if isinstance(env, dict):
            strip(env, f"environments.{env.get('name')}.")
    for model in raw.get("models") or []:
        if isinstance(model, dict):
            strip(model, f"models.{model.get('name')}.")
            overrides = model.get("environments")
            for name, settings in overrides.items() if isinstance(overrides, dict) else ():
                strip(settings, f"models.{model.get('name')}.environments.{name}.")
    return raw


def parse_config(raw: Any, source: str) -> ModelGateConfig:
    """Validate an already-loaded YAML document; raise ConfigError naming every bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    raw = _without_deprecated(source, raw)
    _unknown_key(source, "", raw, ("project", "cicd", "defaults", "environments", "models"))
    defaults = raw.pop("defaults", {}) or {}
    chain = _chain(source, raw.get("environments"))
    models = _models(source, raw, chain)
    resolved = {name: _deep_merge(defaults, settings) for name, settings in chain.items()}
    raw["environments"] = resolved
    raw["models"] = tuple(
        {
            "name": model.get("name"),
            "model_package_group": model.get("model_package_group"),
            "environments": {
                name: _deep_merge(
                    _deep_merge(resolved[name], {k: v for k, v in model.items() if k in MODEL_KEYS}),
                    (model.get("environments") or {}).get(name) or {},
                )
                for name in chain
            },
        }
        for model in models
    )
    raw["source"] = source
    try:
        return ModelGateConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_errors(source, error, _Layers(chain, defaults, models))) from None


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
