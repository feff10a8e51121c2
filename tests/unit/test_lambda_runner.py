"""Local Lambda workers: the handler runs in its own process with its own environment."""

from __future__ import annotations

import pytest

from sandbox.lambda_runner import FunctionError, LocalFunction


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
