"""Classifiers with a spatial transformer in front.

The classes take every architecture choice as an argument; their defaults are
the reference tutorial's (dropout 0.5, zero padding, localization net at the
full learning rate). The networks ``stn-gluon train`` trains are built from a
recipe (:func:`stn_gluon.train.recipes.build_net`) or by name
(:func:`stn_gluon.nn.zoo.get_model`).
"""
import json
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

from .blocks import (IDSIALocalization, SaliencyLocalization, SpatialTransformer, check_input_size,
                     check_pooled_size, multiscale_pooling)
from .._runtime.compat import import_gluoncv
from .._runtime.errors import StnGluonError
from .ops import Tensor

__all__ = ["LeNetBody", "STNClassifier", "STNNet", "IDSIANet", "STNIDSIANet", "stn_backbone", "gluoncv_backbone",
           "multiply_adds", "IDSIA_CHANNELS", "IDSIA_KERNELS", "IDSIA_HIDDEN"]

#: :class:`IDSIANet`'s layers: three convolutions (7x7x100, 5x5x150, 5x5x250), then dense 300 (the symbol builds
#: the same, with the default ``dense_bn``).
IDSIA_CHANNELS = (100, 150, 250)
IDSIA_KERNELS = (7, 5, 5)
IDSIA_HIDDEN = 300


class LeNetBody(nn.HybridSequential):
    """The LeNet-style classifier of the reference STN tutorials.

    Conv 10@5x5 -> max-pool 2 -> ReLU -> Conv 20@5x5 -> channel Dropout ->
    max-pool 2 -> ReLU -> Dense 50 -> ReLU -> Dropout -> Dense ``num_classes``.
    Input ``(N, C, 28, 28)`` (any size >= 12 works); output logits ``(N, num_classes)``.
    """

    def __init__(self, num_classes: int = 10, dropout: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        with self.name_scope():
            self.add(nn.Conv2D(10, 5), nn.MaxPool2D(2, 2), nn.Activation("relu"),
                     nn.Conv2D(20, 5), nn.Dropout(dropout, axes=(2, 3)),
                     nn.MaxPool2D(2, 2), nn.Activation("relu"),
                     nn.Flatten(), nn.Dense(50, activation="relu"), nn.Dropout(dropout),
                     nn.Dense(num_classes))


class STNClassifier(nn.HybridBlock):
    """Any Gluon classifier with a :class:`SpatialTransformer` in front.

    ``classifier`` maps ``(N, C, H_out, W_out)`` to logits ``(N, K)``; ``stn``
    maps the input ``(N, C, H, W)`` to ``(N, C, H_out, W_out)`` (``None``: no
    STN, the baseline; its input is area-averaged to ``(H_out, W_out)`` first
    when a subclass sets ``_resize``). Output: logits ``(N, K)``, or
    ``(logits, theta)`` with ``return_theta=True`` (theta ``(N, 6)``; the
    identity when there is no STN).
    """

    def __init__(self, classifier: Optional[nn.HybridBlock] = None, stn: Optional[SpatialTransformer] = None,
                 return_theta: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.return_theta = bool(return_theta)
        self.stn: Optional[SpatialTransformer] = None
        self.classifier: Any = None
        self._resize: Optional[Tuple[int, ...]] = None  # the baseline's (H_out, W_out), when not the input's
        if classifier is not None:
            self._set_children(classifier, stn)

    def _set_children(self, classifier: nn.HybridBlock, stn: Optional[SpatialTransformer]) -> None:
        self.classifier = classifier
        if stn is not None:
            stn.return_theta = True
        self.stn = stn

    def hybrid_forward(self, F: Any, x: Tensor) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        if self._resize is not None:
            x = F.contrib.AdaptiveAvgPooling2D(x, output_size=self._resize)
        if self.stn is None:
            logits = self.classifier(x)
            if not self.return_theta:
                return logits
            one = F.ones_like(F.slice_axis(F.flatten(x), axis=1, begin=0, end=1))
            zero = F.zeros_like(one)
            return logits, F.concat(one, zero, zero, zero, one, zero, dim=1)
        warped, theta = self.stn(x)
        logits = self.classifier(warped)
        return (logits, theta) if self.return_theta else logits


class STNNet(STNClassifier):
    """The reference MNIST classifier: :class:`LeNetBody` behind a :class:`SpatialTransformer`.

    Input ``(N, C, H, W)`` normalised images (MNIST: ``(N, 1, 28, 28)``);
    output logits ``(N, num_classes)`` (and theta with ``return_theta=True``,
    see :class:`SpatialTransformer`). ``stn=False`` gives the same net without
    the STN, the baseline; if its ``target_shape`` is smaller than the input,
    the input is area-averaged down to it (``AdaptiveAvgPooling2D``: "the
    whole canvas downsampled"). ``transform``, ``target_shape``,
    ``init_scale`` and ``loc_lr_mult`` go to the :class:`SpatialTransformer`;
    ``loc_pool`` average-pools the localization net's view of the input (see
    :class:`LocalizationNet`); ``supersample`` anti-aliases the sampler (see
    :class:`SpatialTransformer`); ``target_shape`` defaults to
    ``input_shape[1:]``; ``fill`` is what the STN shows outside the input.
    ``localization``: ``"conv"`` (:class:`LocalizationNet`) or ``"saliency"``
    (:class:`SaliencyLocalization`, attention and affine: finds the object by a
    soft-argmax over a convolutional score map; ``brightness_prior``: see
    that class). ``config`` holds the arguments that rebuild the same architecture.
    """

    def __init__(self, num_classes: int = 10, stn: bool = True, input_shape: Sequence[int] = (1, 28, 28),
                 transform: str = "affine", target_shape: Optional[Sequence[int]] = None, init_scale: float = 1.0,
                 loc_lr_mult: float = 1.0, dropout: float = 0.5, return_theta: bool = False, fill: float = 0.0,
                 loc_pool: int = 1, supersample: int = 1, localization: str = "conv",
                 brightness_prior: float = 0.0, **kwargs: Any) -> None:
        if len(input_shape) != 3:
            raise StnGluonError(f"input_shape must be (C, H, W), got {input_shape!r}")
        target_shape = tuple(int(v) for v in (target_shape or input_shape[1:]))
        self.config = dict(num_classes=int(num_classes), stn=bool(stn),
                           input_shape=[int(v) for v in input_shape], transform=transform,
                           target_shape=list(target_shape), init_scale=float(init_scale),
                           dropout=float(dropout), fill=float(fill), loc_pool=int(loc_pool),
                           supersample=int(supersample), localization=localization,
                           brightness_prior=float(brightness_prior))
        super().__init__(return_theta=return_theta, **kwargs)
        if not stn and target_shape != tuple(input_shape[1:]):
            self._resize = target_shape
        with self.name_scope():
            body = LeNetBody(num_classes, dropout=dropout, prefix="body_")
            transformer = None
            if stn:
                loc = _localization(localization, transform, input_shape, loc_pool, init_scale, brightness_prior,
                                    prefix="stn_loc_")
                transformer = SpatialTransformer(target_shape, transform, init_scale=init_scale, localization=loc,
                                                 loc_pool=loc_pool, supersample=supersample,
                                                 loc_lr_mult=loc_lr_mult, fill=fill, prefix="stn_")
        self._set_children(body, transformer)


class IDSIANet(nn.HybridBlock):
    """The IDSIA traffic-sign network (Ciresan et al.) with multi-scale features, as the GTSRB STN work uses it.

    Three stages, each Conv (7x7x100, 5x5x150, 5x5x250 by default; 'same'
    padding, no bias) -> BatchNorm -> ReLU -> max-pool 2 -> Dropout; the
    multi-scale features: the three stages' outputs max-pooled to the last
    one's size (fixed kernels from ``input_shape``: it hybridizes and exports
    as it is) and concatenated; then Dense ``hidden`` -> BatchNorm -> ReLU ->
    Dropout -> Dense ``num_classes``. Input ``(N, C, H, W)`` normalised,
    ``(C, H, W)`` = ``input_shape`` (any C, H and W >= 8); output logits
    ``(N, num_classes)``. At 3x32x32 the convolutions cost 171 M
    multiply-adds per image (:func:`multiply_adds`). BatchNorm's scale and
    shift get no weight decay.

    dense_bn: the BatchNorm after Dense ``hidden`` (``False``: the published
    Dense -> ReLU, with a bias). Its 8,000 inputs at 3x32x32 are all >= 0
    (maxima of ReLUs), so one SGD step moves every unit's pre-activation the
    same way: measured on the synthetic signs (batch 64, momentum 0.9), all
    300 units were dead (0 alive on 256 images) after 30 steps at lr 0.05,
    4 of 300 after 60 at lr 0.02, and the loss sat at ln(43); with the
    BatchNorm 292 of 300 lived at lr 0.05 and the loss fell.
    """

    def __init__(self, num_classes: int = 43, input_shape: Sequence[int] = (3, 32, 32),
                 channels: Sequence[int] = IDSIA_CHANNELS, kernels: Sequence[int] = IDSIA_KERNELS,
                 hidden: int = IDSIA_HIDDEN, dropout: float = 0.3, dense_bn: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if len(input_shape) != 3:
            raise StnGluonError(f"input_shape must be (C, H, W), got {input_shape!r}")
        self.input_size = tuple(int(v) for v in input_shape[1:])
        self.sizes = check_pooled_size(self.input_size, len(channels), "IDSIANet")
        cin = int(input_shape[0])
        with self.name_scope():
            self.stages = nn.HybridSequential(prefix="")
            for i, (c, k) in enumerate(zip(channels, kernels)):
                self.stages.add(_conv_stage(cin, c, k, dropout, prefix=f"stage{i}_"))
                cin = c
            h, w = self.sizes[-1]
            self.dense = nn.Dense(hidden, in_units=sum(channels) * h * w, use_bias=not dense_bn, prefix="dense0_")
            self.dense_bn = _no_decay(nn.BatchNorm(in_channels=hidden, prefix="dense0_bn_")) if dense_bn else None
            self.dropout = nn.Dropout(dropout)
            self.output = nn.Dense(num_classes, in_units=hidden, prefix="output_")

    def forward(self, x: Tensor, *args: Any) -> Tensor:
        check_input_size(x, self.input_size, "IDSIANet")
        return super().forward(x, *args)

    def hybrid_forward(self, F: Any, x: Tensor) -> Tensor:
        stages = []
        for stage in self.stages:
            x = stage(x)
            stages.append(x)
        hidden = self.dense(multiscale_pooling(F, stages, self.sizes))
        if self.dense_bn is not None:
            hidden = self.dense_bn(hidden)
        return self.output(self.dropout(F.relu(hidden)))


def _conv_stage(in_channels: int, channels: int, kernel: int, dropout: float, prefix: str) -> nn.HybridSequential:
    """Conv ``channels``@``kernel`` 'same' (no bias) -> BatchNorm -> ReLU -> max-pool 2 -> Dropout."""
    stage = nn.HybridSequential(prefix=prefix)
    with stage.name_scope():
        stage.add(nn.Conv2D(channels, kernel, padding=kernel // 2, use_bias=False, in_channels=in_channels,
                            prefix="conv_"),
                  _no_decay(nn.BatchNorm(in_channels=channels, prefix="bn_")), nn.Activation("relu"),
                  nn.MaxPool2D(2, 2), nn.Dropout(dropout))
    return stage


def _no_decay(bn: nn.BatchNorm) -> nn.BatchNorm:
    """``bn`` with no weight decay on its scale and shift (decay would only fight the normalisation)."""
    bn.collect_params().setattr("wd_mult", 0.0)
    return bn


class STNIDSIANet(STNClassifier):
    """:class:`IDSIANet` behind a :class:`SpatialTransformer` with :class:`IDSIALocalization` (the GTSRB STN).

    Input ``(N, C, H, W)`` normalised (``input_shape`` = ``(C, H, W)``, H and
    W >= 8); output logits ``(N, num_classes)`` (and theta with
    ``return_theta=True``). The STN starts at the identity (scaled by
    ``init_scale``), resamples to ``target_shape`` (default: the input's
    size), shows ``fill`` outside the image and learns at ``loc_lr_mult``
    times the learning rate; ``transform`` is any of
    :func:`~stn_gluon.nn.ops.get_transform`'s. ``stn=False`` gives
    :class:`IDSIANet` alone (the baseline; its input area-averaged to
    ``target_shape`` when that differs). Parameters: ``body_*`` (the IDSIA
    net), ``stn_loc_*`` and ``stn_regressor_*``. ``config`` holds the
    arguments that rebuild the same architecture.
    """

    def __init__(self, num_classes: int = 43, stn: bool = True, input_shape: Sequence[int] = (3, 32, 32),
                 transform: str = "affine", target_shape: Optional[Sequence[int]] = None, init_scale: float = 1.0,
                 loc_lr_mult: float = 1.0, dropout: float = 0.3, return_theta: bool = False, fill: float = 0.0,
                 supersample: int = 1, **kwargs: Any) -> None:
        if len(input_shape) != 3:
            raise StnGluonError(f"input_shape must be (C, H, W), got {input_shape!r}")
        target = tuple(int(v) for v in (target_shape or input_shape[1:]))
        self.config = dict(num_classes=int(num_classes), stn=bool(stn), input_shape=[int(v) for v in input_shape],
                           transform=transform, target_shape=list(target), init_scale=float(init_scale),
                           dropout=float(dropout), fill=float(fill), supersample=int(supersample))
        super().__init__(return_theta=return_theta, **kwargs)
        self.input_size = tuple(int(v) for v in input_shape[1:])
        if not stn and target != self.input_size:
            self._resize = target
        with self.name_scope():
            body = IDSIANet(num_classes, (input_shape[0],) + target, dropout=dropout, prefix="body_")
            transformer = None
            if stn:
                loc = IDSIALocalization(self.input_size, in_channels=int(input_shape[0]), prefix="stn_loc_")
                transformer = SpatialTransformer(target, transform, localization=loc, init_scale=init_scale,
                                                 loc_lr_mult=loc_lr_mult, fill=fill, supersample=supersample,
                                                 prefix="stn_")
        self._set_children(body, transformer)

    def forward(self, x: Tensor, *args: Any) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        check_input_size(x, self.input_size, type(self).__name__)
        return super().forward(x, *args)


def multiply_adds(net: nn.HybridBlock, input_shape: Sequence[int],
                  ops: Sequence[str] = ("Convolution",)) -> Dict[str, int]:
    """Multiply-adds per image of each ``ops`` node of ``net`` (``Convolution``, ``FullyConnected``): ``{node: count}``.

    Read from the block's graph at input ``(1,) + input_shape`` (``(C, H, W)``):
    a node costs its output's size times its weight's fan-in (a convolution
    ``H_out W_out C_out (C_in / groups) k_h k_w``, a dense layer its weight's size).
    """
    out = net(mx.sym.var("data"))
    sym = mx.sym.Group(list(out)) if isinstance(out, (tuple, list)) else out
    internals = sym.get_internals()
    _, out_shapes, _ = internals.infer_shape(data=(1,) + tuple(int(v) for v in input_shape))
    shapes = dict(zip(internals.list_outputs(), out_shapes))
    nodes = json.loads(sym.tojson())["nodes"]
    counts: Dict[str, int] = {}
    for node in nodes:
        if node["op"] in ops:
            weight = shapes[nodes[node["inputs"][1][0]]["name"]]
            counts[node["name"]] = int(np.prod(shapes[node["name"] + "_output"][1:]) * np.prod(weight[1:]))
    return counts


def stn_backbone(name: str, num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32),
                 transform: str = "affine", target_shape: Optional[Sequence[int]] = None, loc_lr_mult: float = 1.0,
                 init_scale: float = 1.0, fill: float = 0.0, supersample: int = 1, **kwargs: Any) -> STNClassifier:
    """A gluoncv model-zoo backbone (e.g. ``cifar_resnet20_v1``) behind a SpatialTransformer.

    Input ``(N, C, H, W)``; the STN resamples it to ``target_shape`` (default
    ``input_shape[1:]``; ``supersample`` k x k points per output pixel) before the backbone.
    Output logits ``(N, num_classes)``.
    """
    target_shape = tuple(target_shape or input_shape[1:])
    net = STNClassifier(**kwargs)
    with net.name_scope():
        stn = SpatialTransformer(target_shape, transform, init_scale=init_scale, loc_lr_mult=loc_lr_mult,
                                 fill=fill, supersample=supersample, prefix="stn_")
    net._set_children(gluoncv_backbone(name, num_classes, prefix="backbone_"), stn)
    return net


def gluoncv_backbone(name: str, num_classes: int = 10, **kwargs: Any) -> nn.HybridBlock:
    """A gluoncv model-zoo network by name (untrained), ``classes=num_classes``."""
    try:
        return import_gluoncv().model_zoo.get_model(name, classes=num_classes, pretrained=False, **kwargs)
    except ValueError as err:
        raise StnGluonError(f"unknown model {name!r}: {str(err).splitlines()[0]}") from None


def _localization(kind: Optional[str], transform: str, input_shape: Sequence[int], pool: int, init_scale: float,
                  brightness_prior: float, prefix: str) -> Optional[SaliencyLocalization]:
    """The localization net named by ``kind`` (``None`` lets SpatialTransformer build the default)."""
    if kind in (None, "conv"):
        if brightness_prior:
            raise StnGluonError("brightness_prior needs the saliency localization")
        return None
    if kind == "saliency":
        return SaliencyLocalization(input_shape[1:], pool=pool, init_scale=init_scale,
                                    brightness_prior=brightness_prior, transform=transform, prefix=prefix)
    raise StnGluonError(f"unknown localization {kind!r}; choose conv or saliency")
