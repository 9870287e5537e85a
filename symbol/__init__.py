"""Symbolic-graph STN models for the Module API (installed as ``stn_gluon.symbol``).

The same classifier as :class:`stn_gluon.STNNet`, as one ``mx.sym`` graph with
``mx.sym.SpatialTransformer`` in front, for code bases that train with
``mx.mod.Module``. Parameter names are those of a Gluon ``STNNet`` built with
``prefix="stn_lenet_"`` (as ``stn-gluon train`` builds it), so weights move
between the two unchanged.
"""
from .stn_symbol import get_loc, get_symbol, get_symbol_for, localization_params, unsupported_fields

__all__ = ["get_loc", "get_symbol", "get_symbol_for", "localization_params", "unsupported_fields"]
