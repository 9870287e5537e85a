"""stn-gluon: Spatial Transformer Networks for Apache MXNet Gluon.

The public API::

    from stn_gluon import SpatialTransformer, STNNet, affine_transform, get_model

The layers, each a subpackage importing only the ones below it (``docs/design.md``)::

    cli/  bench/                    the command line, the benchmarks
    train/  serve/                  training jobs; the HTTP server (neither imports the other)
    export/                         saved MXNet models, ONNX and its converters, runtimes, int8
    data/                           MNIST, the embedded sample, distorted MNIST
    nn/  symbol/                    ops, blocks, models, the zoo (Gluon); the same networks as symbols
    _runtime/                       compatibility, errors, paths, files, devices, flags, threads

``import stn_gluon`` is light: it loads no MXNet, ONNX or web framework and changes no environment variable.
The names below load their module on first use (PEP 562). On numpy >= 1.24 (Python 3.12) it puts back the
numpy aliases MXNet 1.9.1 needs (``stn_gluon._runtime.compat``): import it before ``mxnet``.
"""
import importlib as _importlib
from typing import Any as _Any, List as _List

from ._runtime import compat as _compat
from ._runtime import moved as _moved

_compat.prepare_mxnet_import()  # numpy's removed aliases and, on Python 3.12, distutils: MXNet 1.9.1 needs both
_moved.install_finder()  # the flat layout's module paths (stn_gluon.training, ...), for this release

__version__ = "0.2.0"

#: Public name -> the module that defines it.
_PUBLIC = {
    **dict.fromkeys(["StnGluonError", "DataError", "CheckpointError"], "stn_gluon._runtime.errors"),
    **dict.fromkeys(["affine_grid", "affine_transform", "attention_to_affine", "window_to_affine",
                     "bilinear_sample", "get_transform", "homography_grid", "tps_grid", "tps_grid_matrix",
                     "warp_with_grid"], "stn_gluon.nn.ops"),
    **dict.fromkeys(["LocalizationNet", "SaliencyLocalization", "SpatialTransformer"], "stn_gluon.nn.blocks"),
    **dict.fromkeys(["LeNetBody", "STNClassifier", "STNNet", "stn_backbone"], "stn_gluon.nn.models"),
    **dict.fromkeys(["get_model", "list_models"], "stn_gluon.nn.zoo"),
}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> _Any:
    if name in _PUBLIC:
        value = getattr(_importlib.import_module(_PUBLIC[name]), name)
    elif f"{__name__}.{name}" in _moved.MOVED:  # stn_gluon.training, ... as attributes
        value = _importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> _List[str]:
    return sorted(list(globals()) + __all__)
