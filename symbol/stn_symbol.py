"""``get_loc`` and ``get_symbol``: the STN classifier as an MXNet symbol.

Defaults are the default recipe's (:class:`stn_gluon.nn.architecture.Architecture`):
localization net at 0.1x the learning rate, dropout 0.3, the normalised black
shown outside the image. :func:`get_symbol_for` builds the graph of an
:class:`~stn_gluon.architecture.Architecture`, the same network the Gluon
trainer builds, or refuses with the fields a symbol cannot express.
"""
from typing import Any, List, Sequence

import mxnet as mx

# absolute, not relative: this folder installs as stn_gluon.symbol (setup.py's package_dir), but mypy reads it as
# the top-level package `symbol` (it cannot follow package_dir), where `..nn` would lead nowhere
from stn_gluon._runtime.errors import StnGluonError
from stn_gluon.nn.architecture import BACKGROUND, IDSIA_MODELS, LENET_MODELS, Architecture

from .idsia_symbol import get_idsia_symbol
from .layers import affine_sampler, conv as _conv, dense as _dense, regressor

PREFIX = "stn_lenet_"
#: The models :func:`get_symbol_for` builds (``train-symbol --model``).
SYMBOL_MODELS = LENET_MODELS + IDSIA_MODELS


def get_loc(data: Any, lr_mult: float = Architecture.loc_lr_mult, num_params: int = 6, init_scale: float = 1.0,
            prefix: str = PREFIX + "stn_") -> Any:
    """The localization network + identity-initialised regressor: data ``(N, C, H, W)`` -> ``(N, 6)``.

    Same layers as :class:`stn_gluon.LocalizationNet` (Conv 8@7x7, pool, ReLU,
    Conv 10@5x5, pool, ReLU, Dense 32, ReLU) then Dense 6 with zero weights and
    the identity ``[s, 0, 0, 0, s, 0]`` (s = ``init_scale``) as bias. Every
    parameter carries ``__lr_mult__ = lr_mult``.
    """
    loc = prefix + "loc_"
    x = data
    for i, (c, k) in enumerate(((8, 7), (10, 5))):
        x = _conv(x, f"{loc}conv{i}_", c, (k, k), lr_mult)
        x = mx.sym.Pooling(x, kernel=(2, 2), stride=(2, 2), pool_type="max", name=f"{loc}pool{i}_fwd")
        x = mx.sym.Activation(x, act_type="relu", name=f"{loc}relu{i}_fwd")
    x = mx.sym.relu(_dense(x, f"{loc}dense0_", 32, lr_mult), name=f"{loc}dense0_relu_fwd")
    return regressor(x, prefix + "regressor_", [init_scale, 0, 0, 0, init_scale, 0][:num_params], lr_mult)


def get_symbol(num_classes: int = 10, add_stn: bool = True, target_shape: Sequence[int] = (28, 28),
               lr_mult: float = Architecture.loc_lr_mult, dropout: float = Architecture.dropout,
               init_scale: float = 1.0, fill: float = BACKGROUND, prefix: str = PREFIX, resize: bool = False) -> Any:
    """The STN classifier: ``mx.sym.SpatialTransformer`` -> LeNet body -> ``SoftmaxOutput``.

    Input ``data`` ``(N, 1, H, W)`` normalised, label ``softmax_label`` ``(N,)``;
    output ``(N, num_classes)`` probabilities. ``add_stn=False`` gives the
    baseline. The body is :class:`stn_gluon.LeNetBody`'s; ``fill`` is what the
    transformer shows outside the input, as in :class:`stn_gluon.SpatialTransformer`.
    ``resize=True`` (the baseline only): area-average the input to ``target_shape``
    first, as :class:`stn_gluon.STNNet` does when the canvas is larger.
    """
    data = mx.sym.var("data")
    x = data
    if resize and not add_stn:
        x = mx.sym.contrib.AdaptiveAvgPooling2D(data, output_size=tuple(target_shape), name=prefix + "resize")
    if add_stn:
        loc = get_loc(data, lr_mult=lr_mult, init_scale=init_scale, prefix=prefix + "stn_")
        x = affine_sampler(data, loc, target_shape, fill, prefix + "stn_")
    body = prefix + "body_"
    x = _conv(x, body + "conv0_", 10, (5, 5))
    x = mx.sym.Pooling(x, kernel=(2, 2), stride=(2, 2), pool_type="max", name=body + "pool0_fwd")
    x = mx.sym.Activation(x, act_type="relu", name=body + "relu0_fwd")
    x = _conv(x, body + "conv1_", 20, (5, 5))
    x = mx.sym.Dropout(x, p=dropout, axes=(2, 3), name=body + "dropout0_fwd")
    x = mx.sym.Pooling(x, kernel=(2, 2), stride=(2, 2), pool_type="max", name=body + "pool1_fwd")
    x = mx.sym.Activation(x, act_type="relu", name=body + "relu1_fwd")
    x = mx.sym.relu(_dense(x, body + "dense0_", 50), name=body + "dense0_relu_fwd")
    x = mx.sym.Dropout(x, p=dropout, name=body + "dropout1_fwd")
    logits = _dense(x, body + "dense1_", num_classes)
    return mx.sym.SoftmaxOutput(logits, name="softmax")


def localization_params(sym: Any) -> List[str]:
    """Names of the arguments of ``sym`` that belong to the localization network."""
    return [n for n in sym.list_arguments() if "_stn_" in n]


def unsupported_fields(arch: Architecture) -> List[str]:
    """The choices of ``arch`` that the symbolic graph cannot express (``["transform 'tps'", ...]``)."""
    plain = dict(localization="conv", loc_pool=1, supersample=1, brightness_prior=0.0)
    found = [] if arch.model in SYMBOL_MODELS else [f"model {arch.model!r}"]
    if arch.has_stn:
        if arch.transform != "affine":
            found.append(f"transform {arch.transform!r}")
        found += [f"{name} {getattr(arch, name)!r}" for name, value in plain.items() if getattr(arch, name) != value]
    return found


def get_symbol_for(arch: Architecture) -> mx.sym.Symbol:
    """The graph of ``arch``, parameter names as the Gluon net's (prefix ``<model>_``).

    Raises :class:`~stn_gluon.errors.StnGluonError` listing what the Module path
    cannot express (only the LeNet and IDSIA models, with the affine
    ``SpatialTransformer`` and their own localization nets, have a symbolic form here).
    """
    missing = unsupported_fields(arch)
    if missing:
        raise StnGluonError(f"the Module path cannot build this network ({'; '.join(missing)}); "
                            f"train it with Gluon (stn-gluon train)")
    if arch.model in IDSIA_MODELS:
        return get_idsia_symbol(arch)
    target = tuple(arch.target_shape or arch.input_shape[1:])
    return get_symbol(arch.num_classes, add_stn=arch.has_stn, target_shape=target, lr_mult=arch.loc_lr_mult,
                      dropout=arch.dropout, init_scale=arch.init_scale, fill=arch.fill, prefix=f"{arch.model}_",
                      resize=not arch.has_stn and target != tuple(arch.input_shape[1:]))
