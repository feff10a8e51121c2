"""Serving: what the deploy step, the inference API's Lambdas, the CLI and the local stand-ins share.

- `settings`: what the stack tells the serving Lambdas (one deploy function per group, one API for all groups)
- `deployment`: each group's prefix and record of what its multi-model endpoint serves (written by its deploy
  step, read by invoke)
- `deploy`: copy the approved version's archives into the endpoint's S3 prefix, remove the rest
- `protocol`: the request formats the API accepts (KServe v2 JSON, SageMaker Triton binary+json)
- `access`: JWT claims -> which models a caller may invoke, and the API Gateway policy that says so
- `invoke`: call the endpoint for one model and map SageMaker's errors to HTTP
"""
