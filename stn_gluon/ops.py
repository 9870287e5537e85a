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
* Sampling is bilinear; any part of the 2x2 neighbourhood that falls outside
  the input contributes zero (zero padding), or ``fill`` where a function
  takes it (computed as ``sample(x - fill) + fill``).

Every function takes either NDArrays or Symbols and returns the same kind.
"""
import mxnet as mx

from .errors import StnGluonError

__all__ = [
    "affine_grid", "affine_transform", "attention_to_affine", "bilinear_sample",
    "Transform", "TRANSFORMS", "get_transform",
]


def _F(x):
    return mx.sym if isinstance(x, mx.sym.Symbol) else mx.nd


def _check_target_shape(target_shape):
    try:
        h, w = (int(v) for v in target_shape)
    except (TypeError, ValueError):
        raise StnGluonError(f"target_shape must be two integers (H, W), got {target_shape!r}")
    if h < 2 or w < 2:
        raise StnGluonError(f"target_shape must be at least (2, 2), got {target_shape!r}")
    return h, w


def affine_grid(theta, target_shape):
    """Sampling grid of an affine transform.

    theta: ``(N, 6)`` or ``(N, 2, 3)``, target -> source in normalised coordinates.
    target_shape: ``(H_out, W_out)``.
    Returns the grid ``(N, 2, H_out, W_out)`` with values in normalised
    coordinates (inside ``[-1, 1]`` means inside the input).
    """
    F = _F(theta)
    h, w = _check_target_shape(target_shape)
    return F.GridGenerator(F.reshape(theta, shape=(-1, 6)), transform_type="affine",
                           target_shape=(h, w))


def bilinear_sample(data, grid):
    """Bilinear sampling with zero padding.

    data: ``(N, C, H, W)``; grid: ``(N, 2, H_out, W_out)`` (see module docs).
    Returns ``(N, C, H_out, W_out)``.
    """
    return _F(data).BilinearSampler(data, grid)


def affine_transform(data, theta, target_shape=None, fill=0.0, name=None):
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
    if target_shape is None:
        if isinstance(data, mx.sym.Symbol):
            raise StnGluonError("affine_transform on a Symbol needs an explicit target_shape")
        target_shape = data.shape[2:]
    if not isinstance(data, mx.sym.Symbol):
        if data.ndim != 4:
            raise StnGluonError(f"data must be (N, C, H, W), got shape {data.shape}")
        if theta.size != data.shape[0] * 6:
            raise StnGluonError(
                f"theta must be (N, 6) or (N, 2, 3) with N={data.shape[0]}, got shape {theta.shape}")
    F = _F(data)
    grid = affine_grid(theta, target_shape)
    if fill:
        return F.identity(F.BilinearSampler(data - fill, grid) + fill, name=name)
    return F.BilinearSampler(data, grid, name=name)


def attention_to_affine(params):
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


class Transform:
    """A family of spatial transforms the STN can regress.

    num_params: length of the parameter vector the localization net predicts.
    identity(init_scale): the parameter vector of the identity (or of a
    centred zoom by ``1/init_scale``), used to initialise the regressor bias.
    warp(data, params, target_shape, fill, name): the STN's sampler stage,
    ``(N, C, H, W)`` -> ``(N, C, H_out, W_out)``; for affine families,
    :func:`affine_transform`.
    to_affine(F, params): ``(N, num_params)`` -> ``(N, 6)``, for transforms
    that are affine (``None`` otherwise).
    """

    def __init__(self, name, num_params, identity, to_affine):
        self.name = name
        self.num_params = num_params
        self.identity = identity
        self.to_affine = to_affine

    def warp(self, data, params, target_shape, fill=0.0, name=None):
        return affine_transform(data, self.to_affine(_F(params), params), target_shape, fill=fill, name=name)

    def __repr__(self):
        return f"Transform({self.name!r}, num_params={self.num_params})"


TRANSFORMS = {
    "affine": Transform(
        "affine", 6,
        identity=lambda init_scale=1.0: [init_scale, 0.0, 0.0, 0.0, init_scale, 0.0],
        to_affine=lambda F, p: p),
    "attention": Transform(
        "attention", 3,
        identity=lambda init_scale=1.0: [init_scale, 0.0, 0.0],
        to_affine=lambda F, p: attention_to_affine(p)),
}


def get_transform(name):
    """Look up a :class:`Transform` by name (``affine``, ``attention``)."""
    try:
        return TRANSFORMS[name]
    except KeyError:
        raise StnGluonError(
            f"unknown transform {name!r}; choose one of {', '.join(sorted(TRANSFORMS))}") from None
