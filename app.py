#!/usr/bin/env python3
"""ModelGate CDK app: `npx cdk synth` (all environments) or `npx cdk synth -c env=dev` (one)."""

import sys

from infra.config import ConfigError
from stacks.app_builder import build_app

try:
    app = build_app()
except ConfigError as error:
    print(f"ModelGate configuration error:\n{error}", file=sys.stderr)
    sys.exit(1)
app.synth()
