"""stn-gluon: Spatial Transformer Networks for Apache MXNet Gluon.

The public API::

    from stn_gluon import SpatialTransformer, STNNet, affine_transform, get_model
"""
import os as _os
import warnings as _warnings

# mxnet 1.9 on numpy 1.23 warns about deprecated aliases at import time.
_warnings.filterwarnings("ignore", category=DeprecationWarning, module="mxnet")
_os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

# first: numpy's removed aliases (np.bool, ...) and, on Python 3.12, distutils, both of which MXNet 1.9.1 needs
from . import compat as _compat  # noqa: E402

_compat.prepare_mxnet_import()

from . import threads as _threads  # noqa: E402

# one OpenMP thread per physical core free at start-up: set before mxnet is imported, or in the loaded library
if _threads.configure_openmp() is None and _threads.adjust_loaded_mxnet() is False:
    _warnings.warn("mxnet was imported before stn_gluon with OMP_NUM_THREADS unset, and its thread count could "
                   "not be changed; MXNet may use only half the cores (set OMP_NUM_THREADS, or import stn_gluon "
                   "first)", RuntimeWarning, stacklevel=2)

from .errors import StnGluonError, DataError, CheckpointError  # noqa: E402
from .ops import (affine_grid, affine_transform, attention_to_affine, window_to_affine, bilinear_sample,  # noqa: E402
                  get_transform, homography_grid, tps_grid, tps_grid_matrix, warp_with_grid)
from .blocks import LocalizationNet, SaliencyLocalization, SpatialTransformer  # noqa: E402
from .models import LeNetBody, STNClassifier, STNNet, stn_backbone  # noqa: E402
from .zoo import get_model, list_models  # noqa: E402

_threads.mark_imported()  # mxnet is loaded; its engine starts threads with the first operator

__version__ = "0.2.0"

__all__ = [
    "StnGluonError", "DataError", "CheckpointError",
    "affine_grid", "affine_transform", "attention_to_affine", "window_to_affine", "bilinear_sample",
    "get_transform", "homography_grid", "tps_grid", "tps_grid_matrix", "warp_with_grid",
    "LocalizationNet", "SaliencyLocalization", "SpatialTransformer",
    "LeNetBody", "STNClassifier", "STNNet", "get_model", "list_models", "stn_backbone",
]
