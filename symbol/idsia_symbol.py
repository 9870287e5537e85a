"""``get_idsia_symbol``: :class:`stn_gluon.nn.models.STNIDSIANet` (``stn_idsia``, ``idsia``) as one MXNet symbol.

The same layers, parameter names and multi-scale pooling as the Gluon block built by
:func:`stn_gluon.nn.architecture.build_architecture` (prefix ``<model>_``), with ``mx.sym.SpatialTransformer``
as the sampler: weights move between the two unchanged.
"""
from typing import Any, Sequence

import mxnet as mx

from stn_gluon.nn.architecture import Architecture
from stn_gluon.nn.blocks import (IDSIA_LOC_CHANNELS, IDSIA_LOC_HIDDEN, IDSIA_LOC_KERNEL, check_pooled_size,
                                 multiscale_pooling)
from stn_gluon.nn.models import IDSIA_CHANNELS, IDSIA_HIDDEN, IDSIA_KERNELS

from .layers import affine_sampler, batch_norm, conv, dense, max_pool, regressor


def idsia_loc(data: Any, input_size: Sequence[int], lr_mult: float, init_scale: float, prefix: str) -> Any:
    """:class:`~stn_gluon.nn.blocks.IDSIALocalization` and the identity-initialised regressor:
    ``(N, C, H, W)`` -> affine theta ``(N, 6)``; every parameter at ``lr_mult``."""
    loc = prefix + "loc_"
    sizes = check_pooled_size(input_size, len(IDSIA_LOC_CHANNELS) + 1, "IDSIALocalization")[1:]
    x = max_pool(data, loc + "pool_fwd")
    stages = []
    k = IDSIA_LOC_KERNEL
    for i, c in enumerate(IDSIA_LOC_CHANNELS):
        x = mx.sym.relu(conv(x, f"{loc}conv{i}_", c, (k, k), lr_mult, pad=(k // 2, k // 2)))
        x = max_pool(x, f"{loc}pool{i}_fwd")
        stages.append(x)
    x = mx.sym.relu(dense(multiscale_pooling(mx.sym, stages, sizes), loc + "dense0_", IDSIA_LOC_HIDDEN, lr_mult))
    return regressor(x, prefix + "regressor_", [init_scale, 0, 0, 0, init_scale, 0], lr_mult)


def idsia_body(data: Any, input_size: Sequence[int], num_classes: int, dropout: float, prefix: str) -> Any:
    """:class:`~stn_gluon.nn.models.IDSIANet`: ``(N, C, H, W)`` (``(H, W)`` = ``input_size``) -> logits."""
    sizes = check_pooled_size(input_size, len(IDSIA_CHANNELS), "IDSIANet")
    x, stages = data, []
    for i, (c, k) in enumerate(zip(IDSIA_CHANNELS, IDSIA_KERNELS)):
        stage = f"{prefix}stage{i}_"
        x = batch_norm(conv(x, stage + "conv_", c, (k, k), pad=(k // 2, k // 2), no_bias=True), stage + "bn_")
        x = max_pool(mx.sym.relu(x), stage + "pool_fwd")
        x = mx.sym.Dropout(x, p=dropout, name=stage + "dropout_fwd")
        stages.append(x)
    x = dense(multiscale_pooling(mx.sym, stages, sizes), prefix + "dense0_", IDSIA_HIDDEN, no_bias=True)
    x = mx.sym.relu(batch_norm(x, prefix + "dense0_bn_"))
    x = mx.sym.Dropout(x, p=dropout, name=prefix + "dropout_fwd")
    return dense(x, prefix + "output_", num_classes)


def get_idsia_symbol(arch: Architecture) -> Any:
    """The graph of an IDSIA ``arch`` (``stn_idsia``: affine STN; ``idsia``): ``data`` ``(N, C, H, W)`` and
    ``softmax_label`` ``(N,)`` -> ``SoftmaxOutput`` ``(N, num_classes)``. The caller has checked that the
    symbol can express ``arch`` (:func:`~stn_gluon.symbol.unsupported_fields`)."""
    prefix = f"{arch.model}_"
    size = tuple(int(v) for v in arch.input_shape[1:])
    target = tuple(int(v) for v in (arch.target_shape or size))
    data = mx.sym.var("data")
    x = data
    if arch.has_stn:
        theta = idsia_loc(data, size, arch.loc_lr_mult, arch.init_scale, prefix + "stn_")
        x = affine_sampler(data, theta, target, arch.fill, prefix + "stn_")
    elif target != size:
        x = mx.sym.contrib.AdaptiveAvgPooling2D(data, output_size=target, name=prefix + "resize")
    logits = idsia_body(x, target, arch.num_classes, arch.dropout, prefix + "body_")
    return mx.sym.SoftmaxOutput(logits, name="softmax")
