"""Template assertions share the session's one synthesis (tests/conftest.py: `synth`, `config`)."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Template


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
