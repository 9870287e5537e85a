"""Getting models out: saved MXNet models, ONNX export and its converters, other runtimes, int8 copies.

The names of :mod:`stn_gluon.export.saved` are also importable from here (``stn_gluon.export.load_model``), as
they were when this was one module. They load on first use (PEP 562), so that the ONNX side
(``stn_gluon.export.onnx.OnnxModel``) runs without importing MXNet.
"""
import importlib
from typing import Any, List

#: :data:`stn_gluon.export.saved.__all__` (a test keeps the two equal).
__all__ = ["DEFAULT_PREFIX", "export_block", "write_model_meta", "verify_checksums", "resolve_model", "load_graph",
           "load_model", "LoadedModel", "ModelGraph", "SavedGraph", "read_saved", "onnx_weights_mismatch",
           "check_onnx_current"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".saved", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(list(globals()) + __all__)
