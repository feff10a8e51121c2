"""Local Lambda workers: the handler runs in its own process with its own environment, whether the worker is a
fresh interpreter or forked from the zygote (sandbox/lambda_zygote.py, the default)."""

from __future__ import annotations

import os

import pytest

from sandbox import lambda_zygote
from sandbox.lambda_runner import FunctionError, LocalFunction


@pytest.fixture(params=["zygote", "fresh"], autouse=True)
def start_method(request, monkeypatch):
    monkeypatch.setenv("MODELGATE_SANDBOX_ZYGOTE", "1" if request.param == "zygote" else "0")
    return request.param


def test_handler_sees_its_environment_and_prints_do_not_break_the_protocol(tmp_path):
    log = tmp_path / "fn.log"
    with LocalFunction("probe", "tests.unit.lambda_probe.handler", {"GREETING": "hello"}, log=log) as fn:
        assert fn.invoke({"name": "ada"}) == {"message": "hello ada", "function": "probe"}
        assert fn({"name": "bob"})["message"] == "hello bob"
    assert "handling ada" in log.read_text()


def test_handler_exception_is_a_function_error(tmp_path):
    with LocalFunction("probe", "tests.unit.lambda_probe.handler", {"GREETING": "hi"}) as fn:
        with pytest.raises(FunctionError, match="ValueError: no name") as caught:
            fn.invoke({})
        assert caught.value.error_type == "ValueError"
        assert fn.invoke({"name": "still alive"})["message"] == "hi still alive"


def test_each_function_imports_its_handler_with_its_own_environment_only(monkeypatch, start_method):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-runner-s-own-key")  # never reaches a function
    with (
        LocalFunction("one", "tests.unit.lambda_probe.handler", {"GREETING": "hello", "ONLY_ONE": "1"}) as one,
        LocalFunction("two", "tests.unit.lambda_probe.handler", {"GREETING": "bonjour"}) as two,
    ):
        assert one.invoke({"name": "ada"})["message"] == "hello ada"
        assert two.invoke({"name": "ada"})["message"] == "bonjour ada"  # imported anew, not the sibling's module
        assert two.invoke({"getenv": "ONLY_ONE"})["value"] is None
        assert one.invoke({"getenv": "AWS_SECRET_ACCESS_KEY"})["value"] is None
        assert one.invoke({"getenv": "AWS_LAMBDA_FUNCTION_NAME"})["value"] == "one"
        pids = {one.invoke({"getenv": "HOME"})["pid"], two.invoke({"getenv": "HOME"})["pid"], os.getpid()}
        assert len(pids) == 3  # each its own process
        if start_method == "zygote":
            assert lambda_zygote._zygote is not None  # the fast path was taken, not the fallback


def test_a_stopped_worker_exits_and_a_restart_gets_a_new_process():
    fn = LocalFunction("probe", "tests.unit.lambda_probe.handler", {"GREETING": "hi"})
    first = fn.start().invoke({"getenv": "GREETING"})["pid"]
    process = fn._process
    fn.stop()
    assert process.poll() is not None  # gone, not left running
    second = fn.start().invoke({"getenv": "GREETING"})["pid"]
    fn.stop()
    assert first != second
