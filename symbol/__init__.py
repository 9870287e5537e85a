"""Symbolic-graph STN models for the Module API (installed as ``stn_gluon.symbol``).

The same classifiers as :class:`stn_gluon.STNNet` and :class:`stn_gluon.nn.models.STNIDSIANet`, as one
``mx.sym`` graph with ``mx.sym.SpatialTransformer`` in front, for code bases that train with
``mx.mod.Module``. Parameter names are those of the Gluon network built with
``prefix="<model>_"`` (``stn_lenet_``, ``stn_idsia_``, as ``stn-gluon train`` builds it), so weights move
between the two unchanged.
"""
from .idsia_symbol import get_idsia_symbol
from .stn_symbol import (SYMBOL_MODELS, get_loc, get_symbol, get_symbol_for, localization_params,
                         unsupported_fields)

__all__ = ["SYMBOL_MODELS", "get_loc", "get_symbol", "get_symbol_for", "get_idsia_symbol", "localization_params",
           "unsupported_fields"]
