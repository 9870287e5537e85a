"""One classification dataset in memory (or streamed from disk): images, labels, class names, normalisation.

:class:`ImageDataset` is what every reader of :mod:`stn_gluon.data` returns: MNIST and its distorted sets
(``digits=True``, MNIST's mean and std) as well as the user's own images (:mod:`stn_gluon.data.sources`:
class names from folder names, per-channel mean and std computed on the training split, ``digits=False``).
``DigitDataset`` (:mod:`stn_gluon.data.mnist`) is the same class under its old name.
"""
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

import numpy as np

from ..nn.architecture import MNIST_MEAN, MNIST_STD
from .normalization import ChannelValues

__all__ = ["ImageDataset", "spread_index"]


@dataclass
class ImageDataset:
    """A classification dataset.

    train_images / val_images / test_images: ``uint8`` pixels in 0..255, ``(N, H, W)`` (one channel) or
    ``(N, C, H, W)``; or an array-like that decodes them on demand (:class:`stn_gluon.data.images.FileImages`,
    for sets larger than the memory limit). train_labels / ...: ``int32 (N,)`` in ``0..len(classes)-1``.
    classes: the class names, index = label (default: ``"0"`` .. ``"9"`` for digits, else the labels' range).
    class_folders: the data's own names of those classes (its folders, a CSV's or ``.rec``'s labels) where a
    names file renamed them, else ``None``.
    mean / std: how pixels become inputs, ``(x/255 - mean)/std``, one number or one per channel.
    digits: MNIST-family digits (the digit rules apply to the model's inputs; its background is black).
    val_images / val_labels: a validation split, or ``None`` (MNIST and its distorted sets have none).
    An empty test split (``len(test_labels) == 0``) means the data has no test split.
    skipped: unreadable images left out (``skip_unreadable``). notes: lines saying what the loader chose
    (input size, channels, cache), for the run's log.
    """
    train_images: Any
    train_labels: np.ndarray
    test_images: Any
    test_labels: np.ndarray
    source: str
    classes: Optional[List[str]] = None
    mean: ChannelValues = MNIST_MEAN
    std: ChannelValues = MNIST_STD
    digits: bool = True
    val_images: Any = None
    val_labels: Optional[np.ndarray] = None
    skipped: int = 0
    notes: List[str] = field(default_factory=list)
    class_folders: Optional[List[str]] = None

    def __post_init__(self) -> None:
        if self.classes is None:
            top = max([int(np.max(a)) + 1 for a in (self.train_labels, self.test_labels) if len(a)] + [0])
            self.classes = [str(i) for i in range(max(top, 10 if self.digits else 1))]
        self.classes = [str(c) for c in self.classes]

    @property
    def num_classes(self) -> int:
        """How many classes (the network's outputs)."""
        return len(self.classes or ())

    @property
    def image_shape(self) -> Tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        shape = tuple(int(v) for v in self.train_images.shape[1:])
        return (1,) + shape if len(shape) == 2 else (shape[0], shape[1], shape[2])

    @property
    def has_val(self) -> bool:
        """Whether the data has a validation split."""
        return self.val_labels is not None and len(self.val_labels) > 0

    @property
    def has_test(self) -> bool:
        """Whether the data has a test split."""
        return len(self.test_labels) > 0

    def describe(self) -> str:
        val = f", {len(self.val_labels)} val" if self.has_val and self.val_labels is not None else ""
        return f"{self.source} ({len(self.train_labels)} train{val}, {len(self.test_labels)} test)"


def spread_index(n: int, count: int) -> np.ndarray:
    """``min(count, n)`` indices spread evenly over ``0..n-1``, first and last included: a sample of a split
    that shows all of it (a folder's test split is stored class by class: its first images are of the first
    classes only)."""
    return np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(np.int64))
