"""SageMaker's NVIDIA Triton Inference Server images: which account hosts them in which region, per release.

A snapshot of the sagemaker SDK's `image_uri_config/sagemaker-tritonserver.json` (sagemaker-core 2.27.0), kept
here as data so that synth never imports the SDK. Refresh it when AWS publishes a new Triton release.
"""

from __future__ import annotations

REPOSITORY = "sagemaker-tritonserver"

# fmt: off
# region -> account that hosts the images there
REGISTRIES: dict[str, str] = {
    "af-south-1": "626614931356", "ap-east-1": "871362719292", "ap-east-2": "975050140332",
    "ap-northeast-1": "763104351884", "ap-northeast-2": "763104351884", "ap-northeast-3": "364406365360",
    "ap-south-1": "763104351884", "ap-south-2": "772153158452", "ap-southeast-1": "763104351884",
    "ap-southeast-2": "763104351884", "ap-southeast-3": "907027046896", "ap-southeast-4": "457447274322",
    "ap-southeast-5": "550225433462", "ap-southeast-6": "633930458069", "ap-southeast-7": "590183813437",
    "ca-central-1": "763104351884", "ca-west-1": "204538143572", "cn-north-1": "727897471807",
    "cn-northwest-1": "727897471807", "eu-central-1": "763104351884", "eu-central-2": "380420809688",
    "eu-north-1": "763104351884", "eu-south-1": "692866216735", "eu-south-2": "503227376785",
    "eu-west-1": "763104351884", "eu-west-2": "763104351884", "eu-west-3": "763104351884",
    "il-central-1": "780543022126", "me-central-1": "914824155844", "me-south-1": "217643126080",
    "mx-central-1": "637423239942", "sa-east-1": "763104351884", "us-east-1": "763104351884",
    "us-east-2": "763104351884", "us-west-1": "763104351884", "us-west-2": "763104351884",
}

# Regions where a release is published (several releases share one list).
_23_12_TO_24_09 = frozenset((
    "af-south-1", "ap-east-1", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1",
    "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ca-central-1", "ca-west-1", "cn-north-1",
    "cn-northwest-1", "eu-central-1", "eu-north-1", "eu-south-1", "eu-west-1", "eu-west-2",
    "eu-west-3", "il-central-1", "me-south-1", "sa-east-1", "us-east-1", "us-east-2",
    "us-west-1", "us-west-2",
))
_25_04 = frozenset((
    "af-south-1", "ap-east-1", "ap-east-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
    "ap-south-1", "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4",
    "ap-southeast-5", "ap-southeast-7", "ca-central-1", "ca-west-1", "cn-north-1", "cn-northwest-1",
    "eu-central-1", "eu-central-2", "eu-north-1", "eu-south-1", "eu-south-2", "eu-west-1",
    "eu-west-2", "eu-west-3", "il-central-1", "me-central-1", "me-south-1", "mx-central-1",
    "sa-east-1", "us-east-1", "us-east-2", "us-west-1", "us-west-2",
))
_25_09_ON = frozenset((
    "af-south-1", "ap-east-1", "ap-east-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
    "ap-south-1", "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4",
    "ap-southeast-5", "ap-southeast-6", "ap-southeast-7", "ca-central-1", "ca-west-1", "eu-central-1",
    "eu-central-2", "eu-north-1", "eu-south-1", "eu-south-2", "eu-west-1", "eu-west-2",
    "eu-west-3", "il-central-1", "me-central-1", "me-south-1", "mx-central-1", "sa-east-1",
    "us-east-1", "us-east-2", "us-west-1", "us-west-2",
))

# release -> regions where it is published
RELEASES: dict[str, frozenset[str]] = {
    "23.12": _23_12_TO_24_09, "24.01": _23_12_TO_24_09, "24.03": _23_12_TO_24_09, "24.05": _23_12_TO_24_09,
    "24.09": _23_12_TO_24_09, "25.04": _25_04, "25.09": _25_09_ON, "26.05": _25_09_ON,
}
# fmt: on


class UnknownTritonImageError(ValueError):
    pass


def image_uri(region: str, version: str) -> str:
    """`<account>.dkr.ecr.<region>.amazonaws.com/sagemaker-tritonserver:<version>-py3` (GPU and CPU)."""
    if version not in RELEASES:
        raise UnknownTritonImageError(f"Triton release {version!r} is not known; known: {', '.join(RELEASES)}")
    if region not in RELEASES[version]:
        raise UnknownTritonImageError(f"Triton release {version} is not published in {region}")
    return f"{REGISTRIES[region]}.dkr.ecr.{region}.amazonaws.com/{REPOSITORY}:{version}-py3"
