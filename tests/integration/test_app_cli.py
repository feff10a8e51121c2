"""The entry points a platform engineer types: `python app.py` / `npx cdk synth -c env=...`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def run_app(tmp_path, *context: str, config: Path | None = None):
    args = [sys.executable, "app.py"]
    env = {**os.environ, "CDK_OUTDIR": str(tmp_path / "out")}
    ctx = dict(item.split("=", 1) for item in context)
    if config:
        ctx["config"] = str(config)
    env["CDK_CONTEXT_JSON"] = json.dumps(ctx)
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_bad_config_fails_before_synthesizing_anything(tmp_path):
    raw = yaml.safe_load((ROOT / "config" / "modelgate.yaml").read_text())
    last = raw["environments"][-1]  # the chain's last environment
    last["account"] = "55555"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    result = run_app(tmp_path, config=bad)
    assert result.returncode == 1
    assert f"environments.{last['name']}.account: must be a 12-digit AWS account id" in result.stderr
    assert str(bad) in result.stderr or "bad.yaml" in result.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_unknown_environment_selector_is_refused(tmp_path):
    result = run_app(tmp_path, "env=staging")
    assert result.returncode == 1
    assert "unknown environment 'staging'" in result.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("npx") is None, reason="Node.js is not installed")
def test_npx_cdk_synth_one_environment_offline_without_credentials(tmp_path):
    """The pinned CLI reads this aws-cdk-lib's assemblies and needs no AWS credentials for synth."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        ["npx", "--no-install", "cdk", "synth", "--quiet", "-c", "env=dev", "-o", str(tmp_path / "out")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    stages = [name for name in manifest["artifacts"] if name.startswith("assembly-")]
    assert stages == ["assembly-modelgate-dev"], "only the selected environment (and no pipeline) is synthesized"
