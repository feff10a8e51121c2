"""Model versions to serve in tests, benchmarks and the demo: the training pipeline's own packaging
(pipelines/packaging/triton_repository.py) applied to untrained example models, and their upload as a model
version (archives + manifest.json under one prefix, modelgate.model_repository's layout).

`ExampleVersion.reference` is what the ensemble must answer (the pipeline's PyTorch `predict`), so tests can
check Triton's forecasts and benchmarks can time the PyTorch model called directly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from modelgate.model_repository import MANIFEST_NAME, ArchiveEntry, Manifest, archive_name


@dataclass
class ExampleVersion:
    models: object  # pipelines.steps.forecaster.TrainedModels
    archives: dict[str, bytes] = field(default_factory=dict)  # customer -> <customer>.tar.gz

    def reference(self, customer: str, readings: np.ndarray) -> np.ndarray:
        """Readings [n, WINDOW] (NaN = gap) -> the forecast [n, HORIZON] the customer's ensemble must return."""
        import torch

        from pipelines.steps.forecaster import predict

        index = self.models.customers.index(customer)
        windows = torch.as_tensor(np.asarray(readings, np.float32))[None]
        params = self.models.params.select(slice(index, index + 1))
        mean, std = self.models.mean[index : index + 1], self.models.std[index : index + 1]
        return predict(params, windows, mean, std)[0].numpy()


def example_version(customers: Iterable[str], seed: int = 1, hidden: int = 8) -> ExampleVersion:
    """Archives of untrained example models (the pipeline's `example_models`), one per customer."""
    from pipelines.packaging.triton_repository import Packager, example_models, pack

    models = example_models(tuple(customers), hidden=hidden, seed=seed)
    packager = Packager(models)
    return ExampleVersion(models, {customer: pack(packager.files(customer)) for customer in models.customers})


def manifest_for(model_package_group: str, archives: dict[str, bytes]) -> Manifest:
    return Manifest(
        model_package_group,
        tuple(
            ArchiveEntry(customer, archive_name(customer), hashlib.sha256(data).hexdigest(), len(data))
            for customer, data in sorted(archives.items())
        ),
    )


def publish_version(s3, bucket: str, prefix: str, model_package_group: str, archives: dict[str, bytes]) -> str:
    """Upload a model version's archives and manifest under `prefix`; returns its model data URL."""
    prefix = prefix.rstrip("/") + "/"
    for customer, data in archives.items():
        s3.put_object(Bucket=bucket, Key=prefix + archive_name(customer), Body=data)
    s3.put_object(Bucket=bucket, Key=prefix + MANIFEST_NAME, Body=manifest_for(model_package_group, archives).to_json())
    return f"s3://{bucket}/{prefix}"
