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
