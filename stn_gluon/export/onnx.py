"""ONNX export of STN models and of any MXNet graph using the spatial ops; ONNX Runtime inference.

The converters for MXNet's ``GridGenerator``, ``BilinearSampler`` and
``SpatialTransformer`` live in :mod:`stn_gluon.export.converters`; importing this module
registers them (:func:`register_converters`), after which MXNet's own
``mx.onnx.export_model`` converts any graph using them. The projective and
thin-plate-spline transforms need nothing more: their grids are built from
``GridGenerator`` (a homography is the quotient of two affine grids) and
``FullyConnected`` with a constant matrix (the spline), plus operators MXNet's
exporter already converts.

Two export flows, both at an opset of :data:`~stn_gluon.export.converters.OPSETS`
(16..20, default :data:`OPSET`), stamped in the file and used to pick every
converter, ours and MXNet's:

* :func:`export_onnx`: an STN classifier (one image input). The file lists only
  the data as graph input (the weights are initializers only, so ONNX Runtime
  can fold constants), has a dynamic batch dimension, and outputs ``logits``
  ``(N, K)``, ``probabilities`` ``(N, K)`` and, with an STN, ``theta``
  (``(N, 6)`` for affine and attention, ``(N, 8)`` for projective, ``(N, 2K)``
  for a thin-plate spline) and ``warped`` ``(N, C, H_out, W_out)``. Metadata:
  input name and shape, normalisation, class names, ``digits`` (JSON ``true``/``false``), opset, transform, the
  source files with their SHA-256, and (``params_file``, ``params_sha256``) the
  weights it was exported from. Loading a save dir's ``model.onnx`` checks
  those against the save dir's weights
  (:func:`stn_gluon.export.saved.check_onnx_current`): an export left over from
  before a retraining is refused.
* :func:`export_graph`: any saved MXNet graph (several inputs, several
  outputs), its own inputs and outputs kept, each input with a dynamic batch
  dimension.

Both files pass ``onnx.checker.check_model(full_check=True)``.
"""
import contextlib
import io
import json
import os
import tempfile
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

import numpy as np

from .. import __version__
from .._runtime import mxnet_internals
from .._runtime.errors import StnGluonError, mxnet_message
from .._runtime.files import atomic_path
from ..data.normalization import is_digit_model
from .int8 import quantize_onnx  # int8 copies of an export, also importable from here
from .onnx_io import cpu_session, read_metadata
from .onnx_model import OnnxModel
from .converters import DEFAULT_OPSET, OPSETS, check_opset, parse_input_spec, register_converters, target_opset

if TYPE_CHECKING:
    import mxnet as mx
    from onnx import ModelProto

    from .saved import ModelGraph
    from ..nn.ops import Shape

__all__ = ["OPSET", "OPSETS", "register_converters", "target_opset", "export_onnx", "export_graph", "graph_to_onnx",
           "parse_input_spec", "inference_outputs", "graph_parity", "cpu_session", "OnnxModel", "read_metadata",
           "quantize_onnx"]

OPSET = DEFAULT_OPSET
"""The opset exports use unless told otherwise (:data:`stn_gluon.export.converters.DEFAULT_OPSET`)."""

register_converters()


def _graph_of(model: "Union[mx.gluon.HybridBlock, str, os.PathLike[str]]", input_shape: "Optional[Shape]") -> "ModelGraph":
    """A Gluon block or a saved-model path -> :class:`~stn_gluon.export.saved.ModelGraph`."""
    import mxnet as mx

    from .saved import export_block, load_graph  # lazy: imports MXNet; OnnxModel runs without it

    if isinstance(model, mx.gluon.HybridBlock):
        config = getattr(model, "config", {})
        shape = tuple(input_shape or config.get("input_shape") or ())
        if len(shape) != 3:
            raise StnGluonError("export_onnx: give input_shape=(C, H, W) for this block")
        with tempfile.TemporaryDirectory() as tmp:
            stn_transform = getattr(getattr(model, "stn", None), "transform", None)  # an STNClassifier's
            meta = dict(input_shape=list(shape), input_name="data", source="gluon block",
                        transform=config.get("transform") or getattr(stn_transform, "name", None), config=config)
            was_theta = getattr(model, "return_theta", False)
            if was_theta:
                model.return_theta = False
                mxnet_internals.clear_cached_graph(model)
            try:
                export_block(model, os.path.join(tmp, "model"), mx.nd.zeros((1,) + shape), meta=meta)
            finally:
                if was_theta:
                    model.return_theta = True
                    mxnet_internals.clear_cached_graph(model)
            graph = load_graph(os.path.join(tmp, "model"))
            graph.files = []
            return graph
    if not isinstance(model, (str, os.PathLike)):
        raise StnGluonError(f"export_onnx: expected a Gluon HybridBlock or a model path, got {type(model).__name__}")
    return load_graph(os.fspath(model))


def _graph_inputs(sym: "mx.sym.Symbol", params: Dict[str, Any]) -> List[str]:
    """The names MXNet's exporter makes graph inputs, in the order it wants their shapes."""
    nodes = json.loads(sym.tojson())["nodes"]
    label = sym.get_internals()[len(sym.get_internals()) - 1].name + "_label"  # the exporter skips this one
    return [n["name"] for n in nodes if n["op"] == "null" and n["name"] not in params and n["name"] != label]


def graph_to_onnx(sym: "mx.sym.Symbol", params: Dict[str, Any], input_shapes: Dict[str, "Sequence[int]"],
                  opset: int = OPSET) -> "ModelProto":
    """An MXNet graph -> ONNX model, converted at ``opset`` and stamped with it.

    sym: the graph (a Group for several outputs); params: ``{name: NDArray}``
    (``arg:``/``aux:`` prefixes allowed); input_shapes: each data input's shape
    without the batch dimension, e.g. ``{"image": (3, 64, 64), "flow": (2, 64, 64)}``:
    every input gets a dynamic batch dimension ``N``. Weights are initializers
    only (not graph inputs). The ONNX outputs are named as MXNet names them
    (less ``_output``), in MXNet's order.
    """
    import onnx.checker
    from onnx import TensorProto, helper

    opset = check_opset(opset)
    params = {k.split(":", 1)[-1]: v for k, v in params.items()}
    names = _graph_inputs(sym, params)
    missing = [n for n in names if n not in input_shapes]
    unknown = [n for n in input_shapes if n not in names]
    if unknown:
        raise StnGluonError(f"ONNX export: the graph has no input {unknown[0]!r} (its inputs: {', '.join(names)})")
    if missing:
        raise StnGluonError(f"ONNX export: give the shape of input {missing[0]!r} (its inputs: {', '.join(names)})")
    shapes = [tuple(int(d) for d in input_shapes[n]) for n in names]
    used = set(sym.list_inputs())
    params = {k: v for k, v in params.items() if k in used}
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # MXNet prints the arguments of a failed inference
            sym.infer_shape(**{n: (1,) + s for n, s in zip(names, shapes)})
    except Exception as err:  # MXNetError: the shapes do not fit the graph
        raise StnGluonError(f"ONNX export: the graph does not accept inputs "
                            f"{dict(zip(names, shapes))} ({mxnet_message(err)})") from None
    try:
        with target_opset(opset):  # MXNet's own check of the graph at this opset, too
            proto = mxnet_internals.onnx_graph_class()().create_onnx_graph_proto(
                sym, params, [(1,) + s for s in shapes], [TensorProto.FLOAT] * len(shapes), opset_version=opset,
                dynamic=True, dynamic_input_shapes=[(None,) + s for s in shapes])
    except (AttributeError, NotImplementedError) as err:  # an op without a converter
        raise StnGluonError(f"ONNX export: {err}") from None
    except onnx.checker.ValidationError as err:  # a converter of MXNet's that emits what this opset lacks
        raise StnGluonError(f"ONNX export at opset {opset}: MXNet's converters emitted an invalid graph "
                            f"({str(err).splitlines()[0]})") from None
    # the graph's outputs in MXNet's order (the exporter sorts those of one node by name)
    order = {n[:-len("_output")] if n.endswith("_output") else n: i for i, n in enumerate(sym.list_outputs())}
    outputs = sorted(proto.output, key=lambda o: order.get(o.name, len(order)))
    del proto.output[:]
    proto.output.extend(outputs)
    # Weights belong in the initializers only: listed as inputs, they block constant folding.
    weights = {t.name for t in proto.initializer}
    inputs = [i for i in proto.input if i.name not in weights]
    del proto.input[:]
    proto.input.extend(inputs)
    for vi in proto.input:
        vi.type.tensor_type.shape.dim[0].dim_param = "N"
    onnx_model = helper.make_model(proto, opset_imports=[helper.make_opsetid("", opset)], producer_name="stn-gluon")
    onnx_model.ir_version = min(onnx_model.ir_version, 10)  # what ONNX Runtime >= 1.17 reads
    return onnx_model


def _sources(files: Sequence[str], sha256: Dict[str, str]) -> Dict[str, str]:
    """The source files' base names -> the SHA-256 of the bytes that were loaded from them (not of the files
    as they are now: they could have changed since)."""
    return {os.path.basename(f): sha256[os.path.basename(f)] for f in files}


def _finish(onnx_model: "ModelProto", path: "Union[str, os.PathLike[str]]", metadata: Dict[str, str],
            digests: Dict[str, str], onnx_checker: bool) -> None:
    """Add the metadata (and ``digests``: the source files' SHA-256, :func:`_sources`), check, write atomically."""
    import onnx

    metadata = dict(metadata, source=json.dumps(digests), producer=f"stn-gluon {__version__}")
    params_files = [name for name in digests if name.endswith(".params")]
    if params_files:
        metadata.update(params_file=params_files[0], params_sha256=digests[params_files[0]])
    for key, value in metadata.items():
        onnx_model.metadata_props.add(key=key, value=value)
    if onnx_checker:
        try:
            onnx.checker.check_model(onnx_model, full_check=True)
        except onnx.checker.ValidationError as err:
            raise StnGluonError(f"ONNX export produced an invalid model: {str(err).splitlines()[0]}") from None
    with atomic_path(os.fspath(path)) as tmp:
        onnx.save(onnx_model, tmp)


def export_onnx(model: "Union[mx.gluon.HybridBlock, str, os.PathLike[str]]",
                path: "Union[str, os.PathLike[str]]", input_shape: "Optional[Shape]" = None,
                opset: int = OPSET, class_names: Optional[Sequence[str]] = None,
                onnx_checker: bool = True) -> "Union[str, os.PathLike[str]]":
    """Export an STN classifier to one ONNX file; returns ``path``.

    model: an initialised Gluon ``HybridBlock`` (``input_shape`` (C, H, W) needed
    unless it has ``config["input_shape"]``, as :class:`~stn_gluon.STNNet`
    does), or a saved model: a save dir, an export/checkpoint prefix such as
    ``runs/x/model`` (its latest ``-NNNN.params``) or a ``-symbol.json`` file,
    from ``stn-gluon train`` or ``train-symbol``. opset: one of
    :data:`OPSETS` (default :data:`OPSET`).
    The file is written atomically; see the module docs for what it holds. onnx_checker: run
    ``onnx.checker.check_model(full_check=True)`` on the result first.
    """
    import mxnet as mx
    from onnx import TensorProto, helper

    opset = check_opset(opset)
    graph = _graph_of(model, input_shape)
    meta = graph.meta
    shape = tuple(meta["input_shape"])
    input_name = meta.get("input_name", "data")
    outputs = [graph.logits] + ([graph.theta, graph.warped] if graph.warped is not None else [])
    onnx_model = graph_to_onnx(mx.sym.Group(outputs), graph.params, {input_name: shape}, opset)
    proto = onnx_model.graph
    # Stable output names, plus softmax probabilities.
    mx_names = [o.name for o in proto.output]
    order = [out.name for out in outputs]  # MXNet output names, in our order
    sym_names = [n[:-len("_output")] if n.endswith("_output") else n for n in order]
    wanted = ["logits", "theta", "warped"][:len(outputs)]
    renamed = []
    for new, old in zip(wanted, sym_names):
        src = old if old in mx_names else next(n for n in mx_names if n.startswith(old))
        proto.node.append(helper.make_node("Identity", [src], [new]))
        renamed.append(new)
    proto.node.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    out_shapes = {"logits": ["N", None], "probabilities": ["N", None], "theta": ["N", None],
                  "warped": ["N", shape[0], None, None]}
    del proto.output[:]
    for name in ["logits", "probabilities"] + renamed[1:]:
        proto.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, out_shapes[name]))
    classes = class_names or meta.get("classes") or [str(i) for i in range(10)]
    metadata = dict(
        input_name=input_name, input_shape=json.dumps([None] + list(shape)),
        mean=json.dumps(meta.get("mean", 0.0)), std=json.dumps(meta.get("std", 1.0)),
        classes=json.dumps(list(classes)), digits=json.dumps(is_digit_model(meta)), opset=str(opset),
        transform=str(meta.get("transform") or "none"),
        model=str(meta.get("model", "")), trainer=str(meta.get("source", "")))
    _finish(onnx_model, path, metadata, _sources(graph.files, graph.sha256), onnx_checker)
    return path


def inference_outputs(sym: "mx.sym.Symbol") -> "mx.sym.Symbol":
    """``sym`` with each ``SoftmaxOutput`` loss head (a Module checkpoint's) replaced by what it computes at
    inference, a ``softmax`` of the same name; the label input goes with it. Other outputs are kept as they are."""
    import mxnet as mx

    outputs = [sym[i] for i in range(len(sym.list_outputs()))]
    if not any(o.attr("op_name") == "SoftmaxOutput" for o in outputs):
        return sym
    kept = []
    for out in outputs:
        if out.attr("op_name") != "SoftmaxOutput":
            kept.append(out)
            continue
        data, attrs = out.get_children()[0], out.list_attr()
        if attrs.get("multi_output", "False").lower() in ("true", "1"):
            probs = mx.sym.softmax(data, axis=1, name=out.name)
        elif attrs.get("preserve_shape", "False").lower() in ("true", "1"):
            probs = mx.sym.softmax(data, axis=-1, name=out.name)
        else:  # softmax over everything but the batch, in the data's shape
            probs = mx.sym.reshape_like(mx.sym.softmax(mx.sym.flatten(data), axis=-1), data, name=out.name)
        kept.append(probs)
    return kept[0] if len(kept) == 1 else mx.sym.Group(kept)


def export_graph(model: "Union[str, os.PathLike[str]]", path: "Union[str, os.PathLike[str]]",
                 input_shapes: Dict[str, "Sequence[int]"], opset: int = OPSET,
                 onnx_checker: bool = True) -> "Union[str, os.PathLike[str]]":
    """Export any saved MXNet graph to one ONNX file, its own inputs and outputs kept; returns ``path``.

    model: a save dir, export/checkpoint prefix or ``-symbol.json`` file (the
    latest ``-NNNN.params`` beside it; ``<prefix>.json`` checksums checked if
    present). input_shapes: every data input's shape without the batch
    dimension (``{"image": (3, 64, 64), "flow": (2, 64, 64)}``); each gets a
    dynamic batch dimension. A Module's ``SoftmaxOutput`` head exports as its
    softmax (:func:`inference_outputs`). Metadata: opset, ``inputs`` (JSON name -> shape),
    the source files and the weights' SHA-256.
    """
    from .saved import read_saved  # lazy: imports MXNet; OnnxModel runs without it

    saved = read_saved(os.fspath(model))
    onnx_model = graph_to_onnx(inference_outputs(saved.symbol), saved.params, input_shapes, opset)
    metadata = dict(opset=str(check_opset(opset)),
                    inputs=json.dumps({k: [None] + [int(d) for d in v] for k, v in input_shapes.items()}))
    _finish(onnx_model, path, metadata, _sources(saved.files, saved.sha256), onnx_checker)
    return path


def graph_parity(model: "Union[str, os.PathLike[str]]", onnx_path: "Union[str, os.PathLike[str]]",
                 input_shapes: Dict[str, "Sequence[int]"], batch: int = 16, seed: int = 0) -> float:
    """Max |difference| between MXNet and ONNX Runtime over every output of a graph exported by :func:`export_graph`.

    Random normal inputs ``(batch,) + shape`` for each of ``input_shapes``.
    """
    import mxnet as mx

    from .saved import read_saved  # lazy: imports MXNet; OnnxModel runs without it

    saved = read_saved(os.fspath(model))
    sym = inference_outputs(saved.symbol)
    rng = np.random.RandomState(seed)
    feeds = {name: rng.normal(0, 1, (batch,) + tuple(shape)).astype(np.float32) for name, shape in input_shapes.items()}
    arg_shapes, _, aux_shapes = sym.infer_shape(**{k: v.shape for k, v in feeds.items()})
    args = {}
    for name, shape in zip(sym.list_arguments(), arg_shapes):
        value = feeds.get(name, saved.params.get(name))
        args[name] = mx.nd.array(value) if value is not None else mx.nd.zeros(shape)  # e.g. a loss head's label
    aux = {name: saved.params[name] for name in sym.list_auxiliary_states()}
    want = [o.asnumpy() for o in sym.bind(mx.cpu(), args, aux_states=aux, grad_req="null").forward(is_train=False)]
    session = cpu_session(os.fspath(onnx_path))
    got = session.run(None, feeds)
    if len(got) != len(want):
        raise StnGluonError(f"{onnx_path}: {len(got)} outputs, the MXNet graph has {len(want)}")
    by_name = {o.name: g for o, g in zip(session.get_outputs(), got)}
    names = [n[:-len("_output")] if n.endswith("_output") else n for n in sym.list_outputs()]
    got = [by_name[n] for n in names] if set(names) == set(by_name) else got
    return max(float(np.abs(g - w).max()) for g, w in zip(got, want))
