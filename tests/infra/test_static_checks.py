"""Static checks over the session's synthesized templates (issue 12): cfn-lint (pinned in requirements-dev.txt),
its IAM rules included, with every ignored rule named and explained; and the pinned CDK CLI reads the assembly.

cfn-lint's IAM rules are the IAM action/resource check: E3510 (identity policies: known actions, valid
statements), E3512 (resource policies), W3037 (IAM permission configuration), I3510 (an action's resources
match its service: it found `codestar-connections:UseConnection` on a CodeConnections ARN, issue 12 problem 4).
parliament 1.6 was considered too; it imports `pkg_resources`, which the pinned setuptools 84 no longer has.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CFN_LINT = Path(sys.executable).parent / "cfn-lint"

# Rules whose findings are not problems in these templates, each with why. Everything else fails the test.
IGNORED_RULES = {
    "I1022": "Use Sub instead of Join: CDK renders every ARN and URL it builds as Fn::Join with an empty "
    "delimiter; a style preference only (informational).",
    "W3005": "Obsolete DependsOn: CDK adds a DependsOn on a role (so its DefaultPolicy exists before the "
    "resource uses the role) where a GetAtt already orders them; redundant, harmless.",
    "E3703": "Pipeline action configuration: cfn-lint 1.58 reports its I1022 Join-vs-Sub preference as an error "
    "inside CodePipeline CloudFormation actions' RoleArn, which CDK Pipelines writes as Fn::Join; the value is a "
    "valid role ARN (the message is 'Prefer using Fn::Sub over Fn::Join').",
}
# Findings of the IAM rules that another branch fixes (named so the overlap is visible when merging).
FIXED_ELSEWHERE: dict[tuple[str, str], str] = {}

IAM_RULES = ("E3510", "E3512", "W3037", "I3510")


def _templates(outdir: Path) -> list[Path]:
    return sorted(outdir.glob("*.template.json")) + sorted(outdir.glob("assembly-*/*.template.json"))


def _cfn_lint(synth) -> list[dict]:
    templates = _templates(Path(synth.outdir))
    assert len(templates) == len(synth.stacks), "every synthesized stack is linted"
    result = subprocess.run(
        [
            str(CFN_LINT),
            "--format",
            "json",
            "--include-checks",
            "I",  # informational rules too: I3510 is one of them
            "--",
            *map(str, templates),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=synth.outdir,
    )
    # Exit codes are a bitmask of error (2), warning (4) and informational (8) findings; 1 is a crash.
    assert result.returncode & 1 == 0, result.stderr
    return json.loads(result.stdout or "[]")


@pytest.fixture(scope="module")
def cfn_lint_findings(synth) -> list[dict]:
    return _cfn_lint(synth)


def _unexplained(findings: list[dict]) -> list[str]:
    return [
        f"{f['Rule']['Id']} {Path(f['Filename']).name} {'/'.join(map(str, f['Location']['Path']))}: {f['Message']}"
        for f in findings
        if f["Rule"]["Id"] not in IGNORED_RULES
        and (f["Rule"]["Id"], "/".join(map(str, f["Location"]["Path"]))) not in FIXED_ELSEWHERE
    ]


@pytest.mark.slow
def test_cfn_lint_finds_nothing_unexplained_in_any_template(cfn_lint_findings):
    assert _unexplained(cfn_lint_findings) == []


@pytest.mark.slow
def test_cfn_lint_finds_nothing_unexplained_in_the_many_models_example(many_synth):
    """Two models through sandbox -> staging -> prod: every stack of every stage, the pipeline's too."""
    assert _unexplained(_cfn_lint(many_synth)) == []


@pytest.mark.slow
def test_cfn_lint_iam_rules_find_nothing_and_ran_on_the_policies(cfn_lint_findings, synth):
    iam = [f for f in cfn_lint_findings if f["Rule"]["Id"] in IAM_RULES]
    assert _unexplained(iam) == []
    policies = sum(
        1
        for stack in synth.stacks
        for resource in stack.template.get("Resources", {}).values()
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::Role", "AWS::S3::BucketPolicy", "AWS::KMS::Key")
    )
    assert policies > 50, "the IAM rules had policies to check"


def test_the_ignored_rules_are_cfn_lint_rules_and_each_has_a_reason():
    listed = subprocess.run([str(CFN_LINT), "--list-rules"], capture_output=True, text=True, check=True).stdout
    known = {line.split(":", 1)[0].strip() for line in listed.splitlines() if ":" in line}
    for rule, reason in IGNORED_RULES.items():
        assert rule in known, rule
        assert len(reason) > 40, rule
    assert not set(IGNORED_RULES) & set(IAM_RULES), "the IAM rules are never ignored wholesale"


@pytest.mark.slow
def test_the_pinned_cdk_cli_reads_the_assembly(synth, config):
    cli = ROOT / "node_modules" / ".bin" / "cdk"
    if not cli.exists():
        pytest.fail("the pinned CDK CLI is missing: run `npm ci` (make setup does)")
    result = subprocess.run(
        [str(cli), "ls", "--app", str(synth.outdir), "--no-notices", "--no-version-reporting"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "CDK_DISABLE_VERSION_CHECK": "1"},
    )
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    expected = {stack.name if stack.stage == stack.name else f"{stack.stage}/{stack.name}" for stack in synth.stacks}
    assert listed == expected
    assert f"{config.project.name}-cicd" in listed
