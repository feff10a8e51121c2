"""CDK stacks and constructs of ModelGate."""

import os

# jsii prints a large banner on every synth under Node 20 (end of life): noise, not an error. Must be set
# before aws_cdk is first imported (jsii starts its Node process with this environment).
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
