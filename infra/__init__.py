"""Synth-time code of ModelGate, never shipped to Lambda (infra/build/lambda_bundle.py ships `lambdas` and `modelgate`):
the configuration and its tables (config, instance_types, gpu_hosts, triton_images), deploy-time checks
(placeholders, preflight), the CDK constructs (`infra.constructs`) and the build tooling (`infra.build`: Lambda
bundling, pipeline assets, cdk-nag wiring, synth reports). The stacks that compose them are in `stacks/`.
"""

import os

# jsii prints a large banner on every synth under Node 20 (end of life): noise, not an error. Must be set
# before aws_cdk is first imported (jsii starts its Node process with this environment).
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
