"""The CDK stacks of ModelGate: one Stage per environment of the chain and the CI/CD pipeline. They compose the
constructs of `infra.constructs`."""

import infra  # noqa: F401  (silences jsii's Node banner before aws_cdk is first imported)
