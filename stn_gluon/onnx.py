"""ONNX export of STN models, and ONNX Runtime inference.

MXNet's exporter (``mx.onnx``) has no converter for ``GridGenerator``,
``BilinearSampler`` or ``SpatialTransformer``; this module registers them.
They map exactly onto ONNX ``AffineGrid`` (opset 20) and ``GridSample``
(``mode="linear"``, ``padding_mode="zeros"``, ``align_corners=1``): MXNet's
target grid is linspace(-1, 1) and samples outside the input are zero, as in
ONNX with those attributes. The only difference is the grid layout, MXNet's
``(N, 2, H, W)`` against ONNX's ``(N, H, W, 2)``, bridged with ``Transpose``.
The projective and thin-plate-spline transforms need nothing more: their grids
are built from ``GridGenerator`` (a homography is the quotient of two affine
grids) and ``FullyConnected`` with a constant matrix (the spline), plus
operators MXNet's exporter already converts.

The exported file:

* is stamped with opset :data:`OPSET` (not whatever the installed onnx
  defaults to) and passes ``onnx.checker.check_model(full_check=True)``;
* lists only the data as graph input (the weights are initializers only, so
  ONNX Runtime can fold constants);
* has a dynamic batch dimension;
* has the outputs ``logits`` ``(N, K)``, ``probabilities`` ``(N, K)`` and, with
  an STN, ``theta`` (``(N, 6)`` for affine and attention, ``(N, 8)`` for
  projective, ``(N, 2K)`` for a thin-plate spline) and ``warped``
  ``(N, C, H_out, W_out)``;
* carries metadata: input name and shape, normalisation, class names, opset,
  transform, the source files with their SHA-256, and (``params_file``,
  ``params_sha256``) the weights it was exported from. Loading a save dir's
  ``model.onnx`` checks those against the save dir's weights
  (:func:`stn_gluon.export.check_onnx_current`): an export left over from
  before a retraining is refused.
"""
import json
import os
import re
import tempfile
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import CheckpointError, StnGluonError
from .io import sha256_file

if TYPE_CHECKING:
    import concurrent.futures

    import mxnet as mx
    from onnx import ModelProto

    from .export import ModelGraph
    from .ops import Shape

__all__ = ["OPSET", "export_onnx", "OnnxModel", "read_metadata"]

OPSET = 20
_registered = False


def _shape_attr(text: Any) -> Tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"-?\d+", str(text)))


def _register_converters() -> None:
    """Register our converters with MXNet's exporter (once)."""
    global _registered
    if _registered:
        return
    from onnx import helper
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph
    from mxnet.onnx.mx2onnx._op_translations._op_translations_opset13 import create_tensor, get_inputs

    def affine_grid_nodes(name: str, theta_in: str, batch_source: str, target_shape: Tuple[int, ...],
                          initializer: Any) -> List[Any]:
        """theta (N, 6) -> ONNX grid (N, H, W, 2); N is read off ``batch_source``'s shape."""
        h, w = target_shape
        create_tensor([-1, 2, 3], name + "_theta_shape", initializer)
        create_tensor([1, h, w], name + "_chw", initializer)
        return [
            helper.make_node("Reshape", [theta_in, name + "_theta_shape"], [name + "_theta"]),
            helper.make_node("Shape", [batch_source], [name + "_n"], start=0, end=1),
            helper.make_node("Concat", [name + "_n", name + "_chw"], [name + "_size"], axis=0),
            helper.make_node("AffineGrid", [name + "_theta", name + "_size"], [name + "_nhw2"],
                             align_corners=1),
        ]

    def grid_sample(name: str, data_in: str, grid_nhw2: str, out: str) -> Any:
        return helper.make_node("GridSample", [data_in, grid_nhw2], [out], name=name, mode="linear",
                                padding_mode="zeros", align_corners=1)

    @MXNetGraph.register("GridGenerator", OPSET)
    def convert_grid_generator(node: Any, **kwargs: Any) -> List[Any]:
        name, inputs, attrs = get_inputs(node, kwargs)
        if attrs.get("transform_type", "affine") != "affine":
            raise StnGluonError("ONNX export: only GridGenerator(transform_type='affine') is supported")
        nodes = affine_grid_nodes(name, inputs[0], inputs[0], _shape_attr(attrs["target_shape"]),
                                  kwargs["initializer"])
        nodes.append(helper.make_node("Transpose", [name + "_nhw2"], [name], perm=(0, 3, 1, 2), name=name))
        return nodes

    @MXNetGraph.register("BilinearSampler", OPSET)
    def convert_bilinear_sampler(node: Any, **kwargs: Any) -> List[Any]:
        name, inputs, _ = get_inputs(node, kwargs)
        return [helper.make_node("Transpose", [inputs[1]], [name + "_grid"], perm=(0, 2, 3, 1)),
                grid_sample(name, inputs[0], name + "_grid", name)]

    @MXNetGraph.register("SpatialTransformer", OPSET)
    def convert_spatial_transformer(node: Any, **kwargs: Any) -> List[Any]:
        name, inputs, attrs = get_inputs(node, kwargs)
        if attrs.get("transform_type", "affine") != "affine" or attrs.get("sampler_type", "bilinear") != "bilinear":
            raise StnGluonError("ONNX export: only affine/bilinear SpatialTransformer is supported")
        nodes = affine_grid_nodes(name, inputs[1], inputs[0], _shape_attr(attrs["target_shape"]),
                                  kwargs["initializer"])
        nodes.append(grid_sample(name, inputs[0], name + "_nhw2", name))
        return nodes

    _registered = True




def _graph_of(model: "Union[mx.gluon.HybridBlock, str, os.PathLike[str]]", input_shape: "Optional[Shape]") -> "ModelGraph":
    """A Gluon block or a saved-model path -> :class:`~stn_gluon.export.ModelGraph`."""
    import mxnet as mx

    from .export import export_block, load_graph

    if isinstance(model, mx.gluon.HybridBlock):
        config = getattr(model, "config", {})
        shape = tuple(input_shape or config.get("input_shape") or ())
        if len(shape) != 3:
            raise StnGluonError("export_onnx: give input_shape=(C, H, W) for this block")
        with tempfile.TemporaryDirectory() as tmp:
            meta = dict(input_shape=list(shape), input_name="data", source="gluon block",
                        transform=config.get("transform"), config=config)
            was_theta = getattr(model, "return_theta", False)
            if was_theta:
                model.return_theta = False
                model._clear_cached_op()
            try:
                export_block(model, os.path.join(tmp, "model"), mx.nd.zeros((1,) + shape), meta=meta)
            finally:
                if was_theta:
                    model.return_theta = True
                    model._clear_cached_op()
            graph = load_graph(os.path.join(tmp, "model"))
            graph.files = []
            return graph
    if not isinstance(model, (str, os.PathLike)):
        raise StnGluonError(f"export_onnx: expected a Gluon HybridBlock or a model path, got {type(model).__name__}")
    return load_graph(os.fspath(model))


def export_onnx(model: "Union[mx.gluon.HybridBlock, str, os.PathLike[str]]",
                path: "Union[str, os.PathLike[str]]", input_shape: "Optional[Shape]" = None,
                opset: int = OPSET, class_names: Optional[Sequence[str]] = None,
                onnx_checker: bool = True) -> "Union[str, os.PathLike[str]]":
    """Export an STN classifier to one ONNX file; returns ``path``.

    model: an initialised Gluon ``HybridBlock`` (``input_shape`` (C, H, W) needed
    unless it has ``config["input_shape"]``, as :class:`~stn_gluon.STNNet`
    does), or a saved model: a save dir, an export/checkpoint prefix such as
    ``runs/x/model`` (its latest ``-NNNN.params``) or a ``-symbol.json`` file,
    from ``stn-gluon train`` or ``train-symbol``.
    The file is written atomically; see the module docs for what it holds. onnx_checker: run
    ``onnx.checker.check_model(full_check=True)`` on the result first.
    """
    import mxnet as mx
    import onnx
    from onnx import TensorProto, helper
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph

    from .io import atomic_path

    if opset < OPSET:
        raise StnGluonError(f"ONNX export needs opset >= {OPSET} (AffineGrid), got {opset}")
    _register_converters()
    graph = _graph_of(model, input_shape)
    meta = graph.meta
    shape = tuple(meta["input_shape"])
    input_name = meta.get("input_name", "data")
    outputs = [graph.logits] + ([graph.theta, graph.warped] if graph.warped is not None else [])
    group = mx.sym.Group(outputs)
    used = set(group.list_inputs()) - {input_name}
    params = {k: v for k, v in graph.params.items() if k in used}
    try:
        proto = MXNetGraph().create_onnx_graph_proto(
            group, params, [(1,) + shape], [TensorProto.FLOAT], opset_version=opset,
            dynamic=True, dynamic_input_shapes=[(None,) + shape])
    except (AttributeError, NotImplementedError) as err:  # an op without a converter
        raise StnGluonError(f"ONNX export: {err}") from None

    # Weights belong in the initializers only: listed as inputs, they block constant folding.
    weights = {t.name for t in proto.initializer}
    inputs = [i for i in proto.input if i.name not in weights]
    del proto.input[:]
    proto.input.extend(inputs)
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
    for vi in proto.input:
        if vi.name == input_name:
            vi.type.tensor_type.shape.dim[0].dim_param = "N"

    onnx_model = helper.make_model(proto, opset_imports=[helper.make_opsetid("", opset)],
                                   producer_name="stn-gluon")
    onnx_model.ir_version = min(onnx_model.ir_version, 10)  # what ONNX Runtime >= 1.17 reads
    from . import __version__
    classes = class_names or meta.get("classes") or [str(i) for i in range(10)]
    metadata = dict(
        input_name=input_name, input_shape=json.dumps([None] + list(shape)),
        mean=json.dumps(meta.get("mean", 0.0)), std=json.dumps(meta.get("std", 1.0)),
        classes=json.dumps(list(classes)), opset=str(opset), transform=str(meta.get("transform") or "none"),
        model=str(meta.get("model", "")), trainer=str(meta.get("source", "")),
        source=json.dumps({os.path.basename(f): sha256_file(f) for f in graph.files}),
        producer=f"stn-gluon {__version__}")
    params_files = [f for f in graph.files if f.endswith(".params")]
    if params_files:
        metadata.update(params_file=os.path.basename(params_files[0]), params_sha256=sha256_file(params_files[0]))
    for key, value in metadata.items():
        onnx_model.metadata_props.add(key=key, value=value)
    if onnx_checker:
        try:
            onnx.checker.check_model(onnx_model, full_check=True)
        except onnx.checker.ValidationError as err:
            raise StnGluonError(f"ONNX export produced an invalid model: {str(err).splitlines()[0]}") from None
    with atomic_path(os.fspath(path)) as tmp:
        onnx.save(onnx_model, tmp)
    return path


def read_metadata(onnx_model: "ModelProto") -> Dict[str, Any]:
    """The metadata :func:`export_onnx` wrote, decoded -> dict."""
    props = {p.key: p.value for p in onnx_model.metadata_props}
    out = dict(props)
    for key in ("input_shape", "mean", "std", "classes", "source"):
        if key in props:
            out[key] = json.loads(props[key])
    return out


class OnnxModel:
    """An exported ``.onnx`` STN classifier run by ONNX Runtime.

    ``run(x)``: ``x`` float32 ``(N, C, H, W)``, normalised as the metadata says;
    returns a dict of the model's outputs (``logits``, ``probabilities``, and
    ``theta``, ``warped`` for STN models) as NumPy arrays.

    threads: CPU threads to use (default: all). mode: ``"split"`` runs a
    single-threaded session and splits a large batch into one chunk per
    thread, run concurrently (this model's small convolutions parallelise
    poorly inside ONNX Runtime); ``"intra"`` gives ONNX Runtime's own
    intra-op thread pool the threads instead. Either way no ONNX Runtime
    thread spins while it waits (``session.intra_op.allow_spinning`` and
    ``session.inter_op.allow_spinning`` are ``"0"``): a spinning pool lost
    two thirds of its speed beside one busy process (issue 19), while split
    mode's threads wait in the kernel and keep their fair share.
    """

    MIN_CHUNK = 16

    def __init__(self, path: str, threads: Optional[int] = None, mode: str = "split",
                 outputs: Optional[Sequence[str]] = None):
        import onnxruntime as ort

        if not os.path.isfile(path):
            raise CheckpointError(f"{path}: file not found")
        if mode not in ("split", "intra"):
            raise StnGluonError(f"OnnxModel mode must be 'split' or 'intra', got {mode!r}")
        self.threads = max(1, int(threads or os.cpu_count() or 1))
        self.mode = mode
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = 1 if mode == "split" else self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
            options.add_session_config_entry(key, "0")
        self._pool: "Optional[concurrent.futures.ThreadPoolExecutor]" = None
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own exception types for unreadable files
            raise CheckpointError(f"{path}: not a loadable ONNX model ({str(err).splitlines()[0][:200]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.meta = dict(meta)
        for key in ("input_shape", "mean", "std", "classes", "source"):
            if key in meta:
                self.meta[key] = json.loads(meta[key])
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise CheckpointError(f"{path}: expected one (N, C, H, W) input, the model has "
                                  f"{[(i.name, i.shape) for i in inputs]}")
        self.input_name = inputs[0].name
        dims = inputs[0].shape[1:]
        if "input_shape" in self.meta:
            dims = self.meta["input_shape"][1:]
        if not all(isinstance(d, int) for d in dims):
            raise CheckpointError(f"{path}: the input's C, H, W are not fixed ({inputs[0].shape})")
        self.input_shape = tuple(dims)
        available = [o.name for o in self.session.get_outputs()]
        self.outputs = [o for o in (outputs or available) if o in available]
        if mode == "split" and self.threads > 1:
            import concurrent.futures
            self._pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="ort")
        self.mean = float(self.meta.get("mean", 0.0))
        self.std = float(self.meta.get("std", 1.0))
        self.classes = list(self.meta.get("classes", []))

    def describe_threads(self) -> str:
        """One line: the threads this model runs on."""
        if self.mode == "split":
            return (f"CPU threads: ONNX Runtime, {self.threads} single-threaded runs of one batch's chunks at once "
                    "(split mode), no spinning")
        return f"CPU threads: ONNX Runtime intra-op pool of {self.threads}, no spinning"

    def _run(self, x: np.ndarray) -> List[np.ndarray]:
        return self.session.run(self.outputs, {self.input_name: x})

    def run(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise StnGluonError(f"input must be (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        chunks = min(self.threads, len(x) // self.MIN_CHUNK) if self._pool is not None else 1
        if chunks <= 1:
            return dict(zip(self.outputs, self._run(x)))
        assert self._pool is not None  # chunks > 1 only with a pool
        parts = list(self._pool.map(self._run, np.array_split(x, chunks)))
        return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(self.outputs)}


from .quantize import quantize_onnx  # noqa: E402  int8 copies of an export (stn_gluon.quantize), also here
