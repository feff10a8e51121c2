"""One real Triton per test session (per xdist worker): started once, stopped and its process group killed at
the end, even when tests fail."""

from __future__ import annotations

import pytest

from sandbox.triton import LocalTriton


@pytest.fixture(scope="session")
def triton(tmp_path_factory):
    with LocalTriton(tmp_path_factory.mktemp("triton")) as running:
        yield running
