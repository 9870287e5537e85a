"""Getting models out: saved MXNet models, ONNX export and its converters, other runtimes, int8 copies.

The names of :mod:`stn_gluon.export.saved` are also importable from here (``stn_gluon.export.load_model``),
as they were when this was one module.
"""
from .saved import *  # noqa: F401,F403
from .saved import __all__  # noqa: F401
