"""The model zoo: networks by name, as ``stn-gluon train`` trains them (gluoncv's ``get_model`` style).

======================  =================================================================
name                    network
======================  =================================================================
``stn_lenet``           :class:`~stn_gluon.models.STNNet` as the default recipe trains it
                        (dropout 0.3, localization net at 0.1x the learning rate, black
                        shown outside the image)
``lenet``               the same classifier without the STN (the baseline)
``stn_lenet_tutorial``  the reference tutorials' variant: dropout 0.5, zero padding,
                        localization net at the full learning rate (``STNNet()``'s defaults)
``stn_<zoo name>``      a gluoncv model-zoo network behind a :class:`SpatialTransformer`
                        (``stn_cifar_resnet20_v1``); a bare zoo name gives the network alone
======================  =================================================================
"""
from __future__ import annotations

import dataclasses
from typing import Any, List, Optional, Sequence

import mxnet as mx

from .architecture import LENET_MODELS, Architecture, build_architecture, resolve_architecture
from .recipes import TrainConfig

__all__ = ["get_model", "list_models", "TUTORIAL_MODEL"]

TUTORIAL_MODEL = "stn_lenet_tutorial"
_ARCH_FIELDS = {f.name for f in dataclasses.fields(Architecture)}


def list_models() -> List[str]:
    """Names :func:`get_model` knows; ``stn_<name>`` also works for any gluoncv model-zoo name."""
    return sorted(LENET_MODELS + (TUTORIAL_MODEL,))


def get_model(name: str, input_shape: Optional[Sequence[int]] = None, **kwargs: Any) -> mx.gluon.HybridBlock:
    """Build a network by name (uninitialised).

    input_shape: ``(C, H, W)`` (default ``(1, 28, 28)``; ``(3, 32, 32)`` for
    gluoncv backbones). Keyword arguments that are :class:`Architecture`
    fields (``transform``, ``dropout``, ``target_shape``, ``num_classes``,
    ...) change that choice; the others go to the block (``return_theta``,
    ``prefix``).
    """
    if name == TUTORIAL_MODEL:
        from .models import STNNet

        return STNNet(input_shape=tuple(input_shape or (1, 28, 28)), **kwargs)
    lenet = name in LENET_MODELS
    shape = tuple(input_shape or ((1, 28, 28) if lenet else (3, 32, 32)))
    transform = kwargs.pop("transform", "affine")
    arch = resolve_architecture(TrainConfig(model=name, transform=transform), shape,
                                kwargs.pop("num_classes", 10))
    changes = {k: kwargs.pop(k) for k in list(kwargs) if k in _ARCH_FIELDS}
    if "target_shape" in changes and changes["target_shape"] is not None:
        changes["target_shape"] = tuple(changes["target_shape"])
    return build_architecture(dataclasses.replace(arch, **changes), **kwargs)
