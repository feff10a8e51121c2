"""The approval and promotion workflow (issue 4): link tokens, decisions, history, e-mails, sign-in, CLI.

Pure Python on boto3: the Lambda handlers (lambdas/), the CLI (`modelgate`) and the tests call the same
functions, which take their AWS clients and clock as arguments.
"""
