"""Builds the CDK app from config: one Stage per selected environment, plus the CI/CD pipeline.

Selectors (CDK context):
  -c env=NAME         only that environment of the chain (also: NAME,NAME); none or env=all: every environment
                      + the CI/CD pipeline
  -c config=PATH      another configuration file (default config/modelgate.yaml)
"""

from __future__ import annotations

import json
from pathlib import Path

from aws_cdk import App
from aws_cdk import Environment as CdkEnvironment

from infra.build.nag import apply_nag
from infra.build.pipeline_assets import shared_builders
from infra.config import DEFAULT_CONFIG_PATH, ModelGateConfig, load_config
from infra.constructs.promotion_gate import promotion_gates
from stacks.cicd_stack import CicdStack
from stacks.stage import ModelGateStage
from stacks.topology import Topology

ROOT = Path(__file__).resolve().parent.parent


def feature_flags() -> dict:
    """The feature flags of cdk.json, so that `python app.py` (tests, bench) synthesizes what `cdk synth` does."""
    return json.loads((ROOT / "cdk.json").read_text())["context"]


def stage_id(project_name: str, environment_name: str) -> str:
    return f"{project_name}-{environment_name}"


def build_app(context: dict | None = None, outdir: str | None = None) -> App:
    """Create the app. Config errors raise ConfigError before any construct exists, so nothing is synthesized."""
    app = App(context={**feature_flags(), **(context or {})}, outdir=outdir)
    config = load_config(app.node.try_get_context("config") or DEFAULT_CONFIG_PATH)
    selector = app.node.try_get_context("env")
    with shared_builders():  # every pipeline definition of the app from one SDK process per region
        add_environments(app, config, selector)
    return app


def add_environments(app: App, config: ModelGateConfig, selector: str | None) -> list[ModelGateStage]:
    stages = [
        ModelGateStage(
            app,
            stage_id(config.project.name, env.name),
            project=config.project,
            environment=env,
            models=config.models,
            topology=Topology.from_config(config, env.name),
        )
        for env in config.select(selector)
    ]
    # The pipeline deploys every environment in order, so it only makes sense when all are selected.
    if config.cicd is not None and (not selector or selector == "all"):
        cicd = CicdStack(
            app,
            f"{config.project.name}-cicd",
            cicd=config.cicd,
            stages=stages,
            gates=promotion_gates(config),
            env=CdkEnvironment(account=config.cicd.account, region=config.cicd.region),
        )
        apply_nag(cicd)
    return stages
