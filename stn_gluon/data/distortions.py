"""Distorted-MNIST datasets (Jaderberg et al., 2015, and a large noisy canvas), generated and cached.

Every dataset is made from MNIST's own train and test splits by a documented
generator, deterministic for a seed (``RandomState([seed, split])``), and
cached as one ``.npz`` (uint8 images, int32 labels) keyed by the name, seed,
sizes and the source MNIST. The warps use the library's own grids and
MXNet's ``BilinearSampler``; "black" (0) is read outside the digit.

=============  ======  ==========================================================================
name           canvas  generator
=============  ======  ==========================================================================
``rotated``    28      rotation uniform in +-90 degrees about the centre (R)
``rts``        42      rotation +-45 degrees, scale 0.7-1.2, placed uniformly at random where
                       the scaled 28x28 box fits inside the 42x42 canvas (RTS)
``projective`` 28      scale 0.75, then each corner of the digit's box moved by N(0, 0.15)
                       (in [-1, 1] units, 0.15 = 2 px) independently: a homography (P)
``elastic``    28      a thin-plate spline whose 4x4 control points (on the centred 0.9x
                       box) each move by N(0, 0.1) in x and y: a smooth elastic warp (E)
``cluttered``  60      the digit at a uniformly random position (wholly inside), plus 8
                       fragments of 6x6 px cut from random other digits of the same split
                       (from their central 16x16 px, where the ink is) at random positions;
                       pixels combine by maximum
``noisy128``   128     the digit at a uniformly random position (wholly inside) on a canvas of
                       Gaussian noise (|N(0, 60)|, clipped to 0..255); pixels combine by maximum.
                       20,000 train / 5,000 test images (a seeded subset of each split; the full
                       sets would need 1.2 GB), for the attention STN that outputs 28x28
=============  ======  ==========================================================================

``mnist`` is plain MNIST; ``mnist32`` is MNIST padded to 32x32 (2 black pixels each side) and repeated
into 3 channels, the input shape of CIFAR-sized backbones (``stn_cifar_resnet20_v1``); its images are
``uint8 (N, 3, 32, 32)`` views of one padded channel (no copy). How a model should look at each dataset (the STN's
output size, the CNN baseline's input size, pooling in front of the
localization net for the big canvases) is in :data:`stn_gluon.train.recipes.DATASET_MODELS`.
"""
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import mxnet as mx
import numpy as np

from . import mnist as data_lib
from .._runtime.errors import DataError, StnGluonError
from .._runtime.files import atomic_path
from ..nn.ops import get_transform, tps_control_points

__all__ = ["DatasetSpec", "DATASETS", "get_dataset_spec", "load_dataset", "generate", "homography_to_corners",
           "with_channels"]

log = logging.getLogger(__name__)
SOURCE_SIZE = 28


@dataclass(frozen=True)
class DatasetSpec:
    """How a dataset is made: its name, canvas side in pixels, subset sizes
    (``max_train`` / ``max_test``; ``None``: the whole split), the paper's name
    for it and a description. How models look at it is the recipes' business
    (:data:`stn_gluon.train.recipes.DATASET_MODELS`).
    """
    name: str
    canvas: int
    max_train: Optional[int] = None
    max_test: Optional[int] = None
    paper: Optional[str] = None
    description: str = ""
    channels: int = 1
    distorted: bool = True


DATASETS = {spec.name: spec for spec in (
    DatasetSpec("mnist", 28, description="plain MNIST", distorted=False),
    DatasetSpec("mnist32", 32, channels=3, distorted=False,
                description="MNIST padded to 32x32, 3 channels (CIFAR-shaped backbones)"),
    DatasetSpec("rotated", 28, paper="R", description="rotated +-90 deg"),
    DatasetSpec("rts", 42, paper="RTS", description="rotated +-45 deg, scaled 0.7-1.2, translated on 42x42"),
    DatasetSpec("projective", 28, paper="P", description="random homography"),
    DatasetSpec("elastic", 28, paper="E", description="random thin-plate-spline warp"),
    DatasetSpec("cluttered", 60, paper="60x60 cluttered", description="60x60 canvas, 8 fragments of 6x6 px clutter"),
    DatasetSpec("noisy128", 128, max_train=20000, max_test=5000,
                description="128x128 noisy canvas (a digit on |N(0, 60)| noise)"),
)}


def get_dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise StnGluonError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None


# ---- geometry helpers (normalised [-1, 1] coordinates, align_corners=True, target -> source) ----

def _placement_thetas(angle: np.ndarray, scale: np.ndarray, center: np.ndarray, canvas: int) -> np.ndarray:
    """Affine thetas (n, 6) that draw the 28x28 source rotated by ``angle`` (rad), scaled by
    ``scale`` and centred at pixel ``center`` (n, 2) of a ``canvas`` x ``canvas`` output."""
    half_out, half_src = (canvas - 1) / 2.0, (SOURCE_SIZE - 1) / 2.0
    cos, sin = np.cos(angle), np.sin(angle)
    k = half_out / (half_src * scale)
    # source = R(-angle) (X - center) / (half_src * scale), X = half_out * (u + 1)
    a, b, c, d = cos * k, sin * k, -sin * k, cos * k
    off = (half_out - center) / (half_src * scale)[:, None]
    tx = cos * off[:, 0] + sin * off[:, 1]
    ty = -sin * off[:, 0] + cos * off[:, 1]
    return np.stack([a, b, tx, c, d, ty], axis=1).astype(np.float32)


def _solve_homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3x3 homography (8 parameters, h33 = 1) taking points ``src`` (4, 2) to ``dst`` (4, 2)."""
    rows: List[List[float]] = []
    rhs: List[float] = []
    for (x, y), (u, v) in zip(src, dst):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    return np.linalg.solve(np.asarray(rows, float), np.asarray(rhs, float))


_CORNERS = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)


def homography_to_corners(where: np.ndarray) -> np.ndarray:
    """Homography parameters (8,) (target -> source) that put the source's corners at ``where`` (4, 2)
    in the output: the output point ``where[i]`` samples the source corner ``i``."""
    return _solve_homography(where, _CORNERS).astype(np.float32)


def _warp(images: np.ndarray, params: np.ndarray, transform: str, canvas: int, chunk: int = 2000) -> np.ndarray:
    """uint8 (N, 28, 28) -> uint8 (N, canvas, canvas) by a transform family's parameters (N, P)."""
    t = get_transform(transform)
    out = np.empty((len(images), canvas, canvas), np.uint8)
    for i in range(0, len(images), chunk):
        x = mx.nd.array(images[i:i + chunk, None].astype(np.float32))
        p = mx.nd.array(params[i:i + chunk])
        y = t.warp(x, p, (canvas, canvas)).asnumpy()[:, 0]
        out[i:i + chunk] = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return out


# ---- generators: (images uint8 (N, 28, 28), rng) -> uint8 (N, canvas, canvas) ----

def _rotated(images: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    n = len(images)
    angle = np.deg2rad(rng.uniform(-90, 90, n))
    center = np.full((n, 2), (SOURCE_SIZE - 1) / 2.0)
    return _warp(images, _placement_thetas(angle, np.ones(n), center, 28), "affine", 28)


def _rts(images: np.ndarray, rng: np.random.RandomState, canvas: int = 42) -> np.ndarray:
    n = len(images)
    angle = np.deg2rad(rng.uniform(-45, 45, n))
    scale = rng.uniform(0.7, 1.2, n)
    half = SOURCE_SIZE * scale / 2.0
    center = rng.uniform(half[:, None] - 0.5, (canvas - 0.5 - half)[:, None], (n, 2))
    return _warp(images, _placement_thetas(angle, scale, center, canvas), "affine", canvas)


def _projective(images: np.ndarray, rng: np.random.RandomState, scale: float = 0.75,
                sigma: float = 0.15) -> np.ndarray:
    where = scale * _CORNERS[None] + rng.normal(0, sigma, (len(images), 4, 2))
    params = np.stack([homography_to_corners(w) for w in where])
    return _warp(images, params, "projective", 28)


def _elastic(images: np.ndarray, rng: np.random.RandomState, k: int = 4, box: float = 0.9,
             sigma: float = 0.1) -> np.ndarray:
    ctrl = tps_control_points(k)
    n = len(images)
    # target control points on the centred 0.9 box map to the whole source: a slight zoom-out,
    # then each source position is perturbed
    source = ctrl[None] / box + rng.normal(0, sigma, (n, k * k, 2))
    params = np.concatenate([source[..., 0], source[..., 1]], axis=1).astype(np.float32)
    return _warp(images, params, f"tps{k}" if k != 4 else "tps", 28)


def _paste_at_random(images: np.ndarray, rng: np.random.RandomState, canvas: int) -> np.ndarray:
    n = len(images)
    out = np.zeros((n, canvas, canvas), np.uint8)
    pos = rng.randint(0, canvas - SOURCE_SIZE + 1, (n, 2))
    for i, (y, x) in enumerate(pos):
        out[i, y:y + SOURCE_SIZE, x:x + SOURCE_SIZE] = images[i]
    return out


def _cluttered(images: np.ndarray, rng: np.random.RandomState, canvas: int = 60, pieces: int = 8,
               size: int = 6) -> np.ndarray:
    n = len(images)
    out = _paste_at_random(images, rng, canvas)
    donors = rng.randint(0, n, (n, pieces))
    cut = rng.randint(6, 6 + 16 - size + 1, (n, pieces, 2))  # inside the central 16x16 px
    place = rng.randint(0, canvas - size + 1, (n, pieces, 2))
    for i in range(n):
        for j in range(pieces):
            (cy, cx), (py, px) = cut[i, j], place[i, j]
            patch = images[donors[i, j], cy:cy + size, cx:cx + size]
            region = out[i, py:py + size, px:px + size]
            np.maximum(region, patch, out=region)
    return out


def _noisy128(images: np.ndarray, rng: np.random.RandomState, canvas: int = 128,
              sigma: float = 60.0) -> np.ndarray:
    out = _paste_at_random(images, rng, canvas)
    for i in range(0, len(out), 1000):
        noise = np.clip(np.abs(rng.normal(0, sigma, out[i:i + 1000].shape)), 0, 255).astype(np.uint8)
        np.maximum(out[i:i + 1000], noise, out=out[i:i + 1000])
    return out


def _padded(images: np.ndarray, rng: np.random.RandomState, canvas: int = 32) -> np.ndarray:
    pad = (canvas - SOURCE_SIZE) // 2
    return np.pad(images, ((0, 0), (pad, canvas - SOURCE_SIZE - pad), (pad, canvas - SOURCE_SIZE - pad)))


#: Dataset name -> its generator.
GENERATORS: Dict[str, Callable[[np.ndarray, np.random.RandomState], np.ndarray]] = {
    "mnist32": _padded, "rotated": _rotated, "rts": _rts, "projective": _projective, "elastic": _elastic,
    "cluttered": _cluttered, "noisy128": _noisy128}


def generate(name: str, mnist: data_lib.DigitDataset, seed: int = 0) -> data_lib.DigitDataset:
    """Make dataset ``name`` from an :class:`~stn_gluon.data.mnist.DigitDataset` -> a new ``DigitDataset``."""
    spec = get_dataset_spec(name)
    if name == "mnist":
        return mnist
    splits: List[np.ndarray] = []
    for k, (images, labels, limit) in enumerate(((mnist.train_images, mnist.train_labels, spec.max_train),
                                                 (mnist.test_images, mnist.test_labels, spec.max_test))):
        rng = np.random.RandomState([seed, k])
        if limit is not None and len(images) > limit:
            keep = np.sort(rng.choice(len(images), limit, replace=False))
            images, labels = images[keep], labels[keep]
        splits += [GENERATORS[name](np.asarray(images), rng), np.asarray(labels, np.int32)]
    return data_lib.DigitDataset(splits[0], splits[1], splits[2], splits[3],
                                 source=f"{name} (seed {seed}) from {mnist.source}")


def distortions_cache_dir() -> str:
    """Where generated datasets are cached by default: ``~/.mxnet/datasets/stn_gluon``."""
    return os.path.join(mx.base.data_dir(), "datasets", "stn_gluon")


def _cache_key(name: str, mnist: data_lib.DigitDataset, seed: int) -> str:
    digest = hashlib.sha256()
    for arr in (mnist.train_labels, mnist.test_labels, mnist.train_images[:64], mnist.test_images[:64]):
        digest.update(np.ascontiguousarray(arr).tobytes())
    digest.update(f"{len(mnist.train_labels)},{len(mnist.test_labels)}".encode())
    return f"{name}-seed{seed}-v1-{digest.hexdigest()[:12]}.npz"


def load_dataset(name: str = "mnist", data_dir: Optional[str] = None, download: bool = False, seed: int = 0,
                 cache_dir: Optional[str] = None,
                 mnist: Optional[data_lib.DigitDataset] = None) -> data_lib.DigitDataset:
    """Dataset ``name`` as :class:`~stn_gluon.data.mnist.DigitDataset` (images ``uint8 (N, H, W)``).

    MNIST comes from :func:`~stn_gluon.data.mnist.load_mnist` (or ``mnist``); a
    distorted set is read from ``cache_dir`` (default
    ``~/.mxnet/datasets/stn_gluon``) or generated and cached there atomically.
    A corrupt cache file is an error naming it.
    """
    spec = get_dataset_spec(name)
    mnist = mnist if mnist is not None else data_lib.load_mnist(data_dir, download=download)
    if spec.name == "mnist":
        return mnist
    cache_dir = cache_dir or os.environ.get("STN_GLUON_CACHE") or distortions_cache_dir()
    path = os.path.join(cache_dir, _cache_key(name, mnist, seed))
    if os.path.exists(path):
        return with_channels(_read_cache(path, spec, mnist, name, seed), spec.channels)
    log.info("Generating the %s dataset (%s) into %s", name, spec.description, path)
    made = generate(name, mnist, seed)
    os.makedirs(cache_dir, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, train_images=made.train_images, train_labels=made.train_labels,
                     test_images=made.test_images, test_labels=made.test_labels)
    return with_channels(made, spec.channels)


def with_channels(dataset: data_lib.DigitDataset, channels: int) -> data_lib.DigitDataset:
    """A :class:`~stn_gluon.data.mnist.DigitDataset` of ``(N, H, W)`` images as ``(N, channels, H, W)`` read-only views
    (the one channel repeated, no copy); ``channels=1``: as it is."""
    if channels == 1:
        return dataset

    def repeat(images: np.ndarray) -> np.ndarray:
        return np.broadcast_to(images[:, None], (len(images), channels) + images.shape[1:])

    return data_lib.DigitDataset(repeat(dataset.train_images), dataset.train_labels, repeat(dataset.test_images),
                                 dataset.test_labels, dataset.source)


def _read_cache(path: str, spec: DatasetSpec, mnist: data_lib.DigitDataset, name: str,
                seed: int) -> data_lib.DigitDataset:
    try:
        with np.load(path) as z:
            arrays = [z[k] for k in ("train_images", "train_labels", "test_images", "test_labels")]
    except Exception as err:  # zip, pickle or key errors: all mean a bad file
        raise DataError(f"{path}: unreadable dataset cache ({str(err).splitlines()[0][:120]}); "
                        f"delete it to regenerate") from None
    for images, labels in (arrays[:2], arrays[2:]):
        if (images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (spec.canvas, spec.canvas)
                or len(images) != len(labels)):
            raise DataError(f"{path}: not a {name} dataset cache ({images.dtype} {images.shape}, "
                            f"{len(labels)} labels); delete it to regenerate")
    return data_lib.DigitDataset(arrays[0], arrays[1], arrays[2], arrays[3],
                                 source=f"{name} (seed {seed}) from {mnist.source}")
