"""Datasets: MNIST's IDX files and its embedded sample, the optional download, and the distorted-MNIST sets.

The names of :mod:`stn_gluon.data.mnist` are also importable from here (``stn_gluon.data.load_mnist``), as
they were when this was one module. They load on first use (PEP 562): ``stn_gluon.data.idx`` needs no MXNet.
"""
from .._runtime.moved import lazy_reexport

#: :data:`stn_gluon.data.mnist.__all__` (a test keeps the two equal).
__all__ = ["MNIST_MEAN", "MNIST_STD", "BACKGROUND", "ImageDataset", "DigitDataset", "read_idx", "read_mnist_dir",
           "find_mnist_dir", "load_mnist", "load_embedded_sample", "find_idx_file", "has_mnist", "with_channel", "normalize",
           "to_ndarray", "ArrayBatches", "RandomAffine"]


__getattr__, __dir__ = lazy_reexport(__name__, ".mnist", __all__)
