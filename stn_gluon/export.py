"""Exported models: ``<prefix>-symbol.json`` + ``<prefix>-NNNN.params`` + ``<prefix>.json``.

A saved model is found by a save directory (holding ``model-symbol.json``),
an export prefix (``runs/x/model``) or the ``-symbol.json`` file itself; the
latest ``-NNNN.params`` beside it is used. ``<prefix>.json`` holds what tools
need to feed the model (input shape, normalisation, class names, transform);
without it MNIST defaults are assumed.
"""
import glob
import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field

import mxnet as mx

from .data import MNIST_MEAN, MNIST_STD
from .errors import CheckpointError, mxnet_message
from .io import write_json

__all__ = ["DEFAULT_PREFIX", "export_block", "resolve_model", "load_model", "LoadedModel"]

DEFAULT_PREFIX = "model"


def export_block(net, prefix, example, meta=None, epoch=0):
    """Export a hybridizable ``net`` as ``prefix-symbol.json``, ``prefix-%04d.params``, ``prefix.json``.

    example: an input batch ``(N, C, H, W)`` used to build the graph. Each file
    is written to a temporary name and renamed into place.
    """
    net.hybridize()
    net(example)
    folder = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as tmpdir:
        tmp_prefix = os.path.join(tmpdir, "m")
        net.export(tmp_prefix, epoch=epoch)
        for suffix in ("-symbol.json", f"-{epoch:04d}.params"):
            os.replace(tmp_prefix + suffix, prefix + suffix)
    if meta is not None:
        write_json(prefix + ".json", meta)
    return prefix


def resolve_model(path):
    """A save dir, export prefix or ``-symbol.json`` path -> ``(prefix, epoch)`` of the latest params."""
    if os.path.isdir(path):
        prefix = os.path.join(path, DEFAULT_PREFIX)
    elif path.endswith("-symbol.json"):
        prefix = path[:-len("-symbol.json")]
    elif path.endswith(".params"):
        prefix = re.sub(r"-\d{4}\.params$", "", path)
    else:
        prefix = path
    if not os.path.isfile(prefix + "-symbol.json"):
        raise CheckpointError(f"{path}: no exported model ({prefix}-symbol.json not found)")
    epochs = sorted(int(m.group(1)) for f in glob.glob(glob.escape(prefix) + "-*.params")
                    if (m := re.search(r"-(\d{4})\.params$", f)))
    if not epochs:
        raise CheckpointError(f"{path}: {prefix}-symbol.json has no {os.path.basename(prefix)}-NNNN.params beside it")
    return prefix, epochs[-1]


def _default_meta():
    return dict(input_shape=[1, 28, 28], mean=MNIST_MEAN, std=MNIST_STD,
                classes=[str(i) for i in range(10)], input_name="data")


@dataclass
class LoadedModel:
    """An exported model loaded for inference.

    net: ``SymbolBlock``, input ``(N, C, H, W)`` normalised -> logits ``(N, K)``.
    stn: ``SymbolBlock`` sharing its weights, input -> ``(warped, theta)``, or
    ``None`` for a model without a spatial transformer.
    """
    net: mx.gluon.SymbolBlock
    stn: object
    meta: dict
    prefix: str
    epoch: int
    files: list = field(default_factory=list)

    @property
    def input_shape(self):
        return tuple(self.meta["input_shape"])


def _find_output(internals, suffix):
    names = [n for n in internals.list_outputs() if n.endswith(suffix)]
    return internals[names[0]] if names else None


def load_model(path, ctx=None):
    """Load an exported model by :func:`resolve_model` rules -> :class:`LoadedModel`."""
    ctx = ctx or [mx.cpu()]
    prefix, epoch = resolve_model(path)
    symbol_file, params_file = prefix + "-symbol.json", f"{prefix}-{epoch:04d}.params"
    meta = _default_meta()
    if os.path.isfile(prefix + ".json"):
        try:
            with open(prefix + ".json") as f:
                meta.update(json.load(f))
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{prefix}.json: unreadable model description ({err})") from None
    try:
        sym = mx.sym.load(symbol_file)
    except mx.base.MXNetError as err:
        raise CheckpointError(f"{symbol_file}: not a valid MXNet symbol file "
                              f"({mxnet_message(err)})") from None
    if sym.attr("op_name") == "SoftmaxOutput":
        sym = sym.get_children()[0]  # a Module graph: serve the logits, not the loss head
    input_name = meta.get("input_name", "data")
    if input_name not in sym.list_inputs():
        raise CheckpointError(f"{symbol_file}: has no input named {input_name!r}")
    try:
        sym.infer_shape(**{input_name: (1,) + tuple(meta["input_shape"])})
    except mx.base.MXNetError as err:
        raise CheckpointError(f"{symbol_file}: does not accept input {tuple(meta['input_shape'])} "
                              f"({mxnet_message(err)})") from None
    data = mx.sym.var(input_name)
    with warnings.catch_warnings():  # SymbolBlock warns that the input's dtype is not declared
        warnings.simplefilter("ignore", UserWarning)
        net = mx.gluon.SymbolBlock(sym[0] if len(sym.list_outputs()) > 1 else sym, data)
    try:
        net.collect_params().load(params_file, ctx=ctx, allow_missing=False, ignore_extra=True,
                                  restore_prefix="")
    except (mx.base.MXNetError, AssertionError, ValueError) as err:
        raise CheckpointError(f"{params_file}: unreadable, or not the weights of {os.path.basename(symbol_file)} "
                              f"({mxnet_message(err)})") from None
    internals = sym.get_internals()
    warped = _find_output(internals, "warped_output")
    theta = _find_output(internals, "theta_output")
    if theta is None and _find_output(internals, "regressor_fwd_output") is not None:
        from .ops import get_transform
        transform = get_transform(meta.get("transform", "affine"))
        theta = transform.to_affine(mx.sym, _find_output(internals, "regressor_fwd_output"))
    stn = None
    if warped is not None:
        outputs = [warped] + ([theta] if theta is not None else [])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            stn = mx.gluon.SymbolBlock(mx.sym.Group(outputs), data, params=net.collect_params())
    return LoadedModel(net, stn, meta, prefix, epoch, [symbol_file, params_file])
