"""From a run's configuration to a concrete network: :func:`resolve_architecture`, :func:`build_net`.

:class:`Architecture` is every choice that shapes the network, with nothing
left to a default: the Gluon trainer builds it with :func:`build_net`, the
Module trainer with :func:`stn_gluon.symbol.get_symbol_for` (or refuses what a
symbol cannot express), the model zoo (:func:`stn_gluon.nn.zoo.get_model`) with
the default recipe's values.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import mxnet as mx

from ..train.recipes import TrainConfig, dataset_models

__all__ = ["Architecture", "resolve_architecture", "build_net", "build_architecture", "initialize_net",
           "default_initializer", "LENET_MODELS"]

#: The models built on :class:`stn_gluon.nn.models.STNNet` (with and without the STN).
LENET_MODELS = ("stn_lenet", "lenet")


@dataclass(frozen=True)
class Architecture:
    """A network, fully specified.

    model: ``stn_lenet``, ``lenet`` or ``stn_<gluoncv zoo name>``; input_shape:
    ``(C, H, W)``; target_shape: the STN's output ``(H_out, W_out)`` (the
    baseline's input, area-averaged to it; ``None``: the input's size);
    transform: the STN's transform (``None`` without an STN); fill: what the
    STN shows outside the image (normalised); the rest as in
    :class:`stn_gluon.nn.models.STNNet`.
    """
    model: str
    input_shape: Tuple[int, ...]
    num_classes: int = 10
    transform: Optional[str] = "affine"
    target_shape: Optional[Tuple[int, ...]] = None
    dropout: float = TrainConfig.dropout
    loc_lr_mult: float = TrainConfig.loc_lr_mult
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


def resolve_architecture(cfg: TrainConfig, input_shape: Sequence[int], num_classes: int = 10) -> Architecture:
    """The network ``cfg`` trains on inputs of ``input_shape`` ``(C, H, W)``.

    ``None`` fields of ``cfg`` take the dataset's values (:data:`stn_gluon.train.recipes.DATASET_MODELS`);
    the dataset's sizes apply to its own canvas only: other data keeps its size unless told.
    """
    from ..data.mnist import BACKGROUND
    from ..data.distortions import get_dataset_spec

    input_shape = tuple(int(v) for v in input_shape)
    models = dataset_models(cfg.dataset)
    on_canvas = input_shape[1:] == (get_dataset_spec(cfg.dataset).canvas,) * 2
    # outside the image the STN shows the (normalised) black background, not grey
    common: Dict[str, Any] = dict(model=cfg.model, input_shape=input_shape, num_classes=int(num_classes),
                                  loc_lr_mult=cfg.loc_lr_mult, fill=BACKGROUND)
    if cfg.model not in LENET_MODELS:
        return Architecture(transform=cfg.transform if cfg.model.startswith("stn_") else None, **common)
    stn = cfg.model == "stn_lenet"
    size = cfg.target_size or (None if not on_canvas else models.stn_target if stn else models.baseline_target)
    target = (size, size) if size else input_shape[1:]
    if not stn:
        return Architecture(transform=None, target_shape=target, dropout=cfg.dropout, **common)
    defaults = models.stn_defaults(cfg.transform)
    localization = cfg.localization or defaults["localization"]
    prior = cfg.brightness_prior
    if prior is None:  # the dataset's prior belongs to its (saliency) localization net
        prior = defaults["brightness_prior"] if localization == defaults["localization"] else 0.0
    return Architecture(transform=cfg.transform, target_shape=target, dropout=cfg.dropout,
                        loc_pool=cfg.loc_pool or models.loc_pool, supersample=cfg.supersample or models.supersample,
                        localization=localization, init_scale=cfg.init_scale or defaults["init_scale"],
                        brightness_prior=prior, **common)


def build_architecture(arch: Architecture, **block_kwargs: Any) -> mx.gluon.HybridBlock:
    """The Gluon network of ``arch`` (uninitialised), its parameters prefixed ``<model>_``.

    block_kwargs: passed to the block (``return_theta=True``, another ``prefix``).
    """
    from .models import STNNet, gluoncv_backbone, stn_backbone

    # a fixed prefix: exported parameter names stay the same from run to run
    block_kwargs.setdefault("prefix", f"{arch.model}_")
    if arch.model in LENET_MODELS:
        return STNNet(num_classes=arch.num_classes, stn=arch.has_stn, input_shape=arch.input_shape,
                      transform=arch.transform or "affine", target_shape=arch.target_shape,
                      init_scale=arch.init_scale, loc_lr_mult=arch.loc_lr_mult, dropout=arch.dropout,
                      fill=arch.fill, loc_pool=arch.loc_pool, supersample=arch.supersample,
                      localization=arch.localization, brightness_prior=arch.brightness_prior, **block_kwargs)
    if arch.has_stn:
        return stn_backbone(arch.model[len("stn_"):], num_classes=arch.num_classes, input_shape=arch.input_shape,
                            transform=arch.transform or "affine", target_shape=arch.target_shape,
                            loc_lr_mult=arch.loc_lr_mult, fill=arch.fill, **block_kwargs)
    return gluoncv_backbone(arch.model, arch.num_classes, **block_kwargs)


def build_net(cfg: TrainConfig, input_shape: Sequence[int], num_classes: int = 10) -> mx.gluon.HybridBlock:
    """The network ``cfg`` trains (uninitialised): :func:`resolve_architecture` then :func:`build_architecture`."""
    return build_architecture(resolve_architecture(cfg, input_shape, num_classes))


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
