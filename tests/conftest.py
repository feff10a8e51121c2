"""Shared test set-up: no AWS credentials or network endpoints are ever used by accident, and one synthesis
of the whole app per test run (every stage, the pipeline, cdk-nag) shared by all tests that read templates, on
every pytest-xdist worker (`once_per_run`)."""

from __future__ import annotations

import os
import pickle
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

# Before anything imports boto3 or aws_cdk.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
    }
)
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def config():
    from infra.config import load_config

    return load_config()


def once_per_run(tmp_path_factory, name: str, build: Callable[[Path], Any]) -> Any:
    """`build(folder)` once per test run, not once per xdist worker: the first worker to ask builds under a file
    lock and pickles the result next to `folder`; the others wait for it and read it. Only for results that
    nobody changes afterwards (a synthesized assembly is read-only to the tests)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's temp folder, shared by its workers
    folder, done = root / f"once-{name}", root / f"once-{name}.pickle"
    with FileLock(root / f"once-{name}.lock"):
        if done.exists():
            return pickle.loads(done.read_bytes())  # noqa: S301 - written by this run's own worker
        folder.mkdir(exist_ok=True)
        result = build(folder)
        done.write_bytes(pickle.dumps(result))
        return result


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    from infra.build.synth_report import synthesize

    return once_per_run(tmp_path_factory, "cdk.out", synthesize)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook
def pytest_collection_modifyitems(config, items):
    """`--dist loadgroup` (pyproject.toml): a module's tests that share a fixture built once per module (a
    synthesis, a deployed stack or world, trained models, a packaged repository) run on one xdist worker, so it is
    built once rather than once on each worker, and no other module's in-process moto resets it in between.
    Marks a test module sets itself (`xdist_group`) win.

    pytest-xdist 3.8 groups a test by suffixing its id with `@<group>` through `item._nodeid`, which pytest 9 no
    longer reads (the id is `item._id`): left alone, every group would be silently split across workers."""
    if not getattr(config.option, "loadgroup", False):  # set in xdist's workers with --dist loadgroup only
        return
    from _pytest.nodeid import coerce_node_id

    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is not None and not any(item.iter_markers("xdist_group")):
            module = item.nodeid.split("::")[0]
            for name in info.names_closure:
                definitions = info.name2fixturedefs.get(name) or ()
                if any(d.scope == "module" or (d.scope == "session" and d.baseid == module) for d in definitions):
                    item.add_marker(pytest.mark.xdist_group(module))
                    break
        mark = item.get_closest_marker("xdist_group")
        if mark is not None and "@" not in item.nodeid:
            group = mark.args[0] if mark.args else mark.kwargs.get("name", "default")
            item._id = coerce_node_id(f"{item.nodeid}@{group}")
    items[:] = scheduled(items)


def scheduled(items: list) -> list:
    """Longest first (`--no-loadscope-reorder` in pyproject.toml makes xdist hand out work in this order): tests
    marked `minutes`, then groups by size (what xdist's own reordering does), then single tests, which fill
    the end of the run on whichever worker is free. Left to xdist, the demo (a quarter of the run) was handed
    out after every group, in the middle of the run, and could end it alone."""
    scopes = [item.nodeid.rsplit("@", 1)[1] if "@" in item.nodeid else item.nodeid for item in items]
    sizes, first = Counter(scopes), {}
    for index, scope in enumerate(scopes):
        first.setdefault(scope, index)
    order = sorted(
        range(len(items)),
        key=lambda i: (items[i].get_closest_marker("minutes") is None, -sizes[scopes[i]], first[scopes[i]], i),
    )
    return [items[i] for i in order]
