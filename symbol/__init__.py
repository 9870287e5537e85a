"""Symbolic-graph STN models for the Module API (installed as ``stn_gluon.symbol``)."""
