"""The layers both symbolic networks are built from, named as Gluon names its parameters and nodes.

Each helper takes the Gluon layer's full prefix (``stn_idsia_body_stage0_conv_``): the variables are
``<prefix>weight``, ``<prefix>bias``, ... and the node ``<prefix>fwd``, as a Gluon block of that prefix
exports them, so weights move between the two unchanged.
"""
from typing import Any, Dict, Optional, Sequence

import mxnet as mx
import numpy as np


def _lr(lr_mult: Optional[float]) -> Dict[str, str]:
    return {"__lr_mult__": str(lr_mult)} if lr_mult is not None else {}


def conv(data: Any, name: str, num_filter: int, kernel: Sequence[int], lr_mult: Optional[float] = None,
         pad: Sequence[int] = (0, 0), no_bias: bool = False) -> Any:
    """Convolution (Gluon's ``Conv2D``); its bias, if any, without weight decay (as the trainers set it)."""
    weight = mx.sym.var(name + "weight", attr=_lr(lr_mult) or None)
    if no_bias:
        return mx.sym.Convolution(data, weight=weight, num_filter=num_filter, kernel=tuple(kernel), pad=tuple(pad),
                                  no_bias=True, name=name + "fwd")
    bias = mx.sym.var(name + "bias", attr=dict(_lr(lr_mult), __wd_mult__="0.0"))
    return mx.sym.Convolution(data, weight=weight, bias=bias, num_filter=num_filter, kernel=tuple(kernel),
                              pad=tuple(pad), name=name + "fwd")


def dense(data: Any, name: str, num_hidden: int, lr_mult: Optional[float] = None, weight_init: Any = None,
          bias_init: Any = None, no_bias: bool = False) -> Any:
    """FullyConnected on the flattened input (Gluon's ``Dense``); its bias, if any, without weight decay."""
    attr = _lr(lr_mult)
    weight = mx.sym.var(name + "weight", attr=dict(attr), init=weight_init)
    if no_bias:
        return mx.sym.FullyConnected(data, weight=weight, num_hidden=num_hidden, no_bias=True, flatten=True,
                                     name=name + "fwd")
    bias = mx.sym.var(name + "bias", attr=dict(attr, __wd_mult__="0.0"), init=bias_init)
    return mx.sym.FullyConnected(data, weight=weight, bias=bias, num_hidden=num_hidden, flatten=True,
                                 name=name + "fwd")


def batch_norm(data: Any, name: str) -> Any:
    """Gluon's ``BatchNorm`` defaults (learned scale, eps 1e-5, momentum 0.9); scale and shift without weight
    decay, as :class:`stn_gluon.nn.models.IDSIANet` sets them; running statistics as auxiliary states."""
    no_wd = {"__wd_mult__": "0.0"}
    return mx.sym.BatchNorm(data, gamma=mx.sym.var(name + "gamma", attr=no_wd, init=mx.init.One()),
                            beta=mx.sym.var(name + "beta", attr=no_wd, init=mx.init.Zero()),
                            moving_mean=mx.sym.var(name + "running_mean", init=mx.init.Zero()),
                            moving_var=mx.sym.var(name + "running_var", init=mx.init.One()),
                            eps=1e-5, momentum=0.9, fix_gamma=False, name=name + "fwd")


def max_pool(data: Any, name: str, kernel: Sequence[int] = (2, 2), stride: Sequence[int] = (2, 2)) -> Any:
    return mx.sym.Pooling(data, kernel=tuple(kernel), stride=tuple(stride), pool_type="max", name=name)


def regressor(data: Any, name: str, identity: Sequence[float], lr_mult: Optional[float]) -> Any:
    """The transform's parameters: Dense with zero weights and the identity as bias (``<name>fwd``: tools find
    theta there)."""
    value = np.array(identity, dtype=np.float32)
    return dense(data, name, len(value), lr_mult, weight_init=mx.init.Zero(), bias_init=mx.init.Constant(value))


def affine_sampler(data: Any, theta: Any, target_shape: Sequence[int], fill: float, prefix: str) -> Any:
    """``mx.sym.SpatialTransformer`` reading ``fill`` outside the input (``sample(x - fill) + fill``), its
    output named ``<prefix>warped`` as the Gluon STN's is."""
    kwargs = dict(target_shape=tuple(target_shape), transform_type="affine", sampler_type="bilinear")
    if fill:
        x = mx.sym.SpatialTransformer(data - fill, theta, name=prefix + "sampler", **kwargs)
        return mx.sym.identity(x + fill, name=prefix + "warped")
    return mx.sym.SpatialTransformer(data, theta, name=prefix + "warped", **kwargs)
