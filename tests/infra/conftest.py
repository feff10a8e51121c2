"""Template assertions share the session's one synthesis per config (tests/conftest.py: `synth`, `config`;
here `many_synth`, `many_config`: config/examples/many-models.yaml, two models through another chain)."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Template

from tests.conftest import once_per_run

MANY_MODELS = "config/examples/many-models.yaml"


@pytest.hookimpl(trylast=True)  # after -k / -m deselection: only when the toolchain test will run
def pytest_collection_modifyitems(config, items):
    if any(item.nodeid.startswith("tests/infra/test_synth_toolchain.py::test_the_synth_step") for item in items):
        from tests.infra.test_synth_toolchain import prefetch_runtime_venv

        prefetch_runtime_venv()


@pytest.fixture(scope="session")
def many_config():
    from infra.config import load_config

    return load_config(MANY_MODELS)


@pytest.fixture(scope="session")
def many_synth(tmp_path_factory):
    from infra.build.synth_report import synthesize

    return once_per_run(
        tmp_path_factory, "many-models.out", lambda out: synthesize(out, context={"config": MANY_MODELS})
    )


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
