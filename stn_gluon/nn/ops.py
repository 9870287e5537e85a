"""Functional core: sampling grids and warps built from MXNet operators.

Conventions (MXNet's, used everywhere in this package):

* Images are ``(N, C, H, W)``. Grids are ``(N, 2, H_out, W_out)``; channel 0
  holds the source x and channel 1 the source y, both in normalised
  coordinates.
* Normalised coordinates run over ``[-1, 1]`` with -1 and 1 at the *centres*
  of the first and last pixel (``align_corners=True``): output pixel ``(i, j)``
  sits at ``x_t = -1 + 2 j / (W_out - 1)``, ``y_t = -1 + 2 i / (H_out - 1)``.
* An affine ``theta`` ``(N, 6)`` (row-major ``(N, 2, 3)``) maps target to
  source: ``[x_s, y_s] = theta @ [x_t, y_t, 1]``. The identity is
  ``[1, 0, 0, 0, 1, 0]``.
* A homography ``(N, 8)`` = ``(a, b, c, d, e, f, g, h)`` is the 3x3 matrix
  ``[[a, b, c], [d, e, f], [g, h, 1]]``, also target to source:
  ``x_s = (a x_t + b y_t + c) / (g x_t + h y_t + 1)``, ``y_s`` likewise with
  ``d, e, f``. The identity is ``[1, 0, 0, 0, 1, 0, 0, 0]``.
* A thin-plate spline ``(N, 2K)`` holds the *source* positions of ``K = k*k``
  control points, all x then all y, whose target positions are the ``k x k``
  grid ``linspace(-1, 1)`` (row-major, x fastest). The identity is that grid.
* Sampling is bilinear; any part of the 2x2 neighbourhood that falls outside
  the input contributes zero (zero padding), or ``fill`` where a function
  takes it (computed as ``sample(x - fill) + fill``).

Every function takes either NDArrays or Symbols and returns the same kind.
"""
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import mxnet as mx
import numpy as np

from .._runtime.errors import StnGluonError

__all__ = [
    "affine_grid", "affine_transform", "attention_to_affine", "window_to_affine", "bilinear_sample",
    "homography_grid", "tps_control_points", "tps_grid_matrix", "tps_grid",
    "warp_with_grid", "Transform", "TRANSFORMS", "get_transform", "Tensor", "Shape", "check_target_shape",
]

Tensor = Union[mx.nd.NDArray, mx.sym.Symbol]
"""What the functions take and return: an NDArray or a Symbol (NDArrays in, NDArrays out; Symbols in, Symbols out)."""
Shape = Sequence[int]
"""A spatial size ``(H, W)``: two integers (a tuple, a list, an NDArray's ``shape[2:]``)."""


def _F(x: Tensor) -> Any:
    return mx.sym if isinstance(x, mx.sym.Symbol) else mx.nd


def check_target_shape(target_shape: Optional[Shape]) -> Tuple[int, int]:
    """``(H_out, W_out)`` as two positive ints, or a one-line error naming what is wrong."""
    try:
        h, w = (int(v) for v in target_shape)  # type: ignore[union-attr]  # None: the TypeError below
    except (TypeError, ValueError):
        raise StnGluonError(f"target_shape must be two integers (H, W), got {target_shape!r}")
    if h < 2 or w < 2:
        raise StnGluonError(f"target_shape must be at least (2, 2), got {target_shape!r}")
    return h, w


def affine_grid(theta: Tensor, target_shape: Shape) -> Tensor:
    """Sampling grid of an affine transform.

    theta: ``(N, 6)`` or ``(N, 2, 3)``, target -> source in normalised coordinates.
    target_shape: ``(H_out, W_out)``.
    Returns the grid ``(N, 2, H_out, W_out)`` with values in normalised
    coordinates (inside ``[-1, 1]`` means inside the input).
    """
    F = _F(theta)
    h, w = check_target_shape(target_shape)
    return F.GridGenerator(F.reshape(theta, shape=(-1, 6)), transform_type="affine",
                           target_shape=(h, w))


def bilinear_sample(data: Tensor, grid: Tensor) -> Tensor:
    """Bilinear sampling with zero padding.

    data: ``(N, C, H, W)``; grid: ``(N, 2, H_out, W_out)`` (see module docs).
    Returns ``(N, C, H_out, W_out)``.
    """
    return _F(data).BilinearSampler(data, grid)


def _check_warp_inputs(data: Tensor, target_shape: Optional[Shape], params: Tensor, num_params: int,
                       what: str) -> Shape:
    if target_shape is None:
        if isinstance(data, mx.sym.Symbol):
            raise StnGluonError(f"{what} on a Symbol needs an explicit target_shape")
        target_shape = data.shape[2:]
    if not isinstance(data, mx.sym.Symbol):
        if data.ndim != 4:
            raise StnGluonError(f"data must be (N, C, H, W), got shape {data.shape}")
        if params.size != data.shape[0] * num_params:
            raise StnGluonError(f"{what}: theta (the transform's parameters) must be (N, {num_params}) "
                                f"with N={data.shape[0]}, got shape {params.shape}")
    return target_shape


def warp_with_grid(data: Tensor, grid: Tensor, fill: float = 0.0, name: Optional[str] = None) -> Tensor:
    """Bilinear sampling of ``data`` ``(N, C, H, W)`` at ``grid`` ``(N, 2, H_out, W_out)``.

    Reads ``fill`` outside the input (computed as ``sample(data - fill) + fill``).
    Returns ``(N, C, H_out, W_out)``; ``name`` names the output node of a Symbol.
    """
    F = _F(data)
    if fill:
        return F.identity(F.BilinearSampler(data - fill, grid) + fill, name=name)
    return F.BilinearSampler(data, grid, name=name)


def affine_transform(data: Tensor, theta: Tensor, target_shape: Optional[Shape] = None, fill: float = 0.0,
                     name: Optional[str] = None) -> Tensor:
    """Warp ``data`` with an affine ``theta`` (the STN's sampler stage).

    data: ``(N, C, H, W)`` float; theta: ``(N, 6)`` or ``(N, 2, 3)``, mapping
    output to input in normalised ``[-1, 1]`` coordinates (align_corners=True).
    target_shape: ``(H_out, W_out)``; ``None`` keeps ``(H, W)`` (NDArrays only,
    a Symbol has no shape to keep).
    fill: the value read outside the input (0 is MXNet's zero padding; for
    normalised images pass the background's normalised value).
    name: the name of the output node when building a Symbol.
    Returns ``(N, C, H_out, W_out)``.
    """
    target_shape = _check_warp_inputs(data, target_shape, theta, 6, "affine_transform")
    return warp_with_grid(data, affine_grid(theta, target_shape), fill, name)


def attention_to_affine(params: Tensor) -> Tensor:
    """Attention parameters ``(N, 3)`` = ``(s, t_x, t_y)`` -> affine theta ``(N, 6)``.

    theta = ``[[s, 0, t_x], [0, s, t_y]]``: an isotropic zoom by ``1/s`` about
    the point ``(t_x, t_y)`` of the input (s < 1 zooms in).
    """
    F = _F(params)
    s = F.slice_axis(params, axis=1, begin=0, end=1)
    tx = F.slice_axis(params, axis=1, begin=1, end=2)
    ty = F.slice_axis(params, axis=1, begin=2, end=3)
    zero = F.zeros_like(s)
    return F.concat(s, zero, tx, zero, s, ty, dim=1)


def window_to_affine(params: Tensor) -> Tensor:
    """Bounded attention parameters ``(N, 3)`` = ``(a, b_x, b_y)`` -> affine theta ``(N, 6)``.

    The window of :func:`attention_to_affine` with ``s = 2 sigmoid(a)`` in
    ``(0, 2)`` and ``t = tanh(b)`` in ``(-1, 1)``: its centre never leaves the
    input, so the sampler always sees part of the image and always passes a
    gradient back (an unbounded window that drifts off the image reads only
    padding and stops learning). ``(0, 0, 0)`` is the identity.
    """
    F = _F(params)
    s = 2 * F.sigmoid(F.slice_axis(params, axis=1, begin=0, end=1))
    t = F.tanh(F.slice_axis(params, axis=1, begin=1, end=3))
    return attention_to_affine(F.concat(s, t, dim=1))


def _window_logit(scale: float) -> float:
    if not 0 < scale < 2:
        raise StnGluonError(f"the window transform's scale lies in (0, 2), got init_scale={scale}")
    return float(np.log(scale / (2.0 - scale)))


MIN_HOMOGRAPHY_DENOMINATOR = 0.1
"""The smallest denominator ``g x + h y + 1`` a homography grid divides by.

Where a homography puts the horizon inside the output (the denominator
crosses 0) the grid is clamped there instead of flipping to infinity."""


def homography_grid(params: Tensor, target_shape: Shape) -> Tensor:
    """Sampling grid of a homography.

    params: ``(N, 8)`` = ``(a, b, c, d, e, f, g, h)``, the matrix
    ``[[a, b, c], [d, e, f], [g, h, 1]]`` mapping target to source in
    normalised coordinates. target_shape: ``(H_out, W_out)``.
    Returns ``(N, 2, H_out, W_out)``. Built from two affine grids (numerator
    and denominator) so that it exports to ONNX with the affine grid's converter; the
    denominator is clamped at :data:`MIN_HOMOGRAPHY_DENOMINATOR`.
    """
    F = _F(params)
    numerator = affine_grid(F.slice_axis(params, axis=1, begin=0, end=6), target_shape)
    gh = F.slice_axis(params, axis=1, begin=6, end=8)
    zeros = F.zeros_like(F.slice_axis(params, axis=1, begin=0, end=4))
    # affine grid of [g, h, 0, 0, 0, 0]: channel 0 is g x + h y
    denominator = F.slice_axis(affine_grid(F.concat(gh, zeros, dim=1), target_shape),
                               axis=1, begin=0, end=1) + 1.0
    denominator = F.maximum(denominator, MIN_HOMOGRAPHY_DENOMINATOR)
    return F.broadcast_div(numerator, denominator)


def tps_control_points(k: int) -> np.ndarray:
    """The ``k x k`` target control points of a thin-plate spline: ``(k*k, 2)`` (x, y) in [-1, 1].

    Row-major (x fastest), the same order as the ``(N, 2K)`` parameters.
    """
    if int(k) < 2:
        raise StnGluonError(f"a thin-plate spline needs at least 2x2 control points, got {k}")
    ticks = np.linspace(-1.0, 1.0, int(k))
    ys, xs = np.meshgrid(ticks, ticks, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def _tps_radial(d2: np.ndarray) -> np.ndarray:
    """U(r) = r^2 log r^2 from squared distances (0 at r = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d2 > 0, d2 * np.log(np.maximum(d2, 1e-300)), 0.0)


def tps_grid_matrix(k: int, target_shape: Shape) -> np.ndarray:
    """The constant matrix ``W`` ``(2 H W, 2 K)`` of a thin-plate-spline grid.

    For the source positions ``s`` ``(N, 2K)`` of the ``K = k*k`` control
    points (see :func:`tps_control_points`), ``s @ W.T`` reshaped to
    ``(N, 2, H, W)`` is the sampling grid of the spline that takes each target
    control point to its source position, with minimum bending energy (an
    affine map is reproduced exactly). Float64 solve, float32 result.
    """
    h, w = check_target_shape(target_shape)
    ctrl = tps_control_points(k)
    n = len(ctrl)
    system = np.zeros((n + 3, n + 3))
    system[:n, :n] = _tps_radial(((ctrl[:, None] - ctrl[None]) ** 2).sum(-1))
    system[:n, n] = 1.0
    system[:n, n + 1:] = ctrl
    system[n:, :n] = system[:n, n:].T
    ys, xs = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    points = np.stack([xs.ravel(), ys.ravel()], axis=1)
    basis = np.concatenate([_tps_radial(((points[:, None] - ctrl[None]) ** 2).sum(-1)),
                            np.ones((len(points), 1)), points], axis=1)
    # f(p) = basis(p) @ inv(system) @ [s; 0]: only the first n columns of the inverse matter
    per_axis = basis @ np.linalg.inv(system)[:, :n]
    out = np.zeros((2 * h * w, 2 * n))
    out[:h * w, :n] = per_axis
    out[h * w:, n:] = per_axis
    return out.astype(np.float32)


def tps_grid(params: Tensor, matrix: Tensor, target_shape: Shape) -> Tensor:
    """Sampling grid of a thin-plate spline.

    params: ``(N, 2K)`` source positions of the control points; matrix: the
    ``(2 H W, 2 K)`` constant of :func:`tps_grid_matrix` for ``target_shape``
    (an NDArray, or a Symbol such as a Gluon constant parameter).
    Returns ``(N, 2, H_out, W_out)``.
    """
    F = _F(params)
    h, w = check_target_shape(target_shape)
    flat = F.FullyConnected(params, weight=matrix, no_bias=True, num_hidden=2 * h * w, flatten=True)
    return F.reshape(flat, shape=(-1, 2, h, w))


class Transform:
    """A family of spatial transforms the STN can regress.

    num_params: length of the parameter vector the localization net predicts.
    identity(init_scale=1.0): the parameter vector of the identity (or of a
    centred zoom by ``1/init_scale``), used to initialise the regressor bias.
    to_affine(params): ``(N, num_params)`` -> ``(N, 6)``, for transforms
    that are affine (``None`` otherwise); grid(params, target_shape,
    **constants): the sampling grid, for the others (default: the affine grid).
    """

    #: whether :meth:`grid` needs :meth:`constants` (which then depend on the target shape)
    has_constants = False

    def __init__(self, name: str, num_params: int, identity: Callable[..., List[float]],
                 to_affine: Optional[Callable[[Tensor], Tensor]] = None,
                 grid: Optional[Callable[..., Tensor]] = None) -> None:
        self.name = name
        self.num_params = num_params
        self.identity = identity
        self.to_affine = to_affine
        self._grid = grid
        if to_affine is None and grid is None:
            raise StnGluonError(f"transform {name!r} needs to_affine or grid")

    def constants(self, target_shape: Shape) -> Dict[str, np.ndarray]:
        """The constant arrays :meth:`grid` needs for ``target_shape``, by keyword (``{}`` for most)."""
        return {}

    def grid(self, params: Tensor, target_shape: Shape, **constants: Tensor) -> Tensor:
        """The sampling grid ``(N, 2, H_out, W_out)`` of ``params`` ``(N, num_params)``."""
        if self._grid is not None:
            return self._grid(params, target_shape, **constants)
        assert self.to_affine is not None
        return affine_grid(self.to_affine(params), target_shape)

    def theta(self, params: Tensor) -> Tensor:
        """What ``return_theta`` gives: the affine ``(N, 6)`` where there is one, else the parameters."""
        return self.to_affine(params) if self.to_affine is not None else params

    def warp(self, data: Tensor, params: Tensor, target_shape: Optional[Shape] = None, fill: float = 0.0,
             name: Optional[str] = None, **constants: Tensor) -> Tensor:
        """The STN's sampler stage: ``(N, C, H, W)`` -> ``(N, C, H_out, W_out)``.

        ``constants`` are those of :meth:`constants` for ``target_shape``; on
        NDArrays they are computed when not given, on Symbols they must be.
        """
        target_shape = _check_warp_inputs(data, target_shape, params, self.num_params, f"{self.name} warp")
        needed = self.constants(target_shape) if not constants else {}
        if needed and isinstance(params, mx.sym.Symbol):
            raise StnGluonError(f"{self.name} warp on Symbols needs its constants ({', '.join(needed)}) "
                                f"passed in, as SpatialTransformer does")
        constants = constants or {k: mx.nd.array(v, ctx=params.context) for k, v in needed.items()}
        return warp_with_grid(data, self.grid(params, target_shape, **constants), fill, name)

    def __repr__(self) -> str:
        return f"Transform({self.name!r}, num_params={self.num_params})"


class ThinPlateSpline(Transform):
    """Thin-plate spline over a ``k x k`` grid of control points (``2 k^2`` parameters).

    Its grid is a constant matrix (``tps_matrix``, see :func:`tps_grid_matrix`)
    times the parameters; the matrix depends on the target shape.
    """

    has_constants = True

    def __init__(self, k: int = 4) -> None:
        self.k = int(k)
        ctrl = tps_control_points(self.k)
        super().__init__(f"tps{self.k}" if self.k != 4 else "tps", 2 * len(ctrl),
                         identity=lambda init_scale=1.0: list(init_scale * np.concatenate([ctrl[:, 0], ctrl[:, 1]])),
                         grid=self._tps_grid)

    def constants(self, target_shape: Shape) -> Dict[str, np.ndarray]:
        return {"tps_matrix": tps_grid_matrix(self.k, target_shape)}

    @staticmethod
    def _tps_grid(params: Tensor, target_shape: Shape, tps_matrix: Optional[Tensor] = None) -> Tensor:
        if tps_matrix is None:
            raise StnGluonError("the thin-plate spline's grid needs its tps_matrix")
        return tps_grid(params, tps_matrix, target_shape)


TRANSFORMS: Dict[str, Transform] = {  # the named families; get_transform also makes tps<k>
    "affine": Transform(
        "affine", 6,
        identity=lambda init_scale=1.0: [init_scale, 0.0, 0.0, 0.0, init_scale, 0.0],
        to_affine=lambda p: p),
    "attention": Transform(
        "attention", 3,
        identity=lambda init_scale=1.0: [init_scale, 0.0, 0.0],
        to_affine=attention_to_affine),
    "window": Transform(
        "window", 3,
        identity=lambda init_scale=1.0: [_window_logit(init_scale), 0.0, 0.0],
        to_affine=window_to_affine),
    "projective": Transform(
        "projective", 8,
        identity=lambda init_scale=1.0: [init_scale, 0.0, 0.0, 0.0, init_scale, 0.0, 0.0, 0.0],
        grid=homography_grid),
    "tps": ThinPlateSpline(4),
}


def get_transform(name: str) -> "Transform":
    """Look up a :class:`Transform` by name: ``affine``, ``attention``, ``window``, ``projective``,
    ``tps`` (4x4 control points) or ``tps<k>`` (k x k, e.g. ``tps3``)."""
    if name in TRANSFORMS:
        return TRANSFORMS[name]
    if isinstance(name, str) and name.startswith("tps") and name[3:].isdigit() and 2 <= int(name[3:]) <= 16:
        return ThinPlateSpline(int(name[3:]))
    raise StnGluonError(
        f"unknown transform {name!r}; choose one of {', '.join(TRANSFORMS)} (or tps<k>, k x k control points)")
