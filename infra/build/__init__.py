"""Build tooling of the CDK app: Docker-free Lambda bundling, pipeline code assets, cdk-nag wiring, synth reports."""
