"""Datasets: MNIST's IDX files and its embedded sample, the optional download, and the distorted-MNIST sets.

The names of :mod:`stn_gluon.data.mnist` are also importable from here (``stn_gluon.data.load_mnist``), as
they were when this was one module.
"""
from .mnist import *  # noqa: F401,F403
from .mnist import __all__  # noqa: F401
