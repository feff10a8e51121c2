"""The synth baseline: the smallest useful CDK app (one stack, one bucket), same Python and aws-cdk-lib."""

from aws_cdk import App, Stack
from aws_cdk import aws_s3 as s3

app = App()
s3.Bucket(Stack(app, "Minimal"), "Bucket")
app.synth()
