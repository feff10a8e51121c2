#!/usr/bin/env python3
"""ModelGate CDK app: `npx cdk synth` (every environment of the chain) or `npx cdk synth -c env=<name>` (one)."""

import sys

from infra.config import ConfigError
from stacks.app_builder import build_app

try:
    app = build_app()
except ConfigError as error:
    print(f"ModelGate configuration error:\n{error}", file=sys.stderr)
    sys.exit(1)
app.synth()
