"""Synthesis is quiet: no warnings from CDK itself (cdk-nag's findings are gated by test_nag.py).

A CDK warning is a setting that does not do what the code says (e.g. an option CDK ignores), so a new one
must be fixed, or acknowledged with a reason where it is wrong.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_stack_carries_cdk_warnings_or_errors(synth):
    assert synth.annotations == [], "\n".join(str(annotation) for annotation in synth.annotations)


def test_the_event_bus_policy_prints_no_deprecation_warning_and_is_still_checked_by_nag(tmp_path):
    """cdk-nag's EVB1 rule reads CfnEventBusPolicy's deprecated `principal`, which jsii reports on stderr (outside
    any annotation, once per process): a process of its own, to read its stderr. An open statement must still
    fail EVB1."""
    script = textwrap.dedent(
        f"""
        import json
        from aws_cdk import App, Stack
        from infra.constructs.event_bus_statement import EventBusStatement
        from infra.build.nag import apply_nag

        app = App(outdir={str(tmp_path)!r})
        stack = Stack(app, "Probe")
        statement = {{"Effect": "Allow", "Principal": "*", "Action": "events:PutEvents", "Resource": "*"}}
        EventBusStatement(stack, "Open", event_bus_name="default", statement_id="open", statement=statement)
        apply_nag(stack)
        messages = app.synth().get_stack_by_name("Probe").messages
        print(json.dumps([[message.id, str(message.entry.data)] for message in messages]))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JSII_DEPRECATED": "warn"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "deprecated" not in done.stderr, done.stderr
    messages = json.loads(done.stdout.strip().splitlines()[-1])
    assert any(path == "/Probe/Open" and text.startswith("AwsSolutions-EVB1") for path, text in messages), messages
