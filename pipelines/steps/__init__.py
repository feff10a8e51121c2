"""SageMaker step scripts (prep, train, evaluate, package): plain scripts that read and write the SageMaker
container paths (`pipelines.steps.paths`), so they run unchanged in SageMaker and locally."""
