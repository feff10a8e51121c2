"""`python -m demo`: synthesize every environment, run cdk-nag, print a per-environment summary."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from modelgate.config import ConfigError
from stacks.synth_report import NagViolations, format_summary, synthesize

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--outdir", default=str(ROOT / "cdk.out"), help="where the cloud assembly is written")
    args = parser.parse_args(argv)

    print("== 1. Synthesize every environment and run cdk-nag (AwsSolutions)")
    started = time.perf_counter()
    try:
        result = synthesize(args.outdir)
    except ConfigError as error:
        print(f"configuration error:\n{error}", file=sys.stderr)
        return 2
    except NagViolations as violations:
        print(violations, file=sys.stderr)
        return 1
    print(format_summary(result))
    print(f"synthesized in {time.perf_counter() - started:.1f} s")
    return 1 if result.findings else 0


if __name__ == "__main__":
    sys.exit(main())
