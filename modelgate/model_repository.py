"""Contract between the training pipeline (producer) and serving (consumer) of Triton model repositories.

One model per customer. Each customer's model is a Triton ensemble packed as `<customer>.tar.gz`; SageMaker's
multi-model endpoint loads it when called with `TargetModel=<customer>.tar.gz`. The archive holds the model
directories below, named with the customer so that many archives can be loaded side by side in one Triton.

    <customer>/                       (archive root = a Triton model repository)
      <customer>_forecaster/          ONNX model: raw readings -> forecast in reading units (normalisation,
                                      gap filling and the inverse transform inside the graph)
      <customer>/                     ensemble whose one step is the forecaster, the name clients call

Tensors (KServe v2 names the client sends and receives):
    READINGS      FP32 [WINDOW]   the last WINDOW hourly readings, oldest first (NaN marks a gap; a shorter
                                  history sends NaN for the hours before it)
    FORECAST      FP32 [HORIZON]  the next HORIZON hourly readings (the point forecast, P50)
    FORECAST_P10  FP32 [HORIZON]  the 10 % and 90 % quantiles of each of those hours (an 80 % interval):
    FORECAST_P90                  FORECAST_P10 <= FORECAST <= FORECAST_P90, element by element
                                  (pipelines/steps/quantiles.py; evaluation reports their held-out coverage)
A request may name the outputs it wants (KServe v2 `outputs`); one that names none gets all three, one that
asks for FORECAST alone gets FORECAST alone, as before the quantiles.
Every model of the archive batches (max_batch_size MAX_BATCH_SIZE), so a request carries a leading batch
dimension: READINGS shape [n, WINDOW] -> FORECAST and its quantiles, each [n, HORIZON], 1 <= n <= MAX_BATCH_SIZE.

The ONNX model takes and gives the same tensors; its core, `window` FP32 [-1, WINDOW] -> `forecast` FP32
[-1, HORIZON] (ONNX_INPUT/ONNX_OUTPUT), works in units normalised with the customer's (mean, std), which the graph
holds as initializers, as it holds the customer's interval offsets. A row without any reading, or with an
infinite one, comes out NaN in every output (the inference API refuses it with 400 before calling the endpoint).

A model version's artifacts live under one S3 prefix (the registry's model data URL and the `model_data_url`
of modelgate.parameters.ApprovedModel), holding every `<customer>.tar.gz` and a `manifest.json`
(`Manifest` below) that lists them with their SHA-256, so that the serving deploy step copies exactly the
archives of the approved version and can verify them.

Serving (the multi-model endpoint's S3 prefix, `MME_PREFIX` in the environment's model-repository bucket) holds
the approved version's archives under versioned target names, `v<version>/<customer>.tar.gz` (`target_model`):
SageMaker never reloads a TargetModel whose S3 object was overwritten (it serves the copy it cached on the
instance), so a new version must be a new name. Clients call the API with the customer id only; the invoke
Lambda resolves it to the target of the deployed version (modelgate.serving.deployment).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

# Four weeks of hourly readings in: the same hour of the week four times (the seasonal window average over four
# weeks, the strongest cheap peer, beats any model that sees one week). Fewer: send NaN for the missing hours.
WINDOW = 4 * 168
HORIZON = 24  # one day of hourly readings out

MAX_BATCH_SIZE = 64  # windows per request

ENSEMBLE_INPUT = "READINGS"
ENSEMBLE_OUTPUT = "FORECAST"  # P50: the point forecast
ENSEMBLE_P10 = "FORECAST_P10"
ENSEMBLE_P90 = "FORECAST_P90"
ENSEMBLE_OUTPUTS = (ENSEMBLE_OUTPUT, ENSEMBLE_P10, ENSEMBLE_P90)
ONNX_INPUT = "window"
ONNX_OUTPUT = "forecast"

CUSTOMER_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class InvalidCustomerIdError(ValueError):
    pass


def check_customer_id(customer: str) -> str:
    if not CUSTOMER_ID.match(customer):
        raise InvalidCustomerIdError(
            f"customer id {customer!r} must be 1-63 lowercase letters, digits or '-', starting with a letter or digit"
        )
    return customer


def archive_name(customer: str) -> str:
    """The S3 object name under the MME prefix, and the `TargetModel` value that selects it."""
    return f"{check_customer_id(customer)}.tar.gz"


def customer_from_archive(name: str) -> str:
    if not name.endswith(".tar.gz"):
        raise InvalidCustomerIdError(f"{name!r} is not a model archive (<customer>.tar.gz)")
    return check_customer_id(name.removesuffix(".tar.gz"))


def model_names(customer: str) -> dict[str, str]:
    """Triton model names inside a customer's archive; `ensemble` is the one clients call."""
    base = check_customer_id(customer).replace("-", "_")
    return {"forecaster": f"{base}_forecaster", "ensemble": base}


MME_PREFIX = "models/"  # ModelDataUrl of the multi-model endpoint: s3://<model-repository bucket>/models/
_TARGET_MODEL = re.compile(r"^v([1-9][0-9]{0,8})/(.+)$")


def target_model(model_version: int, customer: str) -> str:
    """`TargetModel` of a customer's archive of one model version, relative to MME_PREFIX."""
    if not isinstance(model_version, int) or isinstance(model_version, bool) or model_version < 1:
        raise ValueError(f"model version must be a positive integer, got {model_version!r}")
    return f"v{model_version}/{archive_name(customer)}"


def parse_target_model(target: str) -> tuple[int, str]:
    """(model version, customer) of a `target_model` name; InvalidCustomerIdError for anything else."""
    found = _TARGET_MODEL.match(target)
    if not found:
        raise InvalidCustomerIdError(f"{target!r} is not a target model name (v<version>/<customer>.tar.gz)")
    return int(found.group(1)), customer_from_archive(found.group(2))


MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1


class ManifestFormatError(ValueError):
    pass


@dataclass(frozen=True)
class ArchiveEntry:
    customer: str
    archive: str  # object name relative to the version prefix, == archive_name(customer)
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    model_package_group: str
    archives: tuple[ArchiveEntry, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema": MANIFEST_SCHEMA_VERSION,
                "model_package_group": self.model_package_group,
                "archives": [entry.__dict__ for entry in sorted(self.archives, key=lambda e: e.customer)],
            },
            indent=1,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            data = json.loads(text)
            if data.get("schema") != MANIFEST_SCHEMA_VERSION:
                raise ManifestFormatError(f"manifest schema {data.get('schema')!r}, expected {MANIFEST_SCHEMA_VERSION}")
            entries = tuple(ArchiveEntry(**entry) for entry in data["archives"])
            group = data["model_package_group"]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise ManifestFormatError(f"not a model manifest: {error}") from None
        for entry in entries:
            if entry.archive != archive_name(entry.customer):
                raise ManifestFormatError(f"archive {entry.archive!r} does not belong to customer {entry.customer!r}")
        return cls(group, entries)
