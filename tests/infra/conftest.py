"""One synthesis of the whole app per test session (every stage, the pipeline, cdk-nag), shared by all
template tests: synth is the slow part, assertions are cheap."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Template

from modelgate.config import load_config
from stacks.synth_report import SynthResult, synthesize


@pytest.fixture(scope="session")
def config():
    return load_config()


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> SynthResult:
    return synthesize(tmp_path_factory.mktemp("cdk.out"))


@pytest.fixture(scope="session")
def template(synth, config):
    """template(env, stack) -> aws_cdk.assertions.Template of that stage's stack."""
    cache: dict[tuple[str, str], Template] = {}

    def get(environment: str, stack: str) -> Template:
        key = (environment, stack)
        if key not in cache:
            cache[key] = Template.from_json(synth.stack(f"{config.project.name}-{environment}", stack).template)
        return cache[key]

    return get
