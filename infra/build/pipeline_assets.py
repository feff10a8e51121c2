"""What the training pipeline's CDK constructs upload or embed, built at synth, deterministic, cached in .build/.

- `code_bundle()`: the step scripts' source bundle (tar.gz: pipelines/steps/paths.py RUNTIME_SOURCES +
  requirements.txt at its root), the `code` input of every SageMaker step;
- `glue_libraries()`: the zip the Glue job imports the shared cleaning from (`--extra-py-files`);
- `pipeline_definition(settings)`: the definition JSON from pipelines/definition.py, with placeholders.

The definition is generated in a child process: importing the sagemaker SDK costs ~3 s and creates boto3
clients, so the synth process never imports it. The child runs with no credentials, no instance metadata and
every HTTP(S) request sent to a closed local port, so a definition that needs AWS fails instead of calling it.
Results are cached by a hash of their inputs (settings, the sources that shape them, the SDK version), like
infra/build/lambda_bundle.py does, so a warm synth only reads files.
"""

from __future__ import annotations

import ast
import contextlib
import gzip
import io
import json
import select
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import zipfile
from importlib import metadata
from pathlib import Path

from infra.build.lambda_bundle import CACHE, ROOT, _cached, _digest
from pipelines.definition_inputs import DefinitionSettings
from pipelines.steps.paths import REQUIREMENTS_FILE, RUNTIME_SOURCES, STEP_SCRIPTS

# Sources whose content shapes the definition (besides the settings and the SDK).
DEFINITION_SOURCES = (
    "pipelines/definition.py",
    "pipelines/definition_inputs.py",
    "pipelines/registration.py",
    "pipelines/steps/paths.py",
    "modelgate/registry.py",
    "modelgate/chain.py",  # the promotion chain
    "modelgate/evaluation_report.py",
)
SDK_DISTRIBUTIONS = ("sagemaker", "sagemaker-core", "sagemaker-mlops", "sagemaker-train")
GLUE_SCRIPT = ROOT / "pipelines" / "glue" / "prep_job.py"
_EPOCH = 315532800  # 1980-01-01: the earliest time a zip entry can carry


class DefinitionBuildError(RuntimeError):
    pass


def _files(entries: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for entry in entries:
        path = ROOT / entry
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        elif path.is_file():
            files.append(path)
        else:
            raise DefinitionBuildError(f"{entry} is listed as a step runtime source but does not exist")
    return files


def _content_hash(files: list[Path], *extra: bytes) -> str:
    return _digest(*extra, *(part for f in files for part in (str(f.relative_to(ROOT)).encode(), f.read_bytes())))


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = len(data), _EPOCH, 0o644, 0, 0
    info.uname = info.gname = ""
    archive.addfile(info, io.BytesIO(data))


def code_bundle() -> Path:
    """sourcedir.tar.gz: byte-identical for identical sources (sorted, fixed times and owners, gzip mtime 0)."""
    files = _files(RUNTIME_SOURCES)
    missing = sorted(set(STEP_SCRIPTS.values()) - {str(f.relative_to(ROOT)) for f in files})
    if missing:
        raise DefinitionBuildError(f"the pipeline runs {missing}, which RUNTIME_SOURCES does not bundle")
    requirements = (ROOT / REQUIREMENTS_FILE).read_bytes()

    def build(into: Path) -> None:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
            # At the root: where the SageMaker training toolkit (and the processing bootstrap) look for it.
            _add(archive, "requirements.txt", requirements)
            for path in files:
                _add(archive, str(path.relative_to(ROOT)), path.read_bytes())
        (into / "sourcedir.tar.gz").write_bytes(gzip.compress(raw.getvalue(), mtime=0))

    return _cached("pipeline-code", _content_hash(files, requirements), build) / "sourcedir.tar.gz"


def glue_sources() -> tuple[str, ...]:
    """prep_job.GLUE_SOURCES, read without importing the job (it imports pandas: half a second of synth)."""
    for node in ast.parse(GLUE_SCRIPT.read_text()).body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "GLUE_SOURCES" for t in targets):
                return tuple(ast.literal_eval(node.value))
    raise DefinitionBuildError(f"{GLUE_SCRIPT.relative_to(ROOT)} does not define GLUE_SOURCES")


def glue_libraries() -> Path:
    """modelgate-glue.zip: the modules the Glue job imports, at the zip's root (Glue's --extra-py-files)."""
    files = _files(glue_sources())

    def build(into: Path) -> None:
        with zipfile.ZipFile(into / "modelgate-glue.zip", "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in files:
                info = zipfile.ZipInfo(str(path.relative_to(ROOT)), date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                archive.writestr(info, path.read_bytes(), compress_type=zipfile.ZIP_DEFLATED)

    return _cached("glue-libraries", _content_hash(files), build) / "modelgate-glue.zip"


def _sdk_versions() -> bytes:
    versions = []
    for name in SDK_DISTRIBUTIONS:
        try:
            versions.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} missing")
    return " ".join(versions).encode()


def definition_hash(settings: DefinitionSettings) -> str:
    return _content_hash(_files(DEFINITION_SOURCES), settings.to_json().encode(), _sdk_versions())


CLOSED_PROXY = "http://127.0.0.1:9"  # discard port: nothing listens, so any request fails at once


def _sealed_environment(region: str, home: str, proxy: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": home,  # no ~/.aws or ~/.config/sagemaker of the person running synth
        "PYTHONPATH": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "AWS_DEFAULT_REGION": region,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(Path(home) / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(Path(home) / "none"),
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "NO_PROXY": "",
    }


def _failed(settings: DefinitionSettings, cause: str) -> DefinitionBuildError:
    return DefinitionBuildError(f"building the SageMaker pipeline definition failed ({settings.to_json()}):\n{cause}")


class _Builder:
    """One `python -m pipelines.definition --serve` child, sealed as `generate_definition`'s one-shot child is."""

    def __init__(self, region: str, proxy: str) -> None:
        self.home = tempfile.mkdtemp(prefix="modelgate-definition-")
        # A file, not a pipe, so the SDK's chatter never blocks the child; it lives as long as the child does.
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.stderr = ""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.definition", "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            cwd=ROOT,
            env=_sealed_environment(region, self.home, proxy),
            text=True,
        )

    def build(self, settings: DefinitionSettings) -> str:
        try:
            self.process.stdin.write(settings.to_json() + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it died: the read below says why
        ready, _, _ = select.select([self.process.stdout], [], [], BUILD_TIMEOUT)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.close()
            raise _failed(settings, self.stderr or f"the definition builder gave no answer within {BUILD_TIMEOUT} s")
        reply = json.loads(line)
        if "error" in reply:
            raise _failed(settings, reply["error"])
        return reply["definition"]

    def close(self) -> None:
        """Ends the child (what it wrote to stderr stays in `stderr`)."""
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self.errors.closed:
            self.errors.seek(0)
            self.stderr = self.errors.read().decode(errors="replace").strip()[-4000:]
            self.errors.close()
        shutil.rmtree(self.home, ignore_errors=True)


BUILD_TIMEOUT = 300  # seconds for one definition
_builders: dict[tuple[str, str], _Builder] | None = None  # inside `shared_builders`: one per (region, proxy)
_builders_lock = threading.Lock()


@contextlib.contextmanager
def shared_builders():
    """Inside: definitions are built by one long-lived child per region instead of one child each (a cold synth
    of many models x environments pays the SDK's import once: ~2 s of CPU per definition instead of ~8). The
    children end when the block does, so no process outlives the synth (stacks/app_builder.py `build_app`)."""
    global _builders
    with _builders_lock:
        outer, _builders = _builders, _builders if _builders is not None else {}
    try:
        yield
    finally:
        if outer is None:
            with _builders_lock:
                builders, _builders = _builders, None
            for builder in builders.values():
                builder.close()


def generate_definition(settings: DefinitionSettings, *, proxy: str = CLOSED_PROXY) -> str:
    """Run pipelines/definition.py in a sealed child process; returns the definition JSON text.

    `proxy` receives every HTTP(S) request the child makes (tests point it at a listener that counts them)."""
    with _builders_lock:
        if _builders is not None:
            key = (settings.region, proxy)
            if key not in _builders or _builders[key].process.poll() is not None:
                _builders[key] = _Builder(*key)
            return _builders[key].build(settings)
    with tempfile.TemporaryDirectory(prefix="modelgate-definition-") as home:
        result = subprocess.run(
            [sys.executable, "-m", "pipelines.definition"],
            input=settings.to_json(),
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=_sealed_environment(settings.region, home, proxy),
            timeout=BUILD_TIMEOUT,
        )
    if result.returncode != 0:
        raise _failed(settings, result.stderr.strip())
    return result.stdout


def pipeline_definition(settings: DefinitionSettings) -> str:
    def build(into: Path) -> None:
        (into / "definition.json").write_text(generate_definition(settings))

    return (_cached("pipeline-definition", definition_hash(settings), build) / "definition.json").read_text()


__all__ = ["CACHE", "code_bundle", "glue_libraries", "pipeline_definition", "shared_builders"]
