"""`make demo`: the whole ModelGate lifecycle on this machine, with no AWS account.

1. synthesize every environment of config/modelgate.yaml and run cdk-nag;
2. synthesize the local variant (every environment in one account, and a second model group with a quorum of 2
   in the last environment: demo/local_config.py) that the next steps deploy;
3. deploy its stages, one per environment of the chain, into a local AWS (moto server) and start the stand-ins;
4. for each model: generate data, run the pipeline's step scripts, register a version PendingManualApproval;
5. e-mail each model's approvers of the first environment (outbox: .demo/outbox/*.eml), approve through the
   links (or --auto-approve; a quorum of 2 takes two people, one link each);
6. deploy to the model's local Triton endpoint, forecast through the JWT-protected API, report the inference
   run, which asks the next environment's approvers: every environment of the chain the same way;
then print `modelgate status` of each model and where everything is. Ctrl-C stops every process and port it started.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from demo.lifecycle import DemoError, DemoOutcome, DemoSettings, Lifecycle
from demo.local_config import single_account_variant
from infra.build.synth_report import NagViolations, format_summary, synthesize
from infra.config import DEFAULT_CONFIG_PATH, ConfigError

ROOT = Path(__file__).resolve().parent.parent


class DemoFailed(Exception):
    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code


def _synthesize(outdir: Path, config: Path, summary: bool = True) -> None:
    started = time.perf_counter()
    try:
        result = synthesize(outdir, context={"config": str(config)})
    except ConfigError as error:
        raise DemoFailed(2, f"configuration error:\n{error}") from None
    except NagViolations as violations:
        raise DemoFailed(1, str(violations)) from None
    if summary:
        print(format_summary(result))
    print(f"   synthesized {len(result.stacks)} stacks in {time.perf_counter() - started:.1f} s,"
          f" {len(result.findings)} unsuppressed cdk-nag findings")  # fmt: skip
    if result.findings:
        raise DemoFailed(1, "cdk-nag reported unsuppressed findings (listed above)")


def _report(outcome: DemoOutcome, workdir: Path) -> None:
    print("\n== modelgate status (every model)")
    print(outcome.status_table.rstrip())
    print(f"\n== IAM enforced locally: {len(outcome.iam_denials)} requests refused")
    for denial in outcome.iam_denials:
        print(f"   {denial}")
    print("\n== Where things are")
    print(f"   outbox ({len(outcome.outbox)} e-mails, .eml): {workdir / 'outbox'}")
    print(f"   forecast plots:  {outcome.pipeline.plot}")
    print(f"   evaluation:      {outcome.pipeline.evaluation_dir}")
    print(f"   model archives:  {outcome.pipeline.models_dir} (uploaded to {outcome.pipeline.model_data_url})")
    print(f"   Lambda logs:     {workdir / 'logs'}")
    print(f"   local config:    {workdir / 'config.yaml'}; cloud assemblies: {ROOT / 'cdk.out'}, {workdir / 'cdk.out'}")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--auto-approve", action="store_true", help="approve every link headlessly (CI)")
    parser.add_argument("--synth-only", action="store_true", help="stop after step 1")
    parser.add_argument("--config", type=Path, default=ROOT / DEFAULT_CONFIG_PATH, help="configuration file")
    parser.add_argument("--outdir", type=Path, default=ROOT / "cdk.out", help="cloud assembly of step 1")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".demo", help="everything the lifecycle writes")
    parser.add_argument("--customers", type=int, default=24, help="customers in the generated data set")
    return parser


def run(args: argparse.Namespace) -> DemoOutcome | None:
    """Every step; the final state of the local world (None with --synth-only). Raises DemoFailed."""
    print("== 1. Synthesize every environment and run cdk-nag (AwsSolutions)")
    _synthesize(args.outdir, args.config)
    if args.synth_only:
        return None
    workdir = args.workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)  # every run starts from nothing
    print("\n== 2. Synthesize the local variant: every environment in one account, two model groups")
    try:
        config = single_account_variant(args.config, workdir / "config.yaml")
    except ConfigError as error:
        raise DemoFailed(2, f"configuration error:\n{error}") from None
    _synthesize(workdir / "cdk.out", workdir / "config.yaml", summary=False)
    settings = DemoSettings(
        workdir=workdir,
        assembly=workdir / "cdk.out",
        auto_approve=args.auto_approve,
        customers=args.customers,
    )
    try:
        outcome = Lifecycle(config, settings).run()
    except DemoError as error:
        from sandbox.iam import DENIALS

        refused = "".join(f"\n   IAM refused: {denial}" for denial in DENIALS)
        hint = "\n   (grant it in the construct that owns the resource)" if DENIALS else ""
        raise DemoFailed(1, f"demo failed: {error}{refused}{hint}") from None
    _report(outcome, workdir)
    return outcome


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    started = time.perf_counter()
    try:
        run(args)
    except DemoFailed as failure:
        print(f"\n{failure}", file=sys.stderr)
        return failure.code
    except KeyboardInterrupt:
        print("\ninterrupted: every local process and port it started is released", file=sys.stderr)
        return 130
    print(f"\ndone in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
