"""A network described in full: :class:`Architecture`, and :func:`build_architecture`, its Gluon network.

:class:`Architecture` is every choice that shapes the network, with nothing
left to a default. The Gluon trainer builds it with :func:`build_architecture`
(a run's configuration becomes one in
:func:`stn_gluon.train.recipes.resolve_architecture`), the Module trainer with
:func:`stn_gluon.symbol.get_symbol_for` (or refuses what a symbol cannot
express), the model zoo (:func:`stn_gluon.nn.zoo.get_model`) with the default
recipe's values.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import mxnet as mx

from .._runtime.errors import StnGluonError
from .models import STNIDSIANet, STNNet, gluoncv_backbone, stn_backbone

__all__ = ["Architecture", "build_architecture", "initialize_net", "default_initializer", "LENET_MODELS",
           "IDSIA_MODELS", "MNIST_MEAN", "MNIST_STD", "BACKGROUND"]

#: The input normalisation of the digit models, ``(x / 255 - MNIST_MEAN) / MNIST_STD`` (MNIST's own mean and std):
#: the data layer normalises MNIST with it, and every digit model takes its input so.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
#: A black pixel, normalised: what the digit models' STNs show outside the image.
BACKGROUND = -MNIST_MEAN / MNIST_STD

#: The models built on :class:`stn_gluon.nn.models.STNNet` (with and without the STN).
LENET_MODELS = ("stn_lenet", "lenet")
#: The models built on :class:`stn_gluon.nn.models.STNIDSIANet`: the IDSIA traffic-sign net with and without its STN.
IDSIA_MODELS = ("stn_idsia", "idsia")


@dataclass(frozen=True)
class Architecture:
    """A network, fully specified.

    model: ``stn_lenet``, ``lenet``, ``stn_idsia``, ``idsia`` or ``stn_<gluoncv zoo name>``; input_shape:
    ``(C, H, W)``; target_shape: the STN's output ``(H_out, W_out)`` (the
    baseline's input, area-averaged to it; ``None``: the input's size);
    transform: the STN's transform (``None`` without an STN); fill: what the
    STN shows outside the image (normalised); the rest as in
    :class:`stn_gluon.nn.models.STNNet`.

    The defaults are the default recipe's (``stn-gluon train``'s flags take theirs from here).
    """
    model: str
    input_shape: Tuple[int, ...]
    num_classes: int = 10
    transform: Optional[str] = "affine"
    target_shape: Optional[Tuple[int, ...]] = None
    dropout: float = 0.3
    loc_lr_mult: float = 0.1
    fill: float = 0.0
    loc_pool: int = 1
    supersample: int = 1
    localization: str = "conv"
    init_scale: float = 1.0
    brightness_prior: float = 0.0

    @property
    def has_stn(self) -> bool:
        return self.model.startswith("stn_")

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def build_architecture(arch: Architecture, **block_kwargs: Any) -> mx.gluon.HybridBlock:
    """The Gluon network of ``arch`` (uninitialised), its parameters prefixed ``<model>_``.

    block_kwargs: passed to the block (``return_theta=True``, another ``prefix``).
    """
    # a fixed prefix: exported parameter names stay the same from run to run
    block_kwargs.setdefault("prefix", f"{arch.model}_")
    if arch.model in LENET_MODELS:
        return STNNet(num_classes=arch.num_classes, stn=arch.has_stn, input_shape=arch.input_shape,
                      transform=arch.transform or "affine", target_shape=arch.target_shape,
                      init_scale=arch.init_scale, loc_lr_mult=arch.loc_lr_mult, dropout=arch.dropout,
                      fill=arch.fill, loc_pool=arch.loc_pool, supersample=arch.supersample,
                      localization=arch.localization, brightness_prior=arch.brightness_prior, **block_kwargs)
    if arch.model in IDSIA_MODELS:
        return _idsia(arch, **block_kwargs)
    if arch.has_stn:
        return stn_backbone(arch.model[len("stn_"):], num_classes=arch.num_classes, input_shape=arch.input_shape,
                            transform=arch.transform or "affine", target_shape=arch.target_shape,
                            loc_lr_mult=arch.loc_lr_mult, init_scale=arch.init_scale, fill=arch.fill,
                            supersample=arch.supersample, **block_kwargs)
    return gluoncv_backbone(arch.model, arch.num_classes, **block_kwargs)


def _idsia(arch: Architecture, **block_kwargs: Any) -> STNIDSIANet:
    """:class:`STNIDSIANet` of ``arch``; refuses the localization choices that belong to the LeNet models."""
    foreign = [f"{name} {getattr(arch, name)!r}" for name, plain in
               (("localization", "conv"), ("loc_pool", 1), ("brightness_prior", 0.0)) if getattr(arch, name) != plain]
    if foreign:
        raise StnGluonError(f"model {arch.model!r} has its own localization net: {', '.join(foreign)} "
                            f"does not apply to it")
    return STNIDSIANet(num_classes=arch.num_classes, stn=arch.has_stn, input_shape=arch.input_shape,
                       transform=arch.transform or "affine", target_shape=arch.target_shape,
                       init_scale=arch.init_scale, loc_lr_mult=arch.loc_lr_mult, dropout=arch.dropout,
                       fill=arch.fill, supersample=arch.supersample, **block_kwargs)


def default_initializer() -> mx.init.Initializer:
    """uniform(+-1/sqrt(fan_in)), PyTorch's default, for every trainer.

    Larger (He) initial weights make the localization features big enough for
    the first updates to throw theta off the image, and the net never recovers.
    """
    return mx.init.Xavier(rnd_type="uniform", factor_type="in", magnitude=1)


def initialize_net(net: mx.gluon.Block, ctx_list: List[mx.Context]) -> None:
    """Initialise ``net`` on ``ctx_list`` as the trainers do: :func:`default_initializer`, no weight decay on biases."""
    net.initialize(default_initializer(), ctx=ctx_list)
    net.collect_params(".*bias").setattr("wd_mult", 0.0)
