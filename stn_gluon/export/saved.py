"""Exported models: ``<prefix>-symbol.json`` + ``<prefix>-NNNN.params`` + ``<prefix>.json``.

A saved model is found by a save directory (holding ``model-symbol.json``),
an export prefix (``runs/x/model``) or the ``-symbol.json`` file itself; the
latest ``-NNNN.params`` beside it is used. ``<prefix>.json`` holds what tools
need to feed the model (input shape, normalisation, class names, transform);
without it MNIST defaults are assumed.

``<prefix>.json`` also records the SHA-256 of the graph and the weights it
describes (``sha256``: ``{"model-symbol.json": ..., "model-0000.params": ...}``);
every loader checks them and refuses files changed or damaged since. Each file is read once: the
bytes checked are the bytes loaded (a file replaced between the check and the load cannot slip in). A
``<prefix>.json`` without ``sha256`` (from a version that did not record
them, or written by hand) loads without the check. An ONNX export records the params file
it came from and its SHA-256; :func:`check_onnx_current` refuses one that no
longer matches the weights beside it, one that onnx cannot read, and one whose metadata names a file
outside the model's folder.

Model files are code-equivalent: load only files from sources you trust (docs/export-onnx.md).
"""
import glob
import hashlib
import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import mxnet as mx

from ..nn.architecture import MNIST_MEAN, MNIST_STD
from .._runtime import mxnet_internals
from .._runtime.errors import CheckpointError, mxnet_message
from .._runtime.files import sha256_file, write_json
from ..nn.pretrained import resolve_model_ref
from .onnx_io import read_metadata
from ..nn.ops import Shape, get_transform

__all__ = ["DEFAULT_PREFIX", "export_block", "write_model_meta", "verify_checksums", "resolve_model", "load_graph",
           "load_model", "LoadedModel", "ModelGraph", "SavedGraph", "read_saved", "onnx_weights_mismatch", "check_onnx_current"]

DEFAULT_PREFIX = "model"


def export_block(net: mx.gluon.HybridBlock, prefix: str, example: mx.nd.NDArray, meta: Optional[dict] = None,
                 epoch: int = 0) -> str:
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
        write_model_meta(prefix, epoch, meta)
    return prefix


def write_model_meta(prefix: str, epoch: int, meta: dict) -> dict:
    """Write ``prefix.json``: ``meta`` plus the SHA-256 of ``prefix-symbol.json`` and ``prefix-NNNN.params``."""
    files = [prefix + "-symbol.json", f"{prefix}-{epoch:04d}.params"]
    meta = dict(meta, sha256={os.path.basename(f): sha256_file(f) for f in files})
    write_json(prefix + ".json", meta)
    return meta


def read_model_file(path: str) -> bytes:
    """The bytes of a model file, read once (hash them and load them: :func:`verify_checksums`)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise CheckpointError(f"{path}: unreadable ({err.strerror or err})") from None


def verify_checksums(meta: dict, files: list, described: str, contents: Optional[Dict[str, bytes]] = None) -> None:
    """Refuse any of ``files`` whose SHA-256 differs from what ``meta["sha256"]`` (from ``described``) records.

    Meta without ``sha256`` passes (older runs). A params file it does not
    name (another epoch than the one described) is refused too. contents: ``{path: bytes}`` already read
    (:func:`read_model_file`): what is checked is what will be loaded; without it the files are read here.
    """
    recorded = meta.get("sha256")
    if not recorded:
        return
    if not isinstance(recorded, dict):
        raise CheckpointError(f"{described}: its sha256 entry is malformed")
    for path in files:
        name = os.path.basename(path)
        if name not in recorded:
            named = ", ".join(sorted(recorded)) or "nothing"
            raise CheckpointError(f"{path}: {described} describes other files ({named}); a run that did not "
                                  f"finish? continue it with resume", params=("resume",))
        digest = hashlib.sha256(contents[path]).hexdigest() if contents is not None else sha256_file(path)
        if digest != recorded[name]:
            raise CheckpointError(f"{path}: its SHA-256 does not match {described} (changed or damaged since it "
                                  f"was written); restore it or train again")


def resolve_model(path: str) -> Tuple[str, int]:
    """A save dir, export prefix, ``-symbol.json`` path or ``pretrained:NAME`` (a shipped model, verified:
    :mod:`stn_gluon.nn.pretrained`) -> ``(prefix, epoch)`` of the latest params."""
    path = resolve_model_ref(path)
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


def _plain_name(name: Any, onnx_path: str, key: str) -> str:
    """A file name from ``onnx_path``'s metadata (``key``), refused unless it is a plain name in its folder."""
    if not isinstance(name, str) or not name or name in (".", "..") or os.path.basename(name) != name \
            or "\0" in name or (os.altsep and os.altsep in name):
        raise CheckpointError(f"{onnx_path}: its metadata's {key} {str(name)[:100]!r} is not a file name beside "
                              f"it; refusing a path outside the model's folder")
    return name


def _onnx_metadata(onnx_path: str) -> Dict[str, Any]:
    """The export metadata of ``onnx_path``, or a one-line :class:`CheckpointError` where onnx cannot read it."""
    import onnx

    try:
        return read_metadata(onnx.load(onnx_path, load_external_data=False))
    except Exception as err:  # onnx raises DecodeError, ValueError, OSError... for a file it cannot read
        first = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(f"{onnx_path}: not a readable ONNX model ({first or type(err).__name__})") from None


def _recorded_weights(onnx_path: str, meta: Optional[Dict[str, Any]] = None) -> Optional[Tuple[str, str]]:
    """``(params file name, SHA-256)`` an ONNX file says it was exported from, or ``None`` where it says nothing.

    meta: its metadata, already read (as :class:`~stn_gluon.export.onnx_model.OnnxModel` does); otherwise read
    here. A file onnx cannot read, or a params file named by a path, is refused (:class:`CheckpointError`).
    """
    meta = _onnx_metadata(onnx_path) if meta is None else meta
    if meta.get("params_sha256"):
        return _plain_name(meta.get("params_file", ""), onnx_path, "params_file"), str(meta["params_sha256"])
    source = meta.get("source")  # files before params_sha256 existed: {name: sha256}
    if isinstance(source, dict):
        for name, digest in source.items():
            if name.endswith(".params"):
                return _plain_name(name, onnx_path, "source"), str(digest)
    return None


def _inside_folder(path: str, folder: str) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([real, base]) == base


def onnx_weights_mismatch(onnx_path: str, model_path: str, meta: Optional[Dict[str, Any]] = None) -> "str | None":
    """Why ``onnx_path`` does not hold the weights of ``model_path``, or ``None`` if it does (or cannot tell).

    model_path: a save dir or export prefix (compared with the weights the
    MXNet loader would take there), or the ``.onnx`` file itself (compared
    with the params file it names, if that file is beside it). meta: the ONNX file's metadata, if already read.
    An ONNX file onnx cannot read, or whose metadata names a file outside its folder (a link out of it
    included), is refused (:class:`CheckpointError`), never taken as "cannot tell".
    """
    recorded = _recorded_weights(onnx_path, meta)
    if recorded is None:
        return None
    name, digest = recorded
    if str(model_path).endswith(".onnx"):
        folder = os.path.dirname(os.path.abspath(onnx_path))
        params = os.path.join(folder, name)
        if not os.path.lexists(params):
            return None
        if not _inside_folder(params, folder):
            raise CheckpointError(f"{onnx_path}: its metadata's params_file {name} leads outside the model's folder "
                                  f"(a link to {os.path.realpath(params)}); refusing it")
        if not os.path.isfile(params):
            return None
    else:
        try:
            prefix, epoch = resolve_model(os.fspath(model_path))
        except CheckpointError:  # no MXNet export there: nothing to compare with
            return None
        params = f"{prefix}-{epoch:04d}.params"
    if os.path.basename(params) != name:
        return f"it was exported from {name}, the model's weights are now {os.path.basename(params)}"
    if sha256_file(params) != digest:
        return f"it was exported from other weights than today's {os.path.basename(params)}"
    return None


def check_onnx_current(onnx_path: str, model_path: str, meta: Optional[Dict[str, Any]] = None) -> None:
    """Refuse (one line) an ONNX file exported from other weights than ``model_path``'s now, one onnx cannot
    read, or one whose metadata points outside its folder. meta: its metadata, if already read."""
    why = onnx_weights_mismatch(onnx_path, model_path, meta)
    if why:
        where = model_path if not str(model_path).endswith(".onnx") else os.path.dirname(os.path.abspath(onnx_path))
        raise CheckpointError(f"{onnx_path} is out of date ({why}); re-run stn-gluon export-onnx --model {where}")


def _default_meta() -> Dict[str, Any]:
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
    stn: Optional[mx.gluon.SymbolBlock]
    meta: dict
    prefix: str
    epoch: int
    files: List[str] = field(default_factory=list)
    sha256: Dict[str, str] = field(default_factory=dict)  # base name -> SHA-256 of the bytes loaded

    @property
    def input_shape(self) -> Shape:
        return tuple(self.meta["input_shape"])


def _find_output(internals: mx.sym.Symbol, suffix: str) -> Optional[mx.sym.Symbol]:
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
    warped: Optional[mx.sym.Symbol]
    theta: Optional[mx.sym.Symbol]
    params: Dict[str, mx.nd.NDArray]
    meta: dict
    prefix: str
    epoch: int
    files: List[str]
    sha256: Dict[str, str] = field(default_factory=dict)  # base name -> SHA-256 of the bytes loaded


@dataclass
class SavedGraph:
    """A saved MXNet graph as it is on disk: ``symbol`` (all its outputs), ``params`` ``{name: NDArray}``
    (``arg:``/``aux:`` prefixes removed), ``meta`` (``<prefix>.json``, or MNIST defaults), and its files with
    the SHA-256 of the bytes loaded (``sha256``: base name -> hex)."""
    symbol: mx.sym.Symbol
    params: Dict[str, mx.nd.NDArray]
    meta: dict
    prefix: str
    epoch: int
    files: List[str]
    sha256: Dict[str, str] = field(default_factory=dict)


def _load_symbol(symbol_file: str, data: bytes) -> mx.sym.Symbol:
    try:
        return mx.sym.load_json(data.decode("utf-8"))
    except mx.base.MXNetError as err:
        raise CheckpointError(f"{symbol_file}: not a valid MXNet symbol file "
                              f"({mxnet_message(err)})") from None
    except ValueError:  # not UTF-8, or UnicodeDecodeError from MXNet's own message on a truncated file
        raise CheckpointError(f"{symbol_file}: not a valid MXNet symbol file (damaged or truncated)") from None


def _load_params(params_file: str, data: bytes) -> Dict[str, mx.nd.NDArray]:
    try:
        raw = mx.nd.load_frombuffer(data)
    except mx.base.MXNetError as err:
        raise CheckpointError(f"{params_file}: unreadable ({mxnet_message(err)})") from None
    if not isinstance(raw, dict) and raw:
        raise CheckpointError(f"{params_file}: holds unnamed arrays, not a model's weights")
    return {k.split(":", 1)[-1]: v for k, v in (raw or {}).items()}  # a graph without weights saves []


def read_saved(path: str) -> SavedGraph:
    """Read a saved graph (by :func:`resolve_model` rules) -> :class:`SavedGraph`; checksums checked, nothing cut.

    Each file is read once; the bytes checked against ``<prefix>.json``'s SHA-256 are the bytes loaded.
    """
    prefix, epoch = resolve_model(path)
    symbol_file, params_file = prefix + "-symbol.json", f"{prefix}-{epoch:04d}.params"
    contents = {f: read_model_file(f) for f in (symbol_file, params_file)}
    meta = _default_meta()
    if os.path.isfile(prefix + ".json"):
        try:
            with open(prefix + ".json") as f:
                meta.update(json.load(f))
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{prefix}.json: unreadable model description ({err})") from None
        verify_checksums(meta, [symbol_file, params_file], prefix + ".json", contents)
    sym = _load_symbol(symbol_file, contents[symbol_file])
    params = _load_params(params_file, contents[params_file])
    digests = {os.path.basename(f): hashlib.sha256(data).hexdigest() for f, data in contents.items()}
    return SavedGraph(sym, params, meta, prefix, epoch, [symbol_file, params_file], digests)


def load_graph(path: str) -> ModelGraph:
    """Read an exported classifier (by :func:`resolve_model` rules) -> :class:`ModelGraph`, validated."""
    saved = read_saved(path)
    sym, params, meta, prefix, epoch = saved.symbol, saved.params, saved.meta, saved.prefix, saved.epoch
    symbol_file, params_file = saved.files
    if sym.attr("op_name") == "SoftmaxOutput":
        sym = sym.get_children()[0]  # a Module graph: serve the logits, not the loss head
    if len(sym.list_outputs()) > 1:
        sym = sym[0]
    input_name = meta.get("input_name", "data")
    if input_name not in sym.list_inputs():
        data_inputs = [n for n in sym.list_inputs() if n not in params and not n.endswith("_label")]
        raise CheckpointError(f"{symbol_file}: has no input named {input_name!r} (its inputs: "
                              f"{', '.join(data_inputs)}; export-onnx takes --input NAME=C,H,W for each)")
    try:
        sym.infer_shape(**{input_name: (1,) + tuple(meta["input_shape"])})
    except mx.base.MXNetError as err:
        raise CheckpointError(f"{symbol_file}: does not accept input {tuple(meta['input_shape'])} "
                              f"({mxnet_message(err)})") from None
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
        transform = get_transform(meta.get("transform") or "affine")
        theta = transform.theta(params_node)
    return ModelGraph(sym, warped, theta if warped is not None else None, params, meta, prefix, epoch,
                      list(saved.files), dict(saved.sha256))


def _symbol_block(outputs: mx.sym.Symbol, input_name: str, params: Dict[str, mx.nd.NDArray], ctx: Any,
                  shared: Optional[mx.gluon.Block] = None) -> mx.gluon.SymbolBlock:
    with warnings.catch_warnings():  # SymbolBlock warns that the input's dtype is not declared
        warnings.simplefilter("ignore", UserWarning)
        block = mx.gluon.SymbolBlock(outputs, mx.sym.var(input_name),
                                     params=shared.collect_params() if shared is not None else None)
    if shared is None:
        for name, param in block.collect_params().items():
            try:
                mxnet_internals.load_param_data(param, params[name], ctx)
            except (mx.base.MXNetError, AssertionError, ValueError) as err:
                raise CheckpointError(f"weight {name} does not fit the graph ({mxnet_message(err)})") from None
    return block


def load_model(path: str, ctx: Any = None) -> LoadedModel:
    """Load an exported model by :func:`resolve_model` rules -> :class:`LoadedModel`."""
    ctx = ctx or [mx.cpu()]
    graph = load_graph(path)
    input_name = graph.meta.get("input_name", "data")
    net = _symbol_block(graph.logits, input_name, graph.params, ctx)
    stn = None
    if graph.warped is not None:
        outputs = [graph.warped] + ([graph.theta] if graph.theta is not None else [])
        stn = _symbol_block(mx.sym.Group(outputs), input_name, graph.params, ctx, shared=net)
    return LoadedModel(net, stn, graph.meta, graph.prefix, graph.epoch, graph.files, graph.sha256)
