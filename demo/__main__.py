"""`make demo`: the whole ModelGate lifecycle on this machine, with no AWS account.

1. synthesize every environment of config/modelgate.yaml and run cdk-nag;
2. synthesize the local variant (all environments in one account) that the next steps deploy;
3. deploy its four stages into a local AWS (moto server) and start the stand-ins;
4. generate data, run the pipeline's step scripts, register the version PendingManualApproval;
5. e-mail the dev approvers (outbox: .demo/outbox/*.eml), approve through the link (or --auto-approve);
6. deploy to the local Triton endpoint, forecast through the JWT-protected API, report the inference run,
   which asks the next environment's approvers: test, uat and prod the same way;
then print `modelgate status` and where everything is. Ctrl-C stops every process and port it started.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from demo.lifecycle import DemoError, DemoOutcome, DemoSettings, Lifecycle
from demo.local_config import single_account_variant
from modelgate.config import DEFAULT_CONFIG_PATH, ConfigError
from stacks.synth_report import NagViolations, format_summary, synthesize

ROOT = Path(__file__).resolve().parent.parent


def _synthesize(outdir: Path, context: dict | None = None, summary: bool = True) -> int:
    started = time.perf_counter()
    try:
        result = synthesize(outdir, context=context)
    except ConfigError as error:
        print(f"configuration error:\n{error}", file=sys.stderr)
        return 2
    except NagViolations as violations:
        print(violations, file=sys.stderr)
        return 1
    if summary:
        print(format_summary(result))
    print(f"   synthesized {len(result.stacks)} stacks in {time.perf_counter() - started:.1f} s,"
          f" {len(result.findings)} unsuppressed cdk-nag findings")  # fmt: skip
    return 1 if result.findings else 0


def _report(outcome: DemoOutcome, workdir: Path) -> None:
    print("\n== modelgate status " + outcome.model_package_arn.rsplit("/", 2)[-2])
    print(outcome.status_table.rstrip())
    print("\n== Where things are")
    print(f"   outbox ({len(outcome.outbox)} e-mails, .eml): {workdir / 'outbox'}")
    print(f"   forecast plots:  {outcome.pipeline.plot}")
    print(f"   evaluation:      {outcome.pipeline.evaluation_dir}")
    print(f"   model archives:  {outcome.pipeline.models_dir} (uploaded to {outcome.pipeline.model_data_url})")
    print(f"   Lambda logs:     {workdir / 'logs'}")
    print(f"   local config:    {workdir / 'config.yaml'}; cloud assemblies: {ROOT / 'cdk.out'}, {workdir / 'cdk.out'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--auto-approve", action="store_true", help="approve every link headlessly (CI)")
    parser.add_argument("--synth-only", action="store_true", help="stop after step 1")
    parser.add_argument("--config", type=Path, default=ROOT / DEFAULT_CONFIG_PATH, help="configuration file")
    parser.add_argument("--outdir", type=Path, default=ROOT / "cdk.out", help="cloud assembly of step 1")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".demo", help="everything the lifecycle writes")
    parser.add_argument("--customers", type=int, default=24, help="customers in the generated data set")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    print("== 1. Synthesize every environment and run cdk-nag (AwsSolutions)")
    if code := _synthesize(args.outdir, {"config": str(args.config)}):
        return code
    if args.synth_only:
        return 0

    workdir = args.workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)  # every run starts from nothing
    print("\n== 2. Synthesize the local variant: every environment in the dev account")
    try:
        config = single_account_variant(args.config, workdir / "config.yaml")
    except ConfigError as error:
        print(f"configuration error:\n{error}", file=sys.stderr)
        return 2
    if code := _synthesize(workdir / "cdk.out", {"config": str(workdir / "config.yaml")}, summary=False):
        return code

    settings = DemoSettings(
        workdir=workdir,
        assembly=workdir / "cdk.out",
        auto_approve=args.auto_approve,
        customers=args.customers,
        epochs=args.epochs,
    )
    try:
        outcome = Lifecycle(config, settings).run()
    except DemoError as error:
        print(f"\ndemo failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: every local process and port was released", file=sys.stderr)
        return 130
    _report(outcome, workdir)
    print(f"\ndone in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
