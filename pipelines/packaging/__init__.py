"""Triton packaging: each customer's model as a Triton ensemble repository (preprocess -> ONNX -> postprocess),
packed per modelgate/model_repository.py. Importable by the serving side's tests and the demo:

    from pipelines.packaging.triton_repository import Packager, example_models, package_models, write_repository
"""
