"""What a spatial transformer did to its inputs, in the input's own pixels.

The STN samples its output on a grid of source points (:mod:`stn_gluon.nn.ops`).
:func:`sampling_grid` rebuilds that grid from what a model reports (its
``theta``) with the model's own transform (affine, attention, window,
projective, thin-plate spline); :func:`sampling_regions` turns it into what a
picture needs: the grid's border (``outline``, a closed polygon) and a few
interior grid lines (``lines``), in input pixels.

Input pixels: ``x`` runs from 0 at the left edge of the image to ``W`` at its
right edge (pixel ``j`` covers ``[j, j + 1)``, its centre is ``j + 0.5``);
``y`` likewise from the top. A region that leaves ``[0, W] x [0, H]`` samples
outside the image (the STN sees the fill there).

:func:`explain_batch` runs an exported model (:class:`~stn_gluon.export.saved.LoadedModel`)
on a batch and gathers everything the pictures show: rectified images,
regions, predictions. Used by ``stn_grid.png`` (:mod:`stn_gluon.train.plots`)
and by the server's ``return_grid=1`` (:mod:`stn_gluon.serve.app`).
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .._runtime.errors import StnGluonError

__all__ = ["sampling_grid", "sampling_regions", "grid_to_pixels", "Region", "ExplainedBatch", "explain_batch",
           "GRID_LINES"]

#: Interior grid lines drawn each way (rows and columns) inside the outline.
GRID_LINES = 3

Region = Dict[str, List[Any]]
"""``{"outline": [[x, y], ...], "lines": [[[x, y], ...], ...]}`` in input pixels (see the module docstring)."""


def sampling_grid(theta: np.ndarray, transform: Optional[str], target_shape: Sequence[int]) -> np.ndarray:
    """The STN's sampling grid ``float32 (N, 2, H_out, W_out)`` in normalised coordinates.

    theta: what the model reports, ``(N, P)``: the affine ``(N, 6)`` for the
    affine family (affine, attention, window), the transform's own parameters
    otherwise (projective ``(N, 8)``, tps ``(N, 2K)``). transform: the
    model's transform name (``None``: affine). target_shape: ``(H_out, W_out)``.
    """
    import mxnet as mx

    from .ops import affine_grid, get_transform  # lazy: nn.ops loads MXNet; the ONNX server draws without it

    theta = np.asarray(theta, dtype=np.float32)
    if theta.ndim != 2:
        raise StnGluonError(f"theta must be (N, P), got shape {theta.shape}")
    family = get_transform(transform or "affine")
    params = mx.nd.array(theta)
    if family.to_affine is not None:
        if theta.shape[1] != 6:
            raise StnGluonError(f"theta of the {family.name} transform must be (N, 6), got {theta.shape}")
        return affine_grid(params, target_shape).asnumpy()
    if theta.shape[1] != family.num_params:
        raise StnGluonError(f"theta of the {family.name} transform must be (N, {family.num_params}), "
                            f"got {theta.shape}")
    constants = {k: mx.nd.array(v) for k, v in family.constants(target_shape).items()}
    return family.grid(params, target_shape, **constants).asnumpy()


def grid_to_pixels(grid: np.ndarray, input_size: Sequence[int]) -> np.ndarray:
    """Normalised grid ``(..., 2, H_out, W_out)`` -> input pixels (same shape), for an input ``(H, W)``.

    -1 and 1 are the centres of the first and last pixel (``align_corners``),
    so ``x_px = (x + 1) / 2 * (W - 1) + 0.5``.
    """
    h, w = (int(v) for v in input_size)
    grid = np.asarray(grid, dtype=np.float64)
    x = (grid[..., 0, :, :] + 1.0) / 2.0 * (w - 1) + 0.5
    y = (grid[..., 1, :, :] + 1.0) / 2.0 * (h - 1) + 0.5
    return np.stack([x, y], axis=-3)


def _points(xs: np.ndarray, ys: np.ndarray, digits: int) -> List[List[float]]:
    return [[round(float(a), digits), round(float(b), digits)] for a, b in zip(xs, ys)]


def _region(px: np.ndarray, lines: int, digits: int) -> Region:
    """One image's grid in pixels ``(2, H_out, W_out)`` -> its :data:`Region`."""
    x, y = px[0], px[1]
    h, w = x.shape
    # the border, clockwise from the top-left sample, closed
    bx = np.concatenate([x[0, :], x[1:, -1], x[-1, -2::-1], x[-2::-1, 0]])
    by = np.concatenate([y[0, :], y[1:, -1], y[-1, -2::-1], y[-2::-1, 0]])
    inner = []
    for k in range(1, lines + 1):
        i = int(round(k * (h - 1) / (lines + 1)))
        j = int(round(k * (w - 1) / (lines + 1)))
        inner.append(_points(x[i, :], y[i, :], digits))
        inner.append(_points(x[:, j], y[:, j], digits))
    return {"outline": _points(bx, by, digits), "lines": inner}


def sampling_regions(theta: np.ndarray, transform: Optional[str], target_shape: Sequence[int],
                     input_size: Sequence[int], lines: int = GRID_LINES, digits: int = 2) -> List[Region]:
    """One :data:`Region` per input: the sampling grid's border and ``lines`` grid lines each way.

    theta, transform, target_shape: as in :func:`sampling_grid`; input_size:
    the model's input ``(H, W)``; coordinates rounded to ``digits`` decimals.
    """
    px = grid_to_pixels(sampling_grid(theta, transform, target_shape), input_size)
    return [_region(p, lines, digits) for p in px]


@dataclass
class ExplainedBatch:
    """A batch through an STN classifier, with what the pictures show.

    inputs ``(N, C, H, W)`` and warped ``(N, C, H_out, W_out)``: normalised
    (``mean``, ``std``); theta ``(N, P)``; probabilities ``(N, K)``;
    regions: one :data:`Region` per input; labels ``(N,)``: the true classes, if known.
    """
    inputs: np.ndarray
    warped: np.ndarray
    theta: np.ndarray
    probabilities: np.ndarray
    regions: List[Region]
    mean: Any  # one number, or one per channel (stn_gluon.data.normalization)
    std: Any
    labels: Optional[np.ndarray] = None

    @property
    def predicted(self) -> np.ndarray:
        """The predicted classes ``(N,)``."""
        return self.probabilities.argmax(axis=1)


def explain_batch(model: Any, images: np.ndarray, labels: Optional[np.ndarray] = None) -> ExplainedBatch:
    """Run a :class:`~stn_gluon.export.saved.LoadedModel` with an STN on normalised ``images`` ``(N, C, H, W)``."""
    import mxnet as mx

    if model.stn is None:
        raise StnGluonError(f"{model.prefix}: this model has no spatial transformer to show")
    ctx = model.net.collect_params().list_ctx()[0]
    data = mx.nd.array(images, ctx=ctx)
    probabilities = mx.nd.softmax(model.net(data)).asnumpy()
    outs = model.stn(data)
    warped = outs[0].asnumpy()
    if len(outs) < 2:
        raise StnGluonError(f"{model.prefix}: the graph does not expose the STN's parameters")
    theta = outs[1].asnumpy()
    regions = sampling_regions(theta, model.meta.get("transform"), warped.shape[2:], images.shape[2:])
    return ExplainedBatch(np.asarray(images), warped, theta, probabilities, regions,
                          model.meta["mean"], model.meta["std"],
                          None if labels is None else np.asarray(labels))
