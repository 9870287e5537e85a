"""The model zoo: networks by name, as ``stn-gluon train`` trains them (gluoncv's ``get_model`` style).

======================  =================================================================
name                    network
======================  =================================================================
``stn_lenet``           :class:`~stn_gluon.nn.models.STNNet` as the default recipe trains it
                        (dropout 0.3, localization net at 0.1x the learning rate, black
                        shown outside the image)
``lenet``               the same classifier without the STN (the baseline)
``stn_lenet_tutorial``  the reference tutorials' variant: dropout 0.5, zero padding,
                        localization net at the full learning rate (``STNNet()``'s defaults)
``stn_idsia``           :class:`~stn_gluon.nn.models.STNIDSIANet`: the IDSIA traffic-sign network
                        (3 conv stages with batch norm, multi-scale features, dense 300 with
                        batch norm) behind
                        an STN with its own localization net (max-pool, 2 convs, multi-scale,
                        dense 100), starting at the identity; input 3x32x32 and 43 classes
                        (GTSRB) by default, any size >= 8x8 and any channels; dropout 0.3,
                        localization net at 0.1x the learning rate, the normalised mean shown
                        outside the image (``fill`` 0)
``idsia``               the same IDSIA network without the STN (the baseline)
``stn_<zoo name>``      a gluoncv model-zoo network behind a :class:`SpatialTransformer`
                        (``stn_cifar_resnet20_v1``); a bare zoo name gives the network alone
``stn_lenet_noisy128``  the attention STN that finds a digit on a 128x128 noisy canvas, as
                        the shipped pretrained model was trained
======================  =================================================================

``pretrained=True`` loads the weights shipped with the package
(:mod:`stn_gluon.nn.pretrained`): ``stn_lenet`` (the default recipe, 20 epochs on
full MNIST) and ``stn_lenet_noisy128``; each file is checked against its SHA-256 first.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any, Dict, List, Optional, Sequence

import mxnet as mx

from .._runtime.errors import CheckpointError, StnGluonError, mxnet_message
from .architecture import BACKGROUND, IDSIA_MODELS, LENET_MODELS, Architecture, build_architecture
from .models import STNNet
from .pretrained import get_pretrained, list_pretrained

__all__ = ["get_model", "list_models", "default_architecture", "TUTORIAL_MODEL"]

TUTORIAL_MODEL = "stn_lenet_tutorial"
_ARCH_FIELDS = {f.name for f in dataclasses.fields(Architecture)}


def list_models() -> List[str]:
    """Names :func:`get_model` knows (the pretrained ones included); ``stn_<name>`` also works for any
    gluoncv model-zoo name."""
    return sorted(set(LENET_MODELS + IDSIA_MODELS + (TUTORIAL_MODEL,) + tuple(list_pretrained())))


def get_model(name: str, input_shape: Optional[Sequence[int]] = None, pretrained: bool = False,
              ctx: Any = None, **kwargs: Any) -> mx.gluon.HybridBlock:
    """Build a network by name: uninitialised, or with ``pretrained=True`` the shipped weights loaded on ``ctx``.

    input_shape: ``(C, H, W)`` (default ``(1, 28, 28)``; ``(3, 32, 32)`` for
    the IDSIA nets and gluoncv backbones). ``num_classes`` defaults to 10 (43,
    GTSRB's, for the IDSIA nets). Keyword arguments that are :class:`Architecture`
    fields (``transform``, ``dropout``, ``target_shape``, ``num_classes``,
    ...) change that choice; the others go to the block (``return_theta``,
    ``prefix``). A pretrained network is the one it was trained as: it takes
    only the block's keywords (``return_theta``). Its input is normalised
    pixels ``(N, C, H, W)``: ``(x - mean) / std`` with the model's ``mean``/``std``.
    """
    if pretrained or (name in list_pretrained() and name not in LENET_MODELS):
        return _shipped(name, input_shape, pretrained, ctx, **kwargs)
    if name == TUTORIAL_MODEL:
        return STNNet(input_shape=tuple(input_shape or (1, 28, 28)), **kwargs)
    shape = tuple(input_shape or ((1, 28, 28) if name in LENET_MODELS else (3, 32, 32)))
    classes = kwargs.pop("num_classes", 43 if name in IDSIA_MODELS else 10)
    arch = default_architecture(name, shape, classes, kwargs.pop("transform", "affine"))
    changes = {k: kwargs.pop(k) for k in list(kwargs) if k in _ARCH_FIELDS}
    if "target_shape" in changes and changes["target_shape"] is not None:
        changes["target_shape"] = tuple(changes["target_shape"])
    return build_architecture(dataclasses.replace(arch, **changes), **kwargs)


def default_architecture(name: str, input_shape: Sequence[int], num_classes: int = 10,
                         transform: str = "affine") -> Architecture:
    """The network the default recipe trains as ``name`` on MNIST-like inputs of ``input_shape`` ``(C, H, W)``.

    The STN (``stn_*`` names) starts at the identity with the reference localization net and shows the
    normalised black outside the image; the LeNet models keep the input's size; ``transform`` applies to the
    ``stn_*`` names only. The IDSIA nets are for photographs, normalised per channel: their STN shows the
    normalised mean (0) outside the image, as one number cannot be each channel's black.
    """
    shape = tuple(int(v) for v in input_shape)
    stn = name.startswith("stn_")
    common: Dict[str, Any] = dict(model=name, input_shape=shape, num_classes=int(num_classes),
                                  fill=0.0 if name in IDSIA_MODELS else BACKGROUND,
                                  transform=transform if stn else None)
    if name in LENET_MODELS:
        return Architecture(target_shape=shape[1:], **common)
    return Architecture(**common)


def _shipped(name: str, input_shape: Optional[Sequence[int]], load: bool, ctx: Any,
             **kwargs: Any) -> mx.gluon.HybridBlock:
    """The architecture of the shipped model ``name`` (rebuilt from its ``model.json``), its weights loaded if asked."""
    wrong = sorted(k for k in kwargs if k in _ARCH_FIELDS)
    if wrong:
        raise StnGluonError(f"get_model({name!r}, pretrained=True): {', '.join(wrong)} would change the network "
                            f"the weights belong to")
    folder = get_pretrained(name).folder  # every shipped file checked against the manifest's SHA-256
    params_file = max(glob.glob(os.path.join(glob.escape(folder), "model-[0-9][0-9][0-9][0-9].params")))
    with open(os.path.join(folder, "model.json")) as f:
        meta = json.load(f)
    config = dict(meta["config"])
    if input_shape is not None and tuple(input_shape) != tuple(config["input_shape"]):
        raise StnGluonError(f"get_model({name!r}): the model takes input {tuple(config['input_shape'])}, "
                            f"not {tuple(input_shape)}")
    arch = Architecture(model=meta["model"], input_shape=tuple(config.pop("input_shape")),
                        num_classes=config.pop("num_classes"), transform=config.pop("transform"),
                        target_shape=tuple(config.pop("target_shape")),
                        **{k: v for k, v in config.items() if k in _ARCH_FIELDS})
    net = build_architecture(arch, **kwargs)
    if load:
        try:
            net.collect_params().load(params_file, ctx=ctx or mx.cpu())
        except (mx.base.MXNetError, AssertionError, ValueError) as err:
            raise CheckpointError(f"{os.path.basename(params_file)} of {name} does not fit its network "
                                  f"({mxnet_message(err)})") from None
    return net
