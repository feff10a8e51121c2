"""What the pipeline stack builds at synth: the step code bundle (and that SageMaker's processing bootstrap really
runs a step from it), the Glue libraries, and the offline, sealed, cached definition build."""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from infra.build import pipeline_assets
from pipelines import definition_inputs
from pipelines.definition import processing_bootstrap
from pipelines.steps.paths import REQUIREMENTS_FILE, RUNTIME_SOURCES, STEP_SCRIPTS

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = definition_inputs.DefinitionSettings(
    region="eu-west-1",
    model_package_group="energy-forecast",
    prep_engine="processing",
    processing_instance_type="ml.m5.xlarge",
    training_instance_type="ml.g5.xlarge",
    training_instance_count=2,
    max_runtime_seconds=3600,
    metric_threshold=0.9,
    triton_image_uri="763104351884.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-tritonserver:25.09-py3",
    inference_instance_type="ml.g5.xlarge",
)


def test_code_bundle_is_reproducible_and_holds_every_runtime_source():
    bundle = pipeline_assets.code_bundle()
    data = bundle.read_bytes()
    assert data[4:8] == b"\0\0\0\0", "gzip mtime is zero: same sources, same bytes, same asset hash"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as archive:
        members = archive.getmembers()
        names = [m.name for m in members]
        assert archive.extractfile("requirements.txt").read() == (ROOT / REQUIREMENTS_FILE).read_bytes()
    assert {m.mtime for m in members} == {pipeline_assets._EPOCH}
    assert {(m.uid, m.gid) for m in members} == {(0, 0)}
    for source in RUNTIME_SOURCES:
        assert any(name == source or name.startswith(source + "/") for name in names), source
    assert set(STEP_SCRIPTS.values()) <= set(names)
    assert not any("__pycache__" in name or name.startswith(("stacks/", "tests/")) for name in names)


def test_glue_libraries_zip_holds_the_job_imports_at_its_root():
    with zipfile.ZipFile(pipeline_assets.glue_libraries()) as archive:
        names = set(archive.namelist())
    assert set(pipeline_assets.glue_sources()) <= names
    assert "pipelines/steps/cleaning.py" in names


@pytest.mark.slow
def test_processing_bootstrap_runs_a_step_from_the_bundle(tmp_path):
    """The exact command the Processing jobs start with, against the real bundle: unpack, install (all pins are
    already installed here; PIP_NO_INDEX proves nothing is fetched), run prep.py on generated readings."""
    code = tmp_path / "code"
    code.mkdir()
    archive = "0123abcd.gz"  # CDK names the asset object <hash>.gz
    (code / archive).write_bytes(pipeline_assets.code_bundle().read_bytes())
    opt_ml = tmp_path / "opt_ml"
    raw = opt_ml / "processing/input/raw"
    subprocess.run(
        [sys.executable, "-m", "pipelines.datagen", "--out", str(raw), "--customers", "3", "--days", "2"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PIP_NO_INDEX": "1",
        "MODELGATE_OPT_ML": str(opt_ml),
        "PYTHONPATH": "",
    }
    result = subprocess.run(
        ["/bin/bash", "-c", processing_bootstrap(archive, str(code)), "modelgate-step", STEP_SCRIPTS["prep"]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    curated = opt_ml / "processing/output/curated"
    assert sorted(p.name for p in curated.iterdir()) == [
        f"customer={c}" for c in sorted(p.name.split("=")[1] for p in curated.iterdir())
    ]
    assert len(list(curated.iterdir())) == 3
    assert (opt_ml / "processing/output/report/prep_report.json").is_file()


def test_bootstrap_stops_at_the_first_failing_command(tmp_path):
    result = subprocess.run(
        ["/bin/bash", "-c", processing_bootstrap("missing.gz", str(tmp_path)), "modelgate-step", "x.py"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "missing.gz" in result.stderr


@pytest.fixture
def counting_proxy():
    """A local listener standing in for the network: records every connection the definition build opens."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    connections: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(1)
                try:
                    connections.append(connection.recv(200))
                except OSError:
                    connections.append(b"")

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", connections
    stop.set()
    thread.join()
    server.close()


def test_one_builder_process_serves_a_synths_definitions_as_fresh_processes_build_them(counting_proxy):
    """`shared_builders` (build_app's): the SDK imported once for every definition of an app. Each definition must
    be byte for byte what a fresh child builds (deterministic: same settings, same definition), a refused one must
    not stop the next, a builder that died is replaced, and none outlives the block. Neither a fresh child nor a
    builder makes a single network request. (One test: a fresh child costs ~8 s of SDK import.)"""
    proxy, connections = counting_proxy
    glue = definition_inputs.DefinitionSettings(**{**SETTINGS.__dict__, "prep_engine": "glue"})
    spark = definition_inputs.DefinitionSettings(**{**SETTINGS.__dict__, "prep_engine": "spark"})
    fresh = pipeline_assets.generate_definition(SETTINGS, proxy=proxy)
    assert connections == [], f"the SDK tried the network: {connections}"
    parameters = {p["Name"]: p.get("DefaultValue") for p in json.loads(fresh)["Parameters"]}
    assert parameters["TrainingInstanceCount"] == 2
    assert "Epochs" not in parameters, "the closed-form fit has no epochs: no knob that does nothing"
    assert parameters["MetricThreshold"] == 0.9
    with pipeline_assets.shared_builders():
        served = [pipeline_assets.generate_definition(s, proxy=proxy) for s in (SETTINGS, glue)]
        with pytest.raises(pipeline_assets.DefinitionBuildError, match="unknown prep engine 'spark'"):
            pipeline_assets.generate_definition(spark, proxy=proxy)
        (builder,) = pipeline_assets._builders.values()
        served.append(pipeline_assets.generate_definition(SETTINGS, proxy=proxy))
        builder.process.kill()
        builder.process.wait()
        served.append(pipeline_assets.generate_definition(SETTINGS, proxy=proxy))
        (replacement,) = pipeline_assets._builders.values()
    assert served[0] == served[2] == served[3] == fresh
    assert json.loads(served[1])["Steps"] != json.loads(fresh)["Steps"], "the glue settings built their own"
    assert replacement is not builder
    assert replacement.process.poll() is not None, "the builder ends with the block"
    assert pipeline_assets._builders is None
    assert connections == [], f"the SDK tried the network: {connections}"


def test_definition_failures_name_the_settings_and_the_cause():
    broken = definition_inputs.DefinitionSettings(**{**SETTINGS.__dict__, "prep_engine": "spark"})
    with pytest.raises(pipeline_assets.DefinitionBuildError, match="unknown prep engine 'spark'"):
        pipeline_assets.generate_definition(broken)


def test_the_definition_cache_is_keyed_by_every_input():
    base = pipeline_assets.definition_hash(SETTINGS)
    other = definition_inputs.DefinitionSettings(**{**SETTINGS.__dict__, "metric_threshold": 0.8})
    assert pipeline_assets.definition_hash(other) != base
    assert pipeline_assets.definition_hash(SETTINGS) == base


def test_substitution_refuses_unknown_names_and_leftover_placeholders():
    text = json.dumps({"a": definition_inputs.placeholder("RawBucket"), "b": definition_inputs.code_uri()})
    with pytest.raises(KeyError, match="unknown placeholders"):
        definition_inputs.substitute(text, {"Nope": "x"})
    with pytest.raises(ValueError, match=r"still references \['CodeBucket', 'CodeKey'\]"):
        definition_inputs.substitute(text, {"RawBucket": "raw"})
    done = definition_inputs.substitute(text, {"RawBucket": "raw", "CodeBucket": "code", "CodeKey": "k.gz"})
    assert json.loads(done) == {"a": "raw", "b": "s3://code/k.gz"}
