"""SageMaker instance types that exist, so that a typo in config fails at synth instead of at deploy.

Kept as families x sizes (from the SageMaker pricing pages); add a family here when AWS launches one.
"""

from __future__ import annotations

_SIZES_G = ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge")

# NVIDIA GPU families usable by PyTorch training images and the Triton inference image.
GPU_FAMILIES: dict[str, tuple[str, ...]] = {
    "p3": ("2xlarge", "8xlarge", "16xlarge"),
    "p3dn": ("24xlarge",),
    "p4d": ("24xlarge",),
    "p4de": ("24xlarge",),
    "p5": ("48xlarge",),
    "p5e": ("48xlarge",),
    "p5en": ("48xlarge",),
    "g4dn": ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"),
    "g5": _SIZES_G,
    "g6": _SIZES_G,
    "g6e": _SIZES_G,
}

CPU_FAMILIES: dict[str, tuple[str, ...]] = {
    "t3": ("medium", "large", "xlarge", "2xlarge"),
    "m5": ("large", "xlarge", "2xlarge", "4xlarge", "12xlarge", "24xlarge"),
    "m6i": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "32xlarge"),
    "c5": ("xlarge", "2xlarge", "4xlarge", "9xlarge", "18xlarge"),
    "c6i": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "32xlarge"),
    "r5": ("large", "xlarge", "2xlarge", "4xlarge", "12xlarge", "24xlarge"),
}


def _expand(families: dict[str, tuple[str, ...]]) -> frozenset[str]:
    return frozenset(f"ml.{family}.{size}" for family, sizes in families.items() for size in sizes)


GPU_INSTANCE_TYPES = _expand(GPU_FAMILIES)
CPU_INSTANCE_TYPES = _expand(CPU_FAMILIES)
ALL_INSTANCE_TYPES = GPU_INSTANCE_TYPES | CPU_INSTANCE_TYPES

GLUE_WORKER_TYPES = frozenset({"G.025X", "G.1X", "G.2X", "G.4X", "G.8X"})
GLUE_VERSIONS = frozenset({"4.0", "5.0"})


# Families whose instances carry local NVMe instance storage: SageMaker refuses an endpoint config KmsKeyId for
# them (that storage is always encrypted by the hardware), so the KMS key is only given for the others.
INSTANCE_STORE_FAMILIES = frozenset(
    {"g4dn", "g5", "g6", "g6e", "p3dn", "p4d", "p4de", "p5", "p5e", "p5en", "m5d", "c5d", "r5d"}
)

# NVIDIA GPUs per instance where there is more than one (CloudWatch's GPUUtilization sums them: 0-100% x GPUs).
_GPUS = {
    "ml.g4dn.12xlarge": 4,
    "ml.g5.12xlarge": 4, "ml.g5.24xlarge": 4, "ml.g5.48xlarge": 8,
    "ml.g6.12xlarge": 4, "ml.g6.24xlarge": 4, "ml.g6.48xlarge": 8,
    "ml.g6e.12xlarge": 4, "ml.g6e.24xlarge": 4, "ml.g6e.48xlarge": 8,
    "ml.p3.8xlarge": 4, "ml.p3.16xlarge": 8, "ml.p3dn.24xlarge": 8,
    "ml.p4d.24xlarge": 8, "ml.p4de.24xlarge": 8, "ml.p5.48xlarge": 8, "ml.p5e.48xlarge": 8, "ml.p5en.48xlarge": 8,
}  # fmt: skip


def has_instance_store(instance_type: str) -> bool:
    return instance_type.split(".")[1] in INSTANCE_STORE_FAMILIES


def gpu_count(instance_type: str) -> int:
    """GPUs of a GPU instance type (1 unless listed above)."""
    if instance_type not in GPU_INSTANCE_TYPES:
        raise ValueError(f"{instance_type} is not a GPU instance type")
    return _GPUS.get(instance_type, 1)
