"""The Lambda functions of deployed stacks, each run by its real handler in its own process (LocalFunction),
started on first use with the environment its template gives it plus per-stack overrides (the few values that
point at things that cannot exist locally: public API URLs, the identity provider, the endpoint), and with the
credentials of its own execution role, as Lambda runs it: the local AWS enforces that role's policies."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.aws import LocalAccount
from sandbox.cloudformation import DeployedStack, LocalFunctionSpec
from sandbox.lambda_runner import LocalFunction


def function_environ(account: LocalAccount, spec: LocalFunctionSpec, **overrides: str) -> dict[str, str]:
    """What Lambda gives the function's process: its template's environment and its execution role's credentials."""
    as_role = account.assume(spec.role, "lambda.amazonaws.com", session_name=spec.name)
    return as_role.environ(**{**spec.environment, **overrides})


@dataclass
class DeployedFunctions:
    account: LocalAccount
    log_dir: Path
    stacks: dict[str, DeployedStack] = field(default_factory=dict)  # stack name -> stack
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)  # stack name -> environment overrides
    _running: dict[tuple[str, str], LocalFunction] = field(default_factory=dict)

    def add(self, stack: DeployedStack, **overrides: str) -> None:
        self.stacks[stack.name] = stack
        self.overrides.setdefault(stack.name, {}).update(overrides)

    def override(self, stack: DeployedStack, **overrides: str) -> None:
        """Change environment variables of the stack's functions; running ones restart on their next use."""
        self.overrides.setdefault(stack.name, {}).update(overrides)
        for key in [key for key in self._running if key[0] == stack.name]:
            self._running.pop(key).stop()

    def function(self, stack: str, logical_id: str) -> LocalFunction:
        key = (stack, logical_id)
        if key not in self._running:
            spec = self.stacks[stack].functions[logical_id]
            environment = function_environ(self.account, spec, **self.overrides.get(stack, {}))
            self._running[key] = LocalFunction(
                spec.name, spec.handler, environment, log=self.log_dir / f"{spec.name}.log"
            ).start()
        return self._running[key]

    def invoke(self, stack: str, logical_id: str, event: Any) -> Any:
        return self.function(stack, logical_id).invoke(event)

    def handler(self, stack: str):
        """`logical id -> callable(event, context)` for LocalApiGateway routes of `stack`."""
        return lambda logical_id: lambda event, context=None: self.invoke(stack, logical_id, event)

    def close(self) -> None:
        for function in self._running.values():
            function.stop()
        self._running.clear()
