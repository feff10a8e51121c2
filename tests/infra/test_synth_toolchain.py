"""Issue 12, problem 5: the CI/CD Synth step runs with the runtime toolchain only.

CodeBuild's standard image is Ubuntu: Debian's package names (`chromium`, `chromium-driver`) do not exist there,
and the test/demo toolchain (torch, nvidia-pytriton, moto, selenium...) is not needed to synthesize. The test runs
the Synth step's exact commands, as the synthesized pipeline has them, in a copy of the checkout whose `.venv`
holds requirements.txt alone (and its dependencies), with `apt-get`, `apt`, `dpkg` and `sudo` on PATH replaced by
scripts that record any call and fail.

That venv holds exactly what `pip install -r requirements.txt` resolves, installed by uv (pinned in
requirements-dev.txt) instead of pip: sagemaker 3's dependencies make it about 1.5 GB, which pip takes minutes
to unpack on 2 cores and uv about 40 s from a cold cache. It is made once per content of requirements.txt, kept
in `.build/runtime-venv/<hash>/` and reused (`make clean` drops it); its `.runtime` stamp is the Makefile's, so
make sees the runtime toolchain as installed and runs only the Synth step's own commands.
Kept short too: `ENV=dev` in the environment (the Makefile's `ENV ?=`) synthesizes one stage instead of all; the
pinned CDK CLI in node_modules/ is a copy of the checkout's (a link would let an `npm ci` there wipe the original;
`MAKEFLAGS=-o node_modules/.installed` keeps make from re-running it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).parent / "uv"  # requirements-dev.txt
TEST_ONLY = ("torch", "onnx", "onnxruntime", "nvidia-pytriton", "moto", "pytest", "selenium", "tritonclient")


def synth_commands(synth, config) -> list[str]:
    name = f"{config.project.name}-cicd"
    template = synth.stack(name, name).template
    (project,) = [
        resource
        for logical, resource in template["Resources"].items()
        if resource["Type"] == "AWS::CodeBuild::Project" and "Synth" in logical
    ]
    return json.loads(project["Properties"]["Source"]["BuildSpec"])["phases"]["build"]["commands"]


def _runtime_key() -> tuple[Path, Path]:
    requirements = ROOT / "requirements.txt"
    key = hashlib.sha256(requirements.read_bytes() + sys.version.encode()).hexdigest()[:16]
    venv = ROOT / ".build" / "runtime-venv" / key
    return venv, venv / ".runtime"


def runtime_venv() -> Path:
    """A venv with requirements.txt only, made like the Makefile's `runtime` target and cached by its content.
    Under a file lock: a build started by `prefetch_runtime_venv` is waited for, not raced."""
    venv, marker = _runtime_key()
    venv.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{venv}.lock"):
        if not marker.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([str(UV), "venv", "--quiet", "--seed", "--python", sys.executable, str(venv)], check=True)
            subprocess.run(
                [str(UV), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "-r",
                 str(ROOT / "requirements.txt")],
                check=True,
            )  # fmt: skip
            marker.touch()
    return venv


def prefetch_runtime_venv() -> None:
    """Start building the runtime venv in the background when it is not cached (a fresh clone: ~70 s, half of
    it waiting on PyPI), so that it overlaps other tests instead of adding to this one. Its output goes to
    `<venv>.log`; the test's `runtime_venv()` waits on the lock, and builds again (failing loudly) if it failed."""
    venv, marker = _runtime_key()
    if marker.exists():
        return
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{venv}.log", "ab") as log:
        subprocess.Popen(
            [sys.executable, "-c", "from tests.infra.test_synth_toolchain import runtime_venv; runtime_venv()"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # not in the test's process group: a Ctrl-C of the run leaves the cache whole
        )


def checkout_copy(target: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file() and not source.is_symlink():
            destination = target / name.decode()
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)  # keeps mtimes: make sees the venv as up to date
    # A copy, never a link: should make decide to run `npm ci` there, it must not wipe the checkout's own
    # node_modules/ while other tests (xdist workers) run `npx cdk` from it.
    shutil.copytree(ROOT / "node_modules", target / "node_modules", symlinks=True)
    return target


@pytest.mark.slow
@pytest.mark.minutes
def test_the_synth_step_needs_only_the_runtime_requirements_and_no_apt(synth, config, tmp_path):
    commands = synth_commands(synth, config)
    assert commands == ["make synth"], "the Synth step runs the Makefile's entry point"
    repo = checkout_copy(tmp_path / "repo")
    assert not (repo / ".venv").exists()
    (repo / ".venv").symlink_to(runtime_venv())
    fake_bin, calls = tmp_path / "bin", tmp_path / "apt-calls"
    fake_bin.mkdir()
    for tool in ("apt-get", "apt", "dpkg", "sudo"):
        script = fake_bin / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\nexit 1\n')
        script.chmod(0o755)
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))},
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        "ENV": "dev",
        "MAKEFLAGS": "-o node_modules/.installed",
    }
    for command in commands:
        result = subprocess.run(
            ["bash", "-c", command], cwd=repo, env=environ, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert not calls.exists(), calls.read_text()
    assembly = repo / "cdk.out" / f"assembly-{config.project.name}-dev"
    assert sorted(p.name for p in assembly.glob("*.template.json")), "the stage was synthesized"
    installed = subprocess.run(
        [str(UV), "pip", "list", "--python", str(repo / ".venv" / "bin" / "python"), "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = {package["name"].lower() for package in json.loads(installed)}
    assert not names & set(TEST_ONLY), "synth must not need the test/demo toolchain"
    assert "aws-cdk-lib" in names


@pytest.mark.parametrize("target", ["synth", "diff", "deploy", "bootstrap"])
def test_the_aws_facing_targets_never_install_the_test_toolchain(target):
    """`make -n -W <file>`: what make would run if that file had changed; the runtime targets must not reach
    requirements-dev.txt or the Debian packages."""
    for changed in ("requirements-dev.txt", "system-packages.txt"):
        dry = subprocess.run(
            ["make", "-n", "-W", changed, target, "ENV=dev"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        assert "requirements-dev.txt" not in dry, (target, changed, dry)
        assert "system-packages.sh" not in dry, (target, changed, dry)
    assert (
        "-r requirements.txt"
        in subprocess.run(
            ["make", "-n", "-W", "requirements.txt", target, "ENV=dev"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )


def test_the_test_target_does_install_the_test_toolchain():
    dry = subprocess.run(
        ["make", "-n", "-W", "requirements-dev.txt", "test"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "-r requirements-dev.txt" in dry
