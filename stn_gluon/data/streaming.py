"""Batches of a dataset too large for memory, decoded from disk by Gluon's ``DataLoader`` worker processes.

:class:`StreamBatches` yields exactly the batches :class:`~stn_gluon.data.mnist.ArrayBatches` would yield from
the decoded arrays (the same seeded order, the same shards, the same normalisation), so the trainers take
either: :func:`make_batches` picks the one that fits the images it is given.
"""
from typing import Any, Iterator, List, Sequence, Tuple

import numpy as np
from mxnet import gluon

from .images import FileImages
from .mnist import ArrayBatches, normalize, to_ndarray

__all__ = ["StreamBatches", "make_batches"]


class _Pixels(gluon.data.Dataset):
    """``(uint8 (C, H, W), label)`` pairs of a :class:`FileImages`, decoded in the worker that asks."""

    def __init__(self, images: FileImages, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tuple[np.ndarray, float]:
        return self.images.read(int(i)), float(self.labels[i])


def _stack(samples: Sequence[Tuple[np.ndarray, float]]) -> Tuple[np.ndarray, np.ndarray]:
    """The ``DataLoader``'s batchify: NumPy arrays (pickled back to the training process)."""
    return np.stack([s[0] for s in samples]), np.asarray([s[1] for s in samples], np.float32)


class _EpochSampler:
    """The batch sampler of a ``DataLoader``: the index arrays of the batches' current epoch."""

    def __init__(self, batches: ArrayBatches) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[List[int]]:
        for idx in self.batches.batch_indices():
            yield idx.tolist()

    def __len__(self) -> int:
        return len(self.batches)


class StreamBatches(ArrayBatches):
    """:class:`~stn_gluon.data.mnist.ArrayBatches` over a :class:`~stn_gluon.data.images.FileImages`: each batch
    is decoded by one of ``workers`` processes of a ``gluon.data.DataLoader`` (0: in this process), a few batches
    ahead of the training loop, then normalised here. Same arguments otherwise; yields the same batches."""

    def __init__(self, images: FileImages, labels: Any, batch_size: int, workers: int = 2, **kwargs: Any) -> None:
        super().__init__(images, labels, batch_size, **kwargs)
        self.workers = int(workers)
        self._loader: Any = None

    def _keep(self, data: Any) -> Tuple[Any, bool]:
        return data, True

    def _data_loader(self) -> Any:
        if self._loader is None:
            self._loader = gluon.data.DataLoader(_Pixels(self.data, self.labels), batch_sampler=_EpochSampler(self),
                                                 batchify_fn=_stack, num_workers=self.workers)
        return self._loader

    def __iter__(self) -> Iterator[Tuple[Any, Any]]:
        for x, y in self._data_loader():
            yield to_ndarray(normalize(x, self.mean, self.std), self.ctx), to_ndarray(y, self.ctx)

    def close(self) -> None:
        """Let the worker processes go (the ``DataLoader`` ends them when it is collected)."""
        self._loader = None


def make_batches(images: Any, labels: Any, batch_size: int, workers: int = 2, **kwargs: Any) -> ArrayBatches:
    """:class:`StreamBatches` for images on disk (:class:`FileImages`), else :class:`ArrayBatches`; ``kwargs``
    as :class:`ArrayBatches` takes them (``shuffle``, ``seed``, ``last_batch``, ``ctx``, ``mean``, ``std``,
    ``shard``)."""
    if isinstance(images, FileImages):
        return StreamBatches(images, labels, batch_size, workers=workers, **kwargs)
    return ArrayBatches(images, labels, batch_size, **kwargs)
