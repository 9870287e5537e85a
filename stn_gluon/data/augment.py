"""Photometric batch augmentation (:class:`ColorJitter`) and a chain of batch augmentations (:class:`Chain`).

Like :class:`stn_gluon.data.mnist.RandomAffine`, they work on normalised ``(N, C, H, W)`` NDArray batches, draw
from ``RandomState`` seeded per epoch (a resumed run sees the same draws) and, in a distributed job, draw the
whole global batch and apply this worker's slice (``shard``).
"""
from typing import Any, Iterable, List, Sequence

import mxnet as mx
import numpy as np

from .mnist import to_ndarray
from .normalization import ChannelValues, as_channel_values

__all__ = ["ColorJitter", "Chain", "LUMA"]

#: How grey is made from RGB (ITU-R BT.601, as PIL's ``convert("L")``).
LUMA = (0.299, 0.587, 0.114)


class ColorJitter:
    """Random brightness, contrast and saturation per image, of ``strength`` (0.3: factors in 0.7..1.3).

    On pixels in [0, 1] (the batch is un-normalised with ``mean``/``std`` first, and normalised again after):
    brightness multiplies every pixel; contrast moves pixels toward or away from the image's mean grey;
    saturation (3 channels only) moves each pixel toward or away from its own grey; the result is clipped to
    [0, 1]. Draws come from ``RandomState([seed, epoch, 1])``.
    """

    def __init__(self, strength: float, mean: ChannelValues, std: ChannelValues, seed: int = 0,
                 shard: Sequence[int] = (0, 1)) -> None:
        self.strength, self.mean, self.std, self.seed = float(strength), mean, std, seed
        self.rank, self.parts = int(shard[0]), int(shard[1])
        self.rng = np.random.RandomState([seed, 0, 1])

    def set_epoch(self, epoch: int) -> None:
        self.rng = np.random.RandomState([self.seed, epoch, 1])

    def factors(self, n: int) -> np.ndarray:
        """``(n, 3)`` float32 brightness, contrast and saturation factors in ``1 +- strength`` (at least 0)."""
        s = self.strength
        return np.maximum(self.rng.uniform(1 - s, 1 + s, (n, 3)), 0.0).astype(np.float32)

    def __call__(self, batch: Any) -> Any:
        n, c = batch.shape[:2]
        f = self.factors(n * self.parts)[self.rank * n:(self.rank + 1) * n].reshape(n, 3, 1, 1, 1)
        ctx = batch.context
        mean = to_ndarray(as_channel_values(self.mean, c, "mean")[None], ctx)
        std = to_ndarray(as_channel_values(self.std, c, "std")[None], ctx)
        brightness, contrast, saturation = (to_ndarray(f[:, k], ctx) for k in range(3))
        x = mx.nd.broadcast_mul(mx.nd.broadcast_add(mx.nd.broadcast_mul(batch, std), mean), brightness)
        grey = self._grey(x)
        level = mx.nd.mean(grey, axis=(1, 2, 3), keepdims=True)
        x = mx.nd.broadcast_add(mx.nd.broadcast_mul(mx.nd.broadcast_sub(x, level), contrast), level)
        if c == 3:
            grey = self._grey(x)
            x = mx.nd.broadcast_add(mx.nd.broadcast_mul(mx.nd.broadcast_sub(x, grey), saturation), grey)
        return mx.nd.broadcast_div(mx.nd.broadcast_sub(mx.nd.clip(x, 0.0, 1.0), mean), std)

    @staticmethod
    def _grey(x: Any) -> Any:
        if x.shape[1] != 3:
            return mx.nd.mean(x, axis=1, keepdims=True)
        weights = to_ndarray(np.asarray(LUMA, np.float32).reshape(1, 3, 1, 1), x.context)
        return mx.nd.sum(mx.nd.broadcast_mul(x, weights), axis=1, keepdims=True)


class Chain:
    """Batch augmentations applied one after the other; ``set_epoch`` reaches each."""

    def __init__(self, steps: Iterable[Any]) -> None:
        self.steps: List[Any] = list(steps)

    def set_epoch(self, epoch: int) -> None:
        for step in self.steps:
            step.set_epoch(epoch)

    def __call__(self, batch: Any) -> Any:
        for step in self.steps:
            batch = step(batch)
        return batch
