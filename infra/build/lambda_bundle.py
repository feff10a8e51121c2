"""Docker-free Lambda packaging, shared by every ModelGate function.

Two assets, both produced by CDK local bundling (no Docker image is ever pulled):
- `dependencies_layer`: the pinned third-party packages of `lambdas/requirements.txt`, installed by pip for
  the Lambda platform (`--platform manylinux2014_x86_64 --only-binary=:all:`, CPython of the Lambda runtime)
  into `python/`, the layout Lambda layers use;
- `function_code`: the handlers in `lambdas/` plus the `modelgate` package they import, and per function the
  settings files its stack ships at the package's root (`files`: lists that grow with the number of models, e.g.
  modelgate/approval/settings.py MODELS_FILE, too large for Lambda's 4 KB environment).

Both are cached under `.build/` by a content hash, so pip runs once per requirements change and a synth of
the whole app (or one test) only copies files. The hash is also the CDK asset hash, so synth is deterministic
(a function's settings files are part of its hash, and are written at bundling, never cached).
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

ROOT = Path(__file__).resolve().parents[2]
LAMBDAS = ROOT / "lambdas"
REQUIREMENTS = LAMBDAS / "requirements.txt"
CACHE = ROOT / ".build"

RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.X86_64
_PYTHON_VERSION = "3.14"
_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64")
# Only what the handlers import travels: the runtime packages. Synth-time code (the CDK app, config parsing,
# instance and image tables: stacks/, infra/) and ML code (pipelines/) live in other packages.
_CODE_PACKAGES = ("lambdas", "modelgate")
_CODE_EXCLUDE = ("__pycache__", "*.pyc", "requirements*.txt")

# Lambda's limit on a function's unzipped deployment package, its layers included (250 MB): with the model lists in
# the package, the next limit on the number of models (at a few hundred bytes a model: far beyond any stack's).
PACKAGE_LIMIT = 262_144_000  # 250 MiB: "Unzipped size must be smaller than 262144000 bytes"

# Never used: local bundling always succeeds or raises, but CDK requires an image in BundlingOptions.
_NO_DOCKER = DockerImage.from_registry("modelgate/no-docker-bundling")


class BundlingError(RuntimeError):
    pass


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:32]


def dependencies_hash() -> str:
    return _digest(REQUIREMENTS.read_bytes(), _PYTHON_VERSION.encode(), " ".join(_PLATFORMS).encode())


def _code_files() -> list[Path]:
    files = []
    for package in _CODE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if not any(relative.match(pattern) for pattern in _CODE_EXCLUDE) and "__pycache__" not in path.parts:
                files.append(path)
    return files


def code_hash() -> str:
    files = _code_files()
    return _digest(*(part for path in files for part in (str(path.relative_to(ROOT)).encode(), path.read_bytes())))


def _cached(kind: str, digest: str, build) -> Path:
    """Build into a temp dir and rename into place, so concurrent synths (pytest-xdist) never see half a tree."""
    target = CACHE / kind / digest
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{digest}-"))
    try:
        build(staging)
        staging.rename(target)
    except OSError:
        if not target.is_dir():  # lost the race to another process: theirs is as good as ours
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def build_dependencies() -> Path:
    def install(into: Path) -> None:
        command = [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
            "--only-binary=:all:", "--implementation", "cp", "--python-version", _PYTHON_VERSION,
            *(arg for platform in _PLATFORMS for arg in ("--platform", platform)),
            "--target", str(into / "python"), "--requirement", str(REQUIREMENTS),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise BundlingError(
                f"pip could not install {REQUIREMENTS} for the Lambda platform "
                f"(Python {_PYTHON_VERSION}, manylinux x86_64):\n{result.stderr.strip()}"
            )

    return _cached("lambda-layer", dependencies_hash(), install)


def build_code() -> Path:
    def copy(into: Path) -> None:
        for path in _code_files():
            destination = into / path.relative_to(ROOT)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)

    return _cached("lambda-code", code_hash(), copy)


@jsii.implements(ILocalBundling)
class _CopyFromCache:
    def __init__(self, build, files: Mapping[str, bytes] | None = None) -> None:
        self._build, self._files = build, dict(files or {})

    def try_bundle(self, output_dir: str, *, image=None, **_options) -> bool:
        shutil.copytree(self._build(), output_dir, dirs_exist_ok=True)
        for name, data in self._files.items():
            (Path(output_dir) / name).write_bytes(data)
        return True


def _asset(build, digest: str, files: Mapping[str, bytes] | None = None) -> lambda_.Code:
    return lambda_.Code.from_asset(
        str(LAMBDAS),
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=digest,
        bundling=BundlingOptions(image=_NO_DOCKER, local=_CopyFromCache(build, files)),
    )


@functools.cache
def _tree_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def check_package_size(function: str, sizes: Mapping[str, int], limit: int = PACKAGE_LIMIT) -> int:
    """The unzipped package's size (code, settings files, layer); BundlingError beyond Lambda's limit."""
    total = sum(sizes.values())
    if total > limit:
        parts = ", ".join(f"{part} {size:,}" for part, size in sizes.items())
        raise BundlingError(
            f"{function}: its deployment package would be {total:,} bytes unzipped ({parts}), over Lambda's "
            f"{limit:,}: split the models over two projects (project.name)"
        )
    return total


def function_code(function: str = "function", files: Mapping[str, str] | None = None) -> lambda_.Code:
    """The shared code asset; with `files` ({name: text}), its copy with those files at the package's root."""
    if not files:
        return _asset(build_code, code_hash())
    extra = {name: text.encode() for name, text in sorted(files.items())}
    for name in extra:
        if "/" in name or name in _CODE_PACKAGES or not name.endswith(".json"):
            raise BundlingError(f"{function}: {name!r} is not a settings file name (<name>.json, no folder)")
    check_package_size(
        function,
        {
            "code": sum(path.stat().st_size for path in _code_files()),
            "settings files": sum(len(data) for data in extra.values()),
            "dependencies layer": _tree_bytes(build_dependencies()),
        },
    )
    digest = _digest(code_hash().encode(), *(part for name, data in extra.items() for part in (name.encode(), data)))
    return _asset(build_code, digest, extra)


def dependencies_layer(scope: Construct, construct_id: str = "Dependencies") -> lambda_.LayerVersion:
    return lambda_.LayerVersion(
        scope,
        construct_id,
        code=_asset(build_dependencies, dependencies_hash()),
        compatible_runtimes=[RUNTIME],
        compatible_architectures=[ARCHITECTURE],
        description="ModelGate Lambda dependencies (lambdas/requirements.txt)",
    )
