"""Getting models out: saved MXNet models, ONNX export and its converters, other runtimes, int8 copies.

The names of :mod:`stn_gluon.export.saved` are also importable from here (``stn_gluon.export.load_model``), as
they were when this was one module. They load on first use (PEP 562), so that the ONNX side
(``stn_gluon.export.onnx.OnnxModel``) runs without importing MXNet.
"""
from .._runtime.moved import lazy_reexport

#: :data:`stn_gluon.export.saved.__all__` (a test keeps the two equal).
__all__ = ["DEFAULT_PREFIX", "export_block", "write_model_meta", "verify_checksums", "resolve_model", "load_graph",
           "load_model", "LoadedModel", "ModelGraph", "SavedGraph", "read_saved", "onnx_weights_mismatch",
           "check_onnx_current"]


__getattr__, __dir__ = lazy_reexport(__name__, ".saved", __all__)
