"""Gluon blocks: the localization networks and the :class:`SpatialTransformer`."""
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

from .._runtime.errors import StnGluonError
from .ops import Shape, Tensor, check_target_shape, get_transform

__all__ = ["LocalizationNet", "IDSIALocalization", "SaliencyLocalization", "SpatialTransformer", "pool_to",
           "multiscale_pooling", "halved_sizes", "check_pooled_size", "check_input_size", "IDSIA_LOC_CHANNELS",
           "IDSIA_LOC_KERNEL", "IDSIA_LOC_HIDDEN"]

#: :class:`IDSIALocalization`'s layers: two convolutions of 20 5x5 filters, then dense 100 (the symbol builds the same).
IDSIA_LOC_CHANNELS = (20, 20)
IDSIA_LOC_KERNEL = 5
IDSIA_LOC_HIDDEN = 100


class LocalizationNet(nn.HybridSequential):
    """The reference localization network (Jaderberg et al.; PyTorch STN tutorial).

    Conv 8@7x7 -> max-pool 2 -> ReLU -> Conv 10@5x5 -> max-pool 2 -> ReLU ->
    Dense ``hidden`` -> ReLU, after an optional ``pool`` x ``pool`` average
    pooling (for big canvases: the net finds the digit on a coarse view while
    the sampler reads the full-resolution input). Input ``(N, C, H, W)`` with
    H, W >= 22 * pool; output ``(N, hidden)`` features. The transform
    regressor is added by :class:`SpatialTransformer`.
    """

    def __init__(self, channels: Sequence[int] = (8, 10), kernels: Sequence[int] = (7, 5), hidden: int = 32,
                 pool: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        with self.name_scope():
            if int(pool) > 1:
                self.add(nn.AvgPool2D(int(pool), int(pool)))
            for c, k in zip(channels, kernels):
                self.add(nn.Conv2D(c, k), nn.MaxPool2D(2, 2), nn.Activation("relu"))
            self.add(nn.Flatten(), nn.Dense(hidden, activation="relu"))


def pool_to(size: int, target: int) -> Tuple[int, int]:
    """``(kernel, stride)`` of a pooling that maps ``size`` pixels to exactly ``target`` (``size >= target >= 1``).

    stride = ``size // target``, kernel = ``size - (target - 1) * stride`` (>= stride): the windows cover the
    whole input. A fixed kernel, unlike adaptive pooling, so the graph hybridizes and exports to ONNX as it is.
    """
    if not 1 <= target <= size:
        raise StnGluonError(f"cannot pool {size} pixels to {target}")
    stride = size // target
    return size - (target - 1) * stride, stride


def halved_sizes(size: Sequence[int], times: int) -> List[Tuple[int, int]]:
    """The ``(H, W)`` after each of ``times`` max-poolings by 2 (floor), starting from ``size``."""
    h, w = (int(v) for v in size)
    out = []
    for _ in range(times):
        h, w = h // 2, w // 2
        out.append((h, w))
    return out


def multiscale_pooling(F: Any, stages: Sequence[Tensor], sizes: Sequence[Tuple[int, int]]) -> Tensor:
    """The multi-scale features: every stage's map max-pooled to the last one's size, concatenated on channels.

    stages: ``(N, C_i, H_i, W_i)`` maps whose sizes are ``sizes``; output ``(N, sum C_i, H_last, W_last)``.
    """
    target = sizes[-1]
    pooled = []
    for x, size in zip(stages, sizes):
        if tuple(size) != tuple(target):
            (kh, sh), (kw, sw) = pool_to(size[0], target[0]), pool_to(size[1], target[1])
            x = F.Pooling(x, kernel=(kh, kw), stride=(sh, sw), pool_type="max")
        pooled.append(x)
    return F.concat(*pooled, dim=1)


def check_pooled_size(input_size: Sequence[int], pools: int, what: str) -> List[Tuple[int, int]]:
    """:func:`halved_sizes`, refusing an input too small for ``pools`` poolings by 2 (``what`` names the net)."""
    sizes = halved_sizes(input_size, pools)
    if min(sizes[-1]) < 1:
        raise StnGluonError(f"{what} needs an input of at least {2 ** pools}x{2 ** pools} pixels, "
                            f"got {tuple(int(v) for v in input_size)}")
    return sizes


def check_input_size(x: Tensor, size: Tuple[int, ...], what: str) -> None:
    """Refuse (one line) an NDArray input ``(N, C, H, W)`` whose ``(H, W)`` is not ``size`` (symbols pass)."""
    if isinstance(x, mx.nd.NDArray) and (x.ndim != 4 or tuple(x.shape[2:]) != tuple(size)):
        raise StnGluonError(f"{what} was built for inputs (N, C, {size[0]}, {size[1]}), got shape {x.shape}")


class IDSIALocalization(nn.HybridBlock):
    """The localization net of the traffic-sign STN in front of the IDSIA network (GTSRB).

    Max-pool 2 of the input -> (Conv ``channels[i]``@``kernel`` x ``kernel``
    'same' -> ReLU -> max-pool 2) for each of ``channels`` -> multi-scale
    features (every conv stage's map max-pooled to the last one's size and
    concatenated) -> Dense ``hidden`` -> ReLU. Input ``(N, C, H, W)`` with
    ``(H, W)`` = ``input_size`` (at least 8x8 for two stages); output
    ``(N, hidden)`` features. :class:`SpatialTransformer` appends the
    identity-initialised regressor. in_channels: C (0: taken from the first
    input).
    """

    def __init__(self, input_size: Sequence[int], in_channels: int = 0, channels: Sequence[int] = IDSIA_LOC_CHANNELS,
                 kernel: int = IDSIA_LOC_KERNEL, hidden: int = IDSIA_LOC_HIDDEN, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.input_size = tuple(int(v) for v in input_size)
        self.sizes = check_pooled_size(self.input_size, len(channels) + 1, "IDSIALocalization")[1:]
        cin = int(in_channels)
        with self.name_scope():
            self.convs = nn.HybridSequential(prefix="")
            for i, c in enumerate(channels):
                self.convs.add(nn.Conv2D(c, kernel, padding=kernel // 2, in_channels=cin, prefix=f"conv{i}_"))
                cin = c
            h, w = self.sizes[-1]
            self.dense = nn.Dense(hidden, in_units=sum(channels) * h * w, prefix="dense0_")

    def forward(self, x: Tensor, *args: Any) -> Tensor:
        check_input_size(x, self.input_size, "IDSIALocalization")
        return super().forward(x, *args)

    def hybrid_forward(self, F: Any, x: Tensor) -> Tensor:
        x = F.Pooling(x, kernel=(2, 2), stride=(2, 2), pool_type="max")
        stages = []
        for conv in self.convs:
            x = F.Pooling(F.relu(conv(x)), kernel=(2, 2), stride=(2, 2), pool_type="max")
            stages.append(x)
        return F.relu(self.dense(multiscale_pooling(F, stages, self.sizes)))


class _ChannelMean(mx.init.Initializer):
    """A ``(1, C, 1, 1)`` weight of ``scale / C``: ``scale`` times the mean over channels."""

    def __init__(self, scale: float) -> None:
        super().__init__(scale=scale)
        self.scale = scale

    def _init_weight(self, _: Any, arr: mx.nd.NDArray) -> None:
        arr[:] = self.scale / arr.shape[1]


class _ShapeDependentConstant(mx.init.Initializer):
    """Initialises a grid constant whose shape is known only at the first forward: ``value()`` gives it."""

    def __init__(self, value: Callable[[], np.ndarray]) -> None:
        super().__init__()
        self.value = value

    def _init_weight(self, _: Any, arr: mx.nd.NDArray) -> None:
        arr[:] = self.value()


class SaliencyLocalization(nn.HybridBlock):
    """Attention (or affine) parameters from a saliency map: where the object is, and how to frame it.

    Fully convolutional: (after an optional ``pool`` x ``pool`` average
    pooling) Conv 16@3x3 -> ReLU -> Conv 16@3x3 -> ReLU -> max-pool 2 ->
    Conv 32@3x3 -> ReLU, then a 1x1 convolution scores every cell of the
    ``(H / (2 pool), W / (2 pool))`` map. The translation is the soft-argmax
    of the scores (the score-weighted mean of the cells' centres, in
    ``[-1, 1]``: always on the image); the rest is a Dense layer on the
    globally averaged features. ``transform="attention"``: output ``(N, 3)``
    = ``(s, t_x, t_y)``, the scale from that layer. ``transform="affine"``:
    output ``(N, 6)`` = ``(a, b, t_x, c, d, t_y)``, the linear part
    ``(a, b, c, d)`` from that layer. The identity at initialisation (flat
    scores: the centre; scale ``init_scale``). A filter that learns what the
    object looks like finds it anywhere on the canvas, where a dense
    regressor must learn every position on its own. input_size: ``(H, W)``
    of the input.

    brightness_prior: ``beta >= 0``. The scores start as ``beta`` times each
    cell's mean intensity (of the normalised input, averaged over channels),
    plus the learned scores (zero at first); ``beta`` itself is trained. With
    0 (default) the scores start flat. On a big noisy canvas the
    classification loss barely depends on the window's centre while the
    window is the whole canvas, so flat scores never start to move (measured
    on ``noisy128``); a prior that leans toward the ink gives the centre, and
    then the zoom, a gradient to learn from. It moves the initial centre,
    not the initial scale.
    """

    #: the transforms whose parameters this block can output
    TRANSFORMS = ("attention", "affine")

    def __init__(self, input_size: Shape, pool: int = 1, channels: Sequence[int] = (16, 16, 32),
                 init_scale: float = 1.0, brightness_prior: float = 0.0, transform: str = "attention",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if transform not in self.TRANSFORMS:
            raise StnGluonError(f"SaliencyLocalization outputs {' or '.join(self.TRANSFORMS)} parameters, "
                                f"not {transform}")
        #: the transform whose parameters this block outputs (no regressor after it)
        self.outputs_params = transform
        self.pool = int(pool)
        if not brightness_prior >= 0:
            raise StnGluonError(f"brightness_prior must be >= 0, got {brightness_prior!r}")
        self.brightness_prior = float(brightness_prior)
        h, w = (int(v) // (2 * self.pool) for v in input_size)
        if h < 1 or w < 1:
            raise StnGluonError(f"SaliencyLocalization: input {tuple(input_size)} is too small for pool={pool}")
        ys, xs = np.meshgrid(np.linspace(-1, 1, h) if h > 1 else [0.0], np.linspace(-1, 1, w) if w > 1 else [0.0],
                             indexing="ij")
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            with self.features.name_scope():
                if self.pool > 1:
                    self.features.add(nn.AvgPool2D(self.pool, self.pool))
                self.features.add(nn.Conv2D(channels[0], 3, padding=1, activation="relu"),
                                  nn.Conv2D(channels[1], 3, padding=1, activation="relu"),
                                  nn.MaxPool2D(2, 2),
                                  nn.Conv2D(channels[2], 3, padding=1, activation="relu"))
            self.score = nn.Conv2D(1, 1, weight_initializer=mx.init.Zero(), prefix="score_")
            # beta / C per channel: beta times the channels' mean intensity of each cell
            self.brightness = None if self.brightness_prior == 0 else nn.Conv2D(
                1, 1, use_bias=False, weight_initializer=_ChannelMean(self.brightness_prior), prefix="brightness_")
            # attention: the scale s; affine: the linear part (a, b, c, d), starting at s times the identity
            start = [init_scale] if transform == "attention" else [init_scale, 0.0, 0.0, init_scale]
            self.scale = nn.Dense(len(start), weight_initializer=mx.init.Zero(),
                                  bias_initializer=mx.init.Constant(np.array(start, dtype=np.float32)),
                                  prefix="scale_" if transform == "attention" else "linear_")
            # centres of the map's cells, (2, h * w): x row then y row
            self.cell_centres = self.params.get_constant(
                "cell_centres", np.stack([xs.ravel(), ys.ravel()]).astype(np.float32))

    def hybrid_forward(self, F: Any, x: Tensor, cell_centres: Tensor) -> Tensor:
        feats = self.features(x)
        scores = self.score(feats)
        if self.brightness is not None:  # each cell's mean intensity, on the score map's grid
            cell = 2 * self.pool
            scores = scores + self.brightness(F.Pooling(x, kernel=(cell, cell), stride=(cell, cell), pool_type="avg"))
        weights = F.softmax(F.flatten(scores), axis=1)  # (N, h * w)
        shift = F.FullyConnected(weights, weight=cell_centres, no_bias=True, num_hidden=2)  # (N, 2)
        scale = self.scale(F.Pooling(feats, kernel=(1, 1), global_pool=True, pool_type="avg"))
        if self.outputs_params == "attention":
            return F.concat(scale, shift, dim=1)
        return F.concat(F.slice_axis(scale, axis=1, begin=0, end=2), F.slice_axis(shift, axis=1, begin=0, end=1),
                        F.slice_axis(scale, axis=1, begin=2, end=4), F.slice_axis(shift, axis=1, begin=1, end=2),
                        dim=1)


class SpatialTransformer(nn.HybridBlock):
    """Spatial transformer: localization net -> grid generator -> bilinear sampler.

    Input ``(N, C, H, W)`` float. Output ``(N, C, H_out, W_out)``, or
    ``(output, theta)`` with ``return_theta=True``. For ``affine`` and
    ``attention``, ``theta`` is ``(N, 6)``, the affine matrix
    ``[[a, b, t_x], [c, d, t_y]]`` row-major that maps output to input
    coordinates in ``[-1, 1]`` (align_corners=True; see :mod:`stn_gluon.nn.ops`);
    for ``projective`` the homography ``(N, 8)``; for ``tps`` the control
    points' source positions ``(N, 2K)``. Samples outside the input are zero
    (or ``fill``).

    Parameters
    ----------
    target_shape : (int, int) or None
        ``(H_out, W_out)``; may differ from the input (e.g. 128x128 in, 28x28
        out). ``None`` takes the input's size at the first call with an
        NDArray (imperative or hybridized; for ``tps`` the grid matrix is
        built then, and saved and exported with the weights like any other);
        an input of another size after that is refused.
    transform : str
        ``"affine"`` (6 parameters), ``"attention"`` (3: scale s and
        translation t_x, t_y; theta = [[s, 0, t_x], [0, s, t_y]]),
        ``"window"`` (the same 3, bounded: s = 2 sigmoid(a) in (0, 2), t =
        tanh(b) in (-1, 1), so the window's centre never leaves the image),
        ``"projective"`` (8: a homography) or ``"tps"`` (a thin-plate spline
        over 4x4 control points, 32 parameters; ``"tps<k>"`` for k x k). The
        grid of every family is built from MXNet operators (``GridGenerator``,
        ``FullyConnected`` with a constant matrix for ``tps``) and sampled
        with ``BilinearSampler``; every family exports to ONNX.
    localization : HybridBlock or None
        Any block mapping the input to ``(N, features)``; defaults to
        :class:`LocalizationNet`. A Dense regressor to the transform's
        parameters is appended, initialised to the identity (zero weights,
        identity bias).
    init_scale : float
        Initial zoom of the identity: theta starts at ``init_scale`` on the
        diagonal (1.0 = identity; 0.5 starts zoomed 2x on the centre).
    loc_lr_mult : float
        Learning-rate multiplier of every localization and regressor parameter,
        honoured by ``gluon.Trainer``.
    return_theta : bool
        Also return theta.
    fill : float
        What the output shows where it samples outside the input: 0 (MXNet's
        zero padding) by default; for normalised images, the normalised
        background (MNIST: ``-mean/std``), so that outside looks like background.
    loc_pool : int
        Average pooling in front of the default localization net (see
        :class:`LocalizationNet`), for big inputs.
    supersample : int
        Anti-aliasing: sample ``k x k`` points per output pixel (a grid of
        ``(k H_out, k W_out)``) and average them. Without it, an STN that
        shrinks a big input (128x128 into 28x28) reads one point in every
        ~5x5 pixels, which aliases and gives the localization net little
        gradient to learn from; with ``k`` near the shrink factor its first
        view is the area average. Not an exact identity at ``k > 1`` (each
        output pixel averages a small neighbourhood).
    """

    def __init__(self, target_shape: Optional[Shape] = None, transform: str = "affine",
                 localization: Optional[nn.HybridBlock] = None, init_scale: float = 1.0, loc_lr_mult: float = 1.0,
                 return_theta: bool = False, fill: float = 0.0, loc_pool: int = 1, supersample: int = 1,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fill = float(fill)
        self.transform = get_transform(transform)
        self._target_shape = None if target_shape is None else check_target_shape(target_shape)
        # True: the target shape is the first input's size, and every input must have that size
        self._shape_from_input = self._target_shape is None
        self.supersample = int(supersample)
        if self.supersample < 1:
            raise StnGluonError(f"supersample must be >= 1, got {supersample!r}")
        self.return_theta = bool(return_theta)
        self.init_scale = float(init_scale)
        if not loc_lr_mult >= 0:
            raise StnGluonError(f"loc_lr_mult must be >= 0, got {loc_lr_mult!r}")
        with self.name_scope():
            self.localization = (localization if localization is not None
                                 else LocalizationNet(pool=loc_pool, prefix="loc_"))
            predicts = getattr(self.localization, "outputs_params", None)
            if predicts is not None and predicts != self.transform.name:
                raise StnGluonError(f"{type(self.localization).__name__} outputs {predicts} parameters, "
                                    f"not {self.transform.name}")
            # a localization net that outputs the transform's parameters itself needs no regressor
            self.regressor = None if predicts is not None else nn.Dense(
                self.transform.num_params, weight_initializer=mx.init.Zero(),
                bias_initializer=mx.init.Constant(
                    np.array(self.transform.identity(self.init_scale), dtype=np.float32)),
                prefix="regressor_")
            # constant inputs of the grid (the thin-plate spline's matrix): saved and exported with the weights
            if self._target_shape is not None:
                for key, value in self.transform.constants(self._sampling_shape).items():
                    setattr(self, key, self.params.get_constant(key, value))
            else:  # built at the first forward, once the input gives the target shape (deferred like in_units)
                for key, value in self.transform.constants((2, 2)).items():
                    setattr(self, key, self.params.get(
                        key, shape=(0,) + value.shape[1:], grad_req="null", differentiable=False,
                        allow_deferred_init=True, init=_ShapeDependentConstant(self._constant_value(key))))
        self.loc_lr_mult = loc_lr_mult

    def _constant_value(self, key: str) -> Callable[[], np.ndarray]:
        return lambda: self.transform.constants(self._sampling_shape)[key]

    @property
    def loc_lr_mult(self) -> float:
        """The learning-rate multiplier of all the localization parameters (settable)."""
        return self._loc_lr_mult

    @loc_lr_mult.setter
    def loc_lr_mult(self, value: float) -> None:
        self._loc_lr_mult = float(value)
        self.collect_params().setattr("lr_mult", self._loc_lr_mult)

    @property
    def target_shape(self) -> Optional[Tuple[int, int]]:
        """``(H_out, W_out)``; ``None`` until the first input when it was not given."""
        return self._target_shape

    @property
    def _sampling_shape(self) -> Tuple[int, int]:
        if self._target_shape is None:
            raise StnGluonError("SpatialTransformer has no target_shape yet: give one, or call it on an input first")
        h, w = self._target_shape
        return h * self.supersample, w * self.supersample

    def _take_shape_from(self, x: mx.nd.NDArray) -> None:
        size = tuple(int(v) for v in x.shape[2:])
        if self._target_shape is None:
            self._target_shape = check_target_shape(size)
            for key, value in self.transform.constants(self._sampling_shape).items():
                have = getattr(self, key).shape  # loaded from a file before the first forward: must agree
                if any(d not in (0, want) for d, want in zip(have, value.shape)):
                    raise StnGluonError(f"SpatialTransformer: its {key} {have} was made for another input size "
                                        f"than {size}; give the target_shape it was trained with")
        elif self._shape_from_input and size != self._target_shape:
            raise StnGluonError(f"SpatialTransformer took target_shape {self._target_shape} from its first input "
                                f"and got an input of {size}: give target_shape explicitly to resample inputs "
                                f"of several sizes")

    def forward(self, x: Tensor, *args: Any) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        if isinstance(x, mx.nd.NDArray):
            if x.ndim != 4:
                raise StnGluonError(f"SpatialTransformer input must be (N, C, H, W), got shape {x.shape}")
            self._take_shape_from(x)
        elif self._target_shape is None:
            raise StnGluonError("SpatialTransformer needs target_shape to be built as a symbol")
        return super().forward(x, *args)

    def hybrid_forward(self, F: Any, x: Tensor, **constants: Tensor) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        assert self._target_shape is not None  # forward() set it
        params = self.localization(x)
        # a named node: tools recover theta from it in a graph exported without return_theta
        params = self.regressor(params) if self.regressor is not None else F.identity(params, name="loc_params")
        # The functional core, with named nodes that tools find in an exported graph.
        if self.supersample > 1:  # sample k x k points per output pixel and average them: anti-aliased
            k = self.supersample
            dense = self.transform.warp(x, params, self._sampling_shape, fill=self.fill, **constants)
            out = F.Pooling(dense, kernel=(k, k), stride=(k, k), pool_type="avg", name="warped")
        else:
            out = self.transform.warp(x, params, self._target_shape, fill=self.fill, name="warped", **constants)
        if self.return_theta:
            return out, F.identity(self.transform.theta(params), name="theta")
        return out

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(transform={self.transform.name!r}, "
                f"target_shape={self._target_shape}, loc_lr_mult={self._loc_lr_mult}, fill={self.fill}, "
                f"localization={self.localization.__class__.__name__})")
