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

__all__ = ["DEFAULT_PREFIX", "export_block", "resolve_model", "load_graph", "load_model", "LoadedModel",
           "ModelGraph"]

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


@dataclass
class ModelGraph:
    """An exported model's graph, cut at the points tools need, with its weights.

    logits: Symbol ``data (N, C, H, W) -> (N, K)`` (a Module's SoftmaxOutput head removed);
    warped / theta: Symbols of the STN's output ``(N, C, H_out, W_out)`` and its
    affine theta ``(N, 6)``, or ``None`` without an STN; params: ``{name: NDArray}``.
    """
    logits: mx.sym.Symbol
    warped: object
    theta: object
    params: dict
    meta: dict
    prefix: str
    epoch: int
    files: list


def load_graph(path):
    """Read an exported model (by :func:`resolve_model` rules) -> :class:`ModelGraph`, validated."""
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
    if len(sym.list_outputs()) > 1:
        sym = sym[0]
    input_name = meta.get("input_name", "data")
    if input_name not in sym.list_inputs():
        raise CheckpointError(f"{symbol_file}: has no input named {input_name!r}")
    try:
        sym.infer_shape(**{input_name: (1,) + tuple(meta["input_shape"])})
    except mx.base.MXNetError as err:
        raise CheckpointError(f"{symbol_file}: does not accept input {tuple(meta['input_shape'])} "
                              f"({mxnet_message(err)})") from None
    try:
        raw = mx.nd.load(params_file)
    except mx.base.MXNetError as err:
        raise CheckpointError(f"{params_file}: unreadable ({mxnet_message(err)})") from None
    params = {k.split(":", 1)[-1]: v for k, v in raw.items()}
    missing = [n for n in sym.list_inputs() if n != input_name and n not in params]
    if missing:
        raise CheckpointError(f"{params_file}: not the weights of {os.path.basename(symbol_file)} "
                              f"(no {missing[0]})")
    internals = sym.get_internals()
    warped = _find_output(internals, "warped_output")
    theta = _find_output(internals, "theta_output")
    params_node = _find_output(internals, "regressor_fwd_output")
    if params_node is None:  # a localization net that outputs the parameters itself
        params_node = _find_output(internals, "loc_params_output")
    if theta is None and params_node is not None:
        from .ops import get_transform
        transform = get_transform(meta.get("transform") or "affine")
        theta = transform.theta(params_node)
    return ModelGraph(sym, warped, theta if warped is not None else None, params, meta, prefix, epoch,
                      [symbol_file, params_file])


def _symbol_block(outputs, input_name, params, ctx, shared=None):
    with warnings.catch_warnings():  # SymbolBlock warns that the input's dtype is not declared
        warnings.simplefilter("ignore", UserWarning)
        block = mx.gluon.SymbolBlock(outputs, mx.sym.var(input_name),
                                     params=shared.collect_params() if shared is not None else None)
    if shared is None:
        for name, param in block.collect_params().items():
            try:
                param._load_init(params[name], ctx)
            except (mx.base.MXNetError, AssertionError, ValueError) as err:
                raise CheckpointError(f"weight {name} does not fit the graph ({mxnet_message(err)})") from None
    return block


def load_model(path, ctx=None):
    """Load an exported model by :func:`resolve_model` rules -> :class:`LoadedModel`."""
    ctx = ctx or [mx.cpu()]
    graph = load_graph(path)
    input_name = graph.meta.get("input_name", "data")
    net = _symbol_block(graph.logits, input_name, graph.params, ctx)
    stn = None
    if graph.warped is not None:
        outputs = [graph.warped] + ([graph.theta] if graph.theta is not None else [])
        stn = _symbol_block(mx.sym.Group(outputs), input_name, graph.params, ctx, shared=net)
    return LoadedModel(net, stn, graph.meta, graph.prefix, graph.epoch, graph.files)
