"""The model-building side of ModelGate: the SageMaker Pipeline, its step scripts, and a local runner."""
