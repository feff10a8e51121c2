"""What the training pipeline's definition is built from, without importing the sagemaker SDK.

`DefinitionSettings` holds every synth-time value the definition depends on (plain, JSON-serialisable, so it
keys the on-disk cache and crosses the process boundary to `python -m pipelines.definition`).

Deploy-time values (bucket names, role ARNs, the KMS key, the code bundle's S3 URI, the Glue callback queue) do
not exist at synth: the SDK builds the definition with the `PLACEHOLDERS` below in their place, and the CDK
construct (infra/constructs/training_pipeline.py) substitutes CloudFormation references for them. Each placeholder is a
string the SDK accepts where the real value goes (S3 URIs must look like S3 URIs, or the SDK would try to
upload a "local file") and that cannot occur in a definition by accident.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Literal

PIPELINE_NAME = "ModelGateTraining"  # the SDK's name for the definition; the deployed pipeline's name is CDK's


@dataclass(frozen=True)
class DefinitionSettings:
    region: str
    model_package_group: str
    prep_engine: Literal["processing", "glue"]
    processing_instance_type: str
    training_instance_type: str
    training_instance_count: int
    max_runtime_seconds: int
    metric_threshold: float
    triton_image_uri: str  # the registered model's inference container (infra.triton_images)
    inference_instance_type: str  # serving.instance_type: what the model package says it runs on
    raw_prefix: str = "readings/"  # the default InputDataUri under the raw bucket: one prefix per model

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DefinitionSettings:
        return cls(**json.loads(text))

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()


# name -> the string standing in for it in the generated definition
PLACEHOLDERS: dict[str, str] = {
    "RawBucket": "modelgate-placeholder-raw-bucket",
    "CuratedBucket": "modelgate-placeholder-curated-bucket",
    "ArtifactsBucket": "modelgate-placeholder-artifacts-bucket",
    "KmsKeyArn": "arn:aws:kms:modelgate-placeholder:000000000000:key/data-key",
    "PrepRoleArn": "arn:aws:iam::000000000000:role/modelgate-placeholder-prep-role",
    "TrainingRoleArn": "arn:aws:iam::000000000000:role/modelgate-placeholder-training-role",
    "EvaluationRoleArn": "arn:aws:iam::000000000000:role/modelgate-placeholder-evaluation-role",
    # The step code: one tar.gz object (a CDK file asset; its key is `<hash>.tar.gz`, no folder).
    "CodeBucket": "modelgate-placeholder-code-bucket",
    "CodeKey": "modelgate-placeholder-code-key.tar.gz",
    "GlueQueueUrl": "https://sqs.modelgate-placeholder.amazonaws.com/000000000000/glue-prep-requests",
}


def placeholder(name: str) -> str:
    return PLACEHOLDERS[name]


def code_uri() -> str:
    return f"s3://{PLACEHOLDERS['CodeBucket']}/{PLACEHOLDERS['CodeKey']}"


def substitute(text: str, values: dict[str, str]) -> str:
    """The definition text with every placeholder replaced; refuses to leave one behind or guess a name."""
    unknown = set(values) - set(PLACEHOLDERS)
    if unknown:
        raise KeyError(f"unknown placeholders {sorted(unknown)}; known: {sorted(PLACEHOLDERS)}")
    for name, value in values.items():
        text = text.replace(PLACEHOLDERS[name], value)
    left = [name for name, marker in PLACEHOLDERS.items() if marker in text]
    if left:
        raise ValueError(f"the pipeline definition still references {left}: pass a value for each")
    return text
