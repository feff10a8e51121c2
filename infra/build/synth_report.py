"""Synthesize the app and read back what matters: stacks, resources, cdk-nag findings and CDK's own warnings.

Used by `make demo` (summary table), the nag test (zero unsuppressed findings), the synth-warnings test and the
synth benchmark. cdk-nag and CDK itself report errors and warnings as construct annotations; with the
`annotationsInValidationReport` flag errors make synth fail with a `validation-report.json`, warnings land in
the stack metadata.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aws_cdk import App, Stage, cx_api

from stacks.app_builder import build_app


@dataclass(frozen=True)
class NagFinding:
    level: str  # "error" | "warning"
    rule: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.level.upper()} {self.rule} at {self.path}: {self.message}"


@dataclass(frozen=True)
class Annotation:
    """A warning or error that CDK or a construct library (not cdk-nag) attached to a construct, e.g. an option
    it ignores; `Annotations.of(...).acknowledge_warning` is the only way to silence one without fixing it."""

    level: str  # "error" | "warning"
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.level.upper()} at {self.path}: {self.message}"


@dataclass
class StackSummary:
    stage: str
    name: str
    account: str
    region: str
    resources: Counter = field(default_factory=Counter)
    template: dict = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()  # stacks deployed before this one (names within the same stage)
    termination_protection: bool = False


@dataclass
class SynthResult:
    outdir: Path
    stacks: list[StackSummary]
    findings: list[NagFinding]
    nag_reports: list[Path]
    annotations: list[Annotation] = field(default_factory=list)  # CDK's own warnings, not cdk-nag's
    stage_order: tuple[str, ...] = ()  # the app's stages as it created them: the promotion chain's order

    def stage_names(self) -> list[str]:
        """Stage names in promotion order, then anything else (the pipeline)."""
        names = dict.fromkeys(stack.stage for stack in self.stacks)
        order = {stage: index for index, stage in enumerate(self.stage_order)}
        return sorted(names, key=lambda stage: (order.get(stage, len(order)), stage))

    def package_file(self, function: dict, name: str) -> str:
        """The text of file `name` in the code package of `function` (an AWS::Lambda::Function resource of one of
        the templates): the asset folder the package is zipped from."""
        key = function["Properties"]["Code"]["S3Key"]
        return (self.outdir / f"asset.{key.removesuffix('.zip')}" / name).read_text()

    def stack(self, stage: str, name: str) -> StackSummary:
        for stack in self.stacks:
            if stack.stage == stage and stack.name == name:
                return stack
        raise KeyError(f"no stack {name!r} in stage {stage!r}; have {[(s.stage, s.name) for s in self.stacks]}")


class NagViolations(Exception):
    def __init__(self, findings: list[NagFinding]) -> None:
        super().__init__("cdk-nag found unsuppressed problems:\n" + "\n".join(f"  {f}" for f in findings))
        self.findings = findings


def _rule(message: str) -> str:
    return message.split(":", 1)[0].split("[", 1)[0].strip()


def _findings_from_validation_report(outdir: Path) -> list[NagFinding]:
    report = json.loads((outdir / "validation-report.json").read_text())
    return [
        NagFinding("error", _rule(text := violation["description"]), construct["constructPath"], text.strip())
        for plugin in report.get("pluginReports", [])
        for violation in plugin.get("violations", [])
        for construct in violation.get("violatingConstructs", [])
    ]


def _read_metadata(artifact: cx_api.CloudFormationStackArtifact) -> tuple[list[NagFinding], list[Annotation]]:
    """Errors and warnings of the stack's metadata: cdk-nag's findings and everything else."""
    findings, annotations = [], []
    for message in artifact.messages:
        if message.level not in (cx_api.SynthesisMessageLevel.ERROR, cx_api.SynthesisMessageLevel.WARNING):
            continue
        level = "error" if message.level == cx_api.SynthesisMessageLevel.ERROR else "warning"
        text = str(message.entry.data).strip()
        if text.startswith("AwsSolutions-"):
            findings.append(NagFinding(level, _rule(text), message.id, text))
        else:
            annotations.append(Annotation(level, message.id, text))
    return findings, annotations


def synthesize(outdir: str | Path, context: dict | None = None) -> SynthResult:
    """Synthesize the ModelGate app into `outdir`; see `synthesize_app`."""
    return synthesize_app(build_app(context=context, outdir=str(outdir)), outdir)


def synthesize_app(app: App, outdir: str | Path) -> SynthResult:
    """Synthesize `app` (whose outdir is `outdir`). Raises NagViolations listing every nag error."""
    outdir = Path(outdir)
    try:
        assembly = app.synth()
    except RuntimeError as error:
        if "ValidationFailed" in str(error) and (outdir / "validation-report.json").exists():
            raise NagViolations(_findings_from_validation_report(outdir)) from None
        raise
    stacks, findings, annotations = [], [], []
    for artifact in assembly.stacks_recursively:
        stage, _, name = artifact.hierarchical_id.rpartition("/")
        resources = Counter(resource["Type"] for resource in artifact.template.get("Resources", {}).values())
        stacks.append(
            StackSummary(
                stage or name,
                name,
                artifact.environment.account,
                artifact.environment.region,
                resources,
                artifact.template,
                tuple(
                    sorted(
                        dependency.hierarchical_id.rpartition("/")[2]
                        for dependency in artifact.dependencies
                        if isinstance(dependency, cx_api.CloudFormationStackArtifact)
                    )
                ),
                bool(artifact.termination_protection),
            )
        )
        stack_findings, stack_annotations = _read_metadata(artifact)
        findings.extend(stack_findings)
        annotations.extend(stack_annotations)
    stage_order = tuple(child.node.id for child in app.node.children if isinstance(child, Stage))
    nag_reports = sorted(outdir.glob("AwsSolutions-*-NagReport.csv"))
    return SynthResult(outdir, stacks, findings, nag_reports, annotations, stage_order)


def format_summary(result: SynthResult) -> str:
    """A per-environment table: stacks, resource counts, the most common resource types, nag status."""
    lines = []
    for stage in result.stage_names():
        stacks = [stack for stack in result.stacks if stack.stage == stage]
        total = sum(sum(stack.resources.values()) for stack in stacks)
        first = stacks[0]
        lines.append(f"{stage}  (account {first.account}, {first.region}): {len(stacks)} stacks, {total} resources")
        for stack in stacks:
            top = ", ".join(f"{count} {kind.split('::', 1)[1]}" for kind, count in stack.resources.most_common(6))
            lines.append(f"  {stack.name:<26} {sum(stack.resources.values()):>4}  {top}")
    errors = sum(1 for finding in result.findings if finding.level == "error")
    warnings = sum(1 for finding in result.findings if finding.level == "warning")
    lines.append(
        f"cdk-nag AwsSolutions: {errors} unsuppressed errors, {warnings} unsuppressed warnings "
        f"({len(result.nag_reports)} reports in {result.outdir})"
    )
    return "\n".join(lines)
