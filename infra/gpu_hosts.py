"""Which SageMaker inference host (InferenceAmiVersion) can run which Triton image on which GPU family.

SageMaker's default GPU host for ml.g4dn / ml.g5 / ml.p4d has NVIDIA driver 470 (CUDA 11.4): every Triton image
since 23.x needs CUDA 12 or 13 and would fail to start there. The endpoint variant therefore always names an
`InferenceAmiVersion` whose driver is at least the image's minimum, chosen here from one table and checked at
synth (config: `serving.triton_version`, `serving.instance_type`, optional `serving.inference_ami_version`).

Sources (2026-12-01): the SageMaker API reference of ProductionVariant.InferenceAmiVersion (AMI names, driver
and CUDA per AMI, as in botocore's service model), SageMaker's "Best practices to minimize interruptions during
GPU driver upgrades" page (inference-gpu-drivers: default drivers per family; the families an AMI override
supports), NVIDIA's Triton release notes (CUDA per release) and CUDA toolkit release notes (minimum Linux driver
per CUDA version). The AL2 AMIs' operating system, Amazon Linux 2, reached end of support on 2026-06-30: the
AL2023 AMI is preferred wherever it is compatible.

We do not rely on CUDA forward compatibility: SageMaker's -1 AMIs ship the NVIDIA Container Toolkit with CUDA
compat mounting disabled, so the host's own driver must be new enough.
"""

from __future__ import annotations

from dataclasses import dataclass

# Triton image release -> CUDA version it is built on (NVIDIA's Triton release notes).
TRITON_CUDA: dict[str, str] = {
    "23.12": "12.3",
    "24.01": "12.3",
    "24.03": "12.4",
    "24.05": "12.4",
    "24.09": "12.6",
    "25.04": "12.9",
    "25.09": "13.0",
    "26.05": "13.0",  # CUDA 13.x: minor-version compatible from R580 (13.0's minimum)
}

# CUDA version -> minimum NVIDIA Linux driver branch (CUDA toolkit release notes, "minimum required driver").
CUDA_MIN_DRIVER: dict[str, int] = {"12.3": 545, "12.4": 550, "12.6": 560, "12.9": 575, "13.0": 580}

# CUDA 13 dropped GPUs below compute capability 7.5 (Maxwell, Pascal, Volta).
CUDA_MIN_COMPUTE_CAPABILITY: dict[str, float] = {"13.0": 7.5}

# GPU family -> (GPU, compute capability).
FAMILY_GPU: dict[str, tuple[str, float]] = {
    "p3": ("V100", 7.0),
    "p3dn": ("V100", 7.0),
    "g4dn": ("T4", 7.5),
    "g5": ("A10G", 8.6),
    "g6": ("L4", 8.9),
    "g6e": ("L40S", 8.9),
    "p4d": ("A100", 8.0),
    "p4de": ("A100", 8.0),
    "p5": ("H100", 9.0),
    "p5e": ("H200", 9.0),
    "p5en": ("H200", 9.0),
}


@dataclass(frozen=True)
class InferenceAmi:
    name: str  # ProductionVariant.InferenceAmiVersion
    driver: int  # NVIDIA driver branch
    cuda: str
    families: frozenset[str]  # GPU families SageMaker supports this AMI on


# Newest first: the first compatible AMI is the one chosen. The families of the -2 AMIs are those the API reference
# listed for them; for -3-1 and -4-1 only driver and CUDA were confirmed here (2026-12-01): their families are
# those of -2 plus the newer g6e/p5e/p5en and minus p3 (Volta). Check the inference-gpu-drivers page when adding one.
INFERENCE_AMIS: tuple[InferenceAmi, ...] = (
    InferenceAmi(
        "al2023-ami-sagemaker-inference-gpu-4-1",
        580,
        "13.0",
        frozenset({"g4dn", "g5", "g6", "g6e", "p4d", "p4de", "p5", "p5e", "p5en"}),
    ),
    InferenceAmi(
        "al2-ami-sagemaker-inference-gpu-3-1",
        550,
        "12.4",
        frozenset({"g4dn", "g5", "g6", "g6e", "p4d", "p4de", "p5", "p5e", "p5en"}),
    ),
    InferenceAmi(
        "al2-ami-sagemaker-inference-gpu-2-1",
        535,
        "12.2",
        frozenset({"g4dn", "g5", "g6", "p3", "p4d", "p4de", "p5"}),
    ),
    InferenceAmi(
        "al2-ami-sagemaker-inference-gpu-2",
        535,
        "12.2",
        frozenset({"g4dn", "g5", "g6", "p3", "p4d", "p4de", "p5"}),
    ),
)
AMIS_BY_NAME = {ami.name: ami for ami in INFERENCE_AMIS}


class NoCompatibleHostError(ValueError):
    pass


def _family(instance_type: str) -> str:
    return instance_type.split(".")[1]


def minimum_driver(triton_version: str) -> int:
    return CUDA_MIN_DRIVER[TRITON_CUDA[triton_version]]


def why_incompatible(ami: InferenceAmi, triton_version: str, instance_type: str) -> str | None:
    """Why `ami` cannot run Triton `triton_version` on `instance_type`, or None if it can."""
    family, cuda = _family(instance_type), TRITON_CUDA[triton_version]
    if family not in ami.families:
        return f"{ami.name} is not offered on ml.{family} (it supports {', '.join(sorted(ami.families))})"
    if ami.driver < minimum_driver(triton_version):
        return (
            f"{ami.name} has NVIDIA driver {ami.driver}; Triton {triton_version} (CUDA {cuda}) needs "
            f"{minimum_driver(triton_version)} or later"
        )
    return None


def inference_ami(triton_version: str, instance_type: str, requested: str | None = None) -> str:
    """The InferenceAmiVersion that runs Triton `triton_version` on `instance_type` (the requested one, checked,
    or the newest compatible); NoCompatibleHostError says why none does and what to change."""
    if triton_version not in TRITON_CUDA:
        raise NoCompatibleHostError(
            f"Triton {triton_version} has no CUDA/driver entry in infra/gpu_hosts.py; known: {', '.join(TRITON_CUDA)}"
        )
    family, cuda = _family(instance_type), TRITON_CUDA[triton_version]
    gpu, capability = FAMILY_GPU.get(family, ("?", 0.0))
    needed_capability = CUDA_MIN_COMPUTE_CAPABILITY.get(cuda)
    if needed_capability and capability < needed_capability:
        raise NoCompatibleHostError(
            f"Triton {triton_version} is built on CUDA {cuda}, which does not support {instance_type}'s {gpu} "
            f"(compute capability {capability}, needs {needed_capability}); use a newer GPU family (e.g. ml.g5) "
            f"or an older Triton release"
        )
    if requested is not None:
        if requested not in AMIS_BY_NAME:
            raise NoCompatibleHostError(f"unknown InferenceAmiVersion {requested!r}; known: {', '.join(AMIS_BY_NAME)}")
        reason = why_incompatible(AMIS_BY_NAME[requested], triton_version, instance_type)
        if reason:
            raise NoCompatibleHostError(f"{reason}; omit it to choose a compatible one automatically")
        return requested
    reasons = []
    for ami in INFERENCE_AMIS:
        reason = why_incompatible(ami, triton_version, instance_type)
        if reason is None:
            return ami.name
        reasons.append(reason)
    raise NoCompatibleHostError(
        f"no SageMaker inference AMI runs Triton {triton_version} (CUDA {cuda}, driver >= "
        f"{minimum_driver(triton_version)}) on {instance_type}: " + "; ".join(reasons)
    )
