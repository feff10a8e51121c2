"""Triton packaging: each customer's model as a Triton ensemble repository whose one step is one ONNX graph
(the whole forecast, gap filling included: onnx_export.py), packed per modelgate/model_repository.py.
Importable by the serving side's tests and the demo:

    from pipelines.packaging.triton_repository import Packager, example_models, package_models, write_repository
"""
