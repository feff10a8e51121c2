"""cdk-nag AwsSolutions runs on every stack of every stage and nothing is left unsuppressed."""

from __future__ import annotations

import csv

from infra.config import load_config

CHAIN = load_config().chain  # the shipped config's promotion chain
ENVIRONMENTS = CHAIN.names


def test_zero_unsuppressed_nag_errors_or_warnings(synth):
    # Errors would already have failed synthesize() with NagViolations; warnings only show up here.
    assert synth.findings == [], "\n".join(str(finding) for finding in synth.findings)


def test_nag_really_ran_on_every_stack(synth, config):
    """A nag pack that silently stopped running (a broken cdk-nag/aws-cdk-lib pair) would pass the test above."""
    reported = {path.name for path in synth.nag_reports}
    for stack in synth.stacks:
        stage = "" if stack.stage == stack.name else stack.stage
        expected = f"AwsSolutions-{stage}-{stage + '-' if stage else ''}{stack.name}-NagReport.csv"
        assert expected in reported, f"no nag report for {stack.stage}/{stack.name}; have {sorted(reported)}"
    for path in synth.nag_reports:
        with path.open() as handle:
            rows = list(csv.DictReader(handle))
        assert rows, f"{path.name} is empty"
        assert all(row["Compliance"] in {"Compliant", "Suppressed", "N/A", "Non-Compliant"} for row in rows)
    assert {f"{config.project.name}-{env}" for env in ENVIRONMENTS} <= {s.stage for s in synth.stacks}


def test_every_suppression_has_a_reason_and_a_precise_scope(synth):
    for path in synth.nag_reports:
        with path.open() as handle:
            for row in csv.DictReader(handle):
                if row["Compliance"] == "Suppressed":
                    assert len(row["Exception Reason"]) >= 40, f"{path.name}: {row['Rule ID']} needs a real reason"
                    assert row["Resource ID"].count("/") >= 2, "suppressions name a resource path, not a stack"
