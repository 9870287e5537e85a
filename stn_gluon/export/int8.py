"""int8: static quantization of an exported ONNX model with ONNX Runtime's tools (``onnxruntime.quantization``).

:func:`quantize_onnx` writes a copy of an ``.onnx`` file from
:func:`stn_gluon.export.onnx.export_onnx` whose convolutions and dense layers run in
int8 (weights int8, activations uint8: ONNX Runtime's fast U8S8 kernels on
x86; the QOperator format, so the graph holds ``QLinearConv`` / ``QGemm``
directly). Kept in float, so that the geometry stays exact:

* the sampler (``GridSample``), the grid (``AffineGrid`` or the ops that
  build a projective/spline grid) and everything it is computed from: the
  localization net, so theta, the grid and the ``warped`` output are exactly
  fp32's (:attr:`Int8Settings.float_localization`; it costs nothing
  measurable: the localization nets are small beside the classifiers), and
  the elementwise ops right after the sampler (the fill shift);
* convolutions with fewer than :attr:`Int8Settings.min_conv_channels` input
  channels (a 1- or 3-channel input convolution is slower in int8 than in
  float: nothing to gain, and the quantize step costs), unless zero input
  channels make it fit ONNX Runtime's fast int8 kernel
  (:attr:`Int8Settings.pad_channels_to`: 3 -> 4 channels where the
  convolution has at least 16 outputs, a multiple of 8).

Before quantizing, the graph goes through ONNX Runtime's pre-processing
(``quant_pre_process``: batch norms folded into the convolutions, shapes
inferred), and ``MaxPool -> Relu`` in the quantized part becomes the
equivalent ``Relu -> MaxPool``: ONNX Runtime's quantizer drops a Relu after
a quantized op, which is only right where the op's output range starts at 0,
and a MaxPool's does not (STNNet lost 10 points of accuracy to it). The
calibration inputs (activation ranges: 99.999th percentiles) are an array
of inputs, or by default images of the model's own training data (the
dataset its model description names). :func:`compare_speed` times the fp32
and int8 files side by side; :func:`int8_verdict` says when int8 is not worth
it. ``stn-gluon export-onnx --quantize int8`` does all three
(:func:`quantize_export`).
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Union

import numpy as np

from .._runtime.errors import CheckpointError, StnGluonError
from .._runtime.flags import option
from .._runtime.timing import Clock, infer_input, interleaved_rates, ratio
from .onnx_io import cpu_session

__all__ = ["QuantizeConfig", "Int8Settings", "INT8", "quantize_onnx", "calibration_inputs", "compare_speed",
           "int8_verdict", "quantize_export", "float_ops", "int8_path", "described_dataset",
           "agreement"]

PathLike = Union[str, "os.PathLike[str]"]

#: With ``float_localization=False``: the ops that end the grid computation, walking up from the sampler's grid
#: input (the localization net's last nonlinearity); everything between it and the sampler stays float.
_GRID_STOPS = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "Softmax", "MaxPool", "AveragePool",
               "GlobalAveragePool", "Elu", "Selu", "PRelu", "HardSigmoid"}
#: Elementwise ops right after a sampler (the fill shift around it): float, like the sampler.
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Identity"}
#: Ops that stay float after a thin (float) convolution, up to the next quantized op.
_AFTER_THIN_CONV = {"Relu", "MaxPool", "AveragePool", "Clip"}
#: Ops that sample or build a sampling grid: always float.
GRID_OPS = ("GridSample", "AffineGrid")


@dataclass
class QuantizeConfig:
    """The ``export-onnx`` flags of int8 export (:func:`quantize_export`)."""
    quantize: Optional[str] = option(None, "also write a statically quantized copy, <output>-int8.onnx, after "
                                           "timing it against fp32 (refused where int8 is slower)",
                                     choices=("int8",))
    calibration: Optional[str] = option(None, "--quantize: .npy of calibration inputs (N, C, H, W), normalised as "
                                              "the model expects; default: images of the model's training data "
                                              "(the dataset its model description names)", metavar="NPY")
    calibration_count: int = option(256, "--quantize: training images used for calibration", minimum=1)
    data_dir: Optional[str] = option(None, "--quantize: folder with the four MNIST IDX files the calibration images "
                                           "come from; none: $STN_GLUON_DATA, ~/.mxnet/datasets/mnist, then the "
                                           "embedded sample")
    int8_if_slower: bool = option(False, "--quantize: write the int8 copy even where it runs slower than fp32 "
                                         "(a warning instead of a refusal)")


@dataclass(frozen=True)
class Int8Settings:
    """How :func:`quantize_onnx` quantizes (ONNX Runtime's ``quantize_static`` options, and which nodes).

    quant_format: ``"QOperator"`` (``QLinearConv``...) or ``"QDQ"``; activations / weights:
    ``"uint8"`` or ``"int8"``; per_channel / reduce_range / calibrate_method /
    activation_symmetric / weight_symmetric: as in ``quantize_static``;
    min_conv_channels: convolutions with fewer input channels stay float;
    pad_channels_to: a convolution whose input channels are not a multiple of
    this, and whose output channels suit ONNX Runtime's symmetric int8
    convolution kernel (at least 16, a multiple of 8), gets zero input
    channels added (a float ``Pad`` in front, zero weights) so that it runs in
    that kernel, the fast one (``0``: no padding);
    float_warped: the elementwise ops after a sampler stay float;
    float_localization: the whole localization net stays float (``False``: only
    the ops after its last nonlinearity); op_types: the op types quantized.
    """
    quant_format: str = "QOperator"
    activations: str = "uint8"
    weights: str = "int8"
    per_channel: bool = True
    reduce_range: bool = False
    activation_symmetric: bool = False
    weight_symmetric: bool = True
    float_warped: bool = True
    float_localization: bool = True
    calibrate_method: str = "Percentile"
    min_conv_channels: int = 4
    pad_channels_to: int = 4
    op_types: Sequence[str] = ("Conv", "Gemm", "MatMul", "Add", "Relu", "MaxPool", "GlobalAveragePool", "Flatten")

    def describe(self) -> str:
        return (f"{self.quant_format}, {self.activations} activations / {self.weights} weights, "
                f"{'per-channel' if self.per_channel else 'per-tensor'}, {self.calibrate_method} calibration, "
                f"convolutions with < {self.min_conv_channels} input channels in float"
                + (f", input channels padded to a multiple of {self.pad_channels_to} where that makes a "
                   f"convolution int8-ready" if self.pad_channels_to else ""))


#: The settings :func:`quantize_onnx` uses by default (measured best on this project's models: docs/export-onnx.md).
INT8 = Int8Settings()


def int8_path(fp32_path: PathLike) -> str:
    """Where the int8 copy of ``fp32_path`` goes: ``model.onnx`` -> ``model-int8.onnx``."""
    stem = os.fspath(fp32_path)
    return (stem[:-5] if stem.endswith(".onnx") else stem) + "-int8.onnx"


def _load_onnx(path: PathLike) -> Any:
    import onnx

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: file not found")
    try:
        return onnx.load(path)
    except Exception as err:  # protobuf's DecodeError and friends: a damaged or foreign file
        raise CheckpointError(f"{path}: not a readable ONNX model ({str(err).splitlines()[0][:160]})") from None


def _input_of(model: Any, path: str) -> tuple:
    """``(name, (C, H, W))`` of the model's one data input."""
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    dims = [int(d.dim_value) if d.HasField("dim_value") else 0 for d in inputs[0].type.tensor_type.shape.dim] \
        if len(inputs) == 1 else []
    if len(dims) != 4 or not all(dims[1:]):
        raise StnGluonError(f"{path}: int8 quantization needs one (N, C, H, W) input with fixed C, H, W, "
                            f"the model has {[i.name for i in inputs]}")
    return inputs[0].name, tuple(dims[1:])


def _metadata(model: Any) -> Dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def described_dataset(prefix: PathLike) -> Optional[str]:
    """The training data's name in the model description ``<prefix>.json`` (``runs/x/model`` or
    ``runs/x/model.onnx``: ``runs/x/model.json``), or ``None`` where it has none."""
    stem = os.fspath(prefix)
    stem = stem[:-5] if stem.endswith(".onnx") else stem
    try:
        with open(stem + ".json") as f:
            name = json.load(f).get("dataset")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name else None


def calibration_inputs(src: PathLike, count: int = 256, data_dir: Optional[str] = None,
                       dataset: Optional[str] = None, seed: int = 0) -> np.ndarray:
    """``count`` training images of the model ``src`` was trained on, normalised: ``float32 (count, C, H, W)``.

    dataset: the data's name (default: what the model description beside
    ``src``, ``<stem>.json``, names; its recipe's dataset). A seeded random
    subset of the training split, read as ``stn-gluon train`` reads it.
    """
    from ..data.mnist import normalize
    from ..data.distortions import load_dataset

    path = os.fspath(src)
    meta = _metadata(_load_onnx(path))
    dataset = dataset or described_dataset(path)
    if not dataset:
        raise StnGluonError(f"{path}: no model description beside it names its training data to calibrate "
                            f"with; give calibration (inputs as an array or .npy)", params=("calibration",))
    data = load_dataset(dataset, data_dir)
    images = data.train_images
    pick = np.sort(np.random.RandomState(seed).choice(len(images), min(count, len(images)), replace=False))
    mean, std = (float(json.loads(meta[k])) if k in meta else d for k, d in (("mean", 0.0), ("std", 1.0)))
    return normalize(images[pick], mean, std)


def _check_calibration(calibration: Union[np.ndarray, PathLike], shape: tuple, path: str) -> np.ndarray:
    if isinstance(calibration, (str, os.PathLike)):
        where = os.fspath(calibration)
        if not os.path.isfile(where):
            raise StnGluonError(f"calibration: {where}: file not found", params=("calibration",))
        try:
            calibration = np.load(where, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise StnGluonError(f"calibration: {where}: not a .npy array ({str(err).splitlines()[0][:120]})",
                                params=("calibration",)) from None
    x = np.asarray(calibration)
    if x.ndim != 4 or tuple(x.shape[1:]) != shape or len(x) == 0:
        raise StnGluonError(f"calibration: expected inputs (N, {', '.join(map(str, shape))}) with N >= 1 for "
                            f"{path}, got {x.shape}", params=("calibration",))
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise StnGluonError(f"calibration: expected finite numbers, got {x.dtype} with "
                            f"{'non-finite values' if np.issubdtype(x.dtype, np.number) else 'non-numbers'}",
                            params=("calibration",))
    return np.ascontiguousarray(x, dtype=np.float32)


def _consumers(graph: Any) -> Dict[str, List[Any]]:
    """``{tensor name: [nodes that read it]}`` of an ONNX graph."""
    out: Dict[str, List[Any]] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _grid_nodes(graph: Any, float_output: bool = True, whole_localization: bool = False) -> Set[str]:
    """Names of the nodes of the sampling: walking up from each sampler's grid input to the localization net's
    last nonlinearity (:data:`_GRID_STOPS`) or the graph's inputs (the grid computation), and down from its
    output through elementwise ops (the fill shift: the warped image stays float, as it is returned)."""
    producer = {out: node for node in graph.node for out in node.output}
    consumers = _consumers(graph)
    samplers = [node for node in graph.node if node.op_type == "GridSample"]
    found: Set[str] = set()
    todo = [node.input[1] for node in samplers]
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.name in found or (node.op_type in _GRID_STOPS and not whole_localization):
            continue
        found.add(node.name)
        todo.extend(node.input)
    down = [c for node in samplers for c in consumers.get(node.output[0], [])] if float_output else []
    while down:
        node = down.pop()
        if node.op_type in _ELEMENTWISE and node.name not in found:
            found.add(node.name)
            down.extend(c for out in node.output for c in consumers.get(out, []))
    return found


def _relu_before_pool(model: Any, skip: "frozenset[str] | Set[str]" = frozenset()) -> int:
    """Rewrite ``MaxPool -> Relu`` as ``Relu -> MaxPool`` (the same function: both are monotonic); returns how many.

    ONNX Runtime's quantizer drops a Relu that follows a quantized op, counting on
    the producer's output range to start at 0; a MaxPool reuses its input's
    range (negative values included), so after ``Conv -> MaxPool -> Relu`` (the
    LeNet order) the Relu would be lost. Before the MaxPool it fuses with the
    convolution. Pools named in ``skip`` (kept float) keep their order: a Relu
    after a float MaxPool stops ONNX Runtime from moving the quantize step up,
    before the pooling, onto the 4x larger tensor.
    """
    graph = model.graph
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    swapped, moved = 0, set()
    nodes = list(graph.node)
    for pool in list(nodes):
        users = consumers.get(pool.output[0], []) if pool.op_type == "MaxPool" else []
        if (len(pool.output) != 1 or len(users) != 1 or users[0].op_type != "Relu" or pool.output[0] in outputs
                or pool.name in skip):
            continue
        relu = users[0]
        source, middle, result = pool.input[0], pool.output[0], relu.output[0]
        relu.input[0], relu.output[0] = source, middle
        pool.input[0], pool.output[0] = middle, result
        nodes.remove(relu)
        nodes.insert(nodes.index(pool), relu)
        moved.add(middle)
        swapped += 1
    del graph.node[:]
    graph.node.extend(nodes)
    # the pool's old output now holds the Relu's, unpooled: its recorded shape is wrong (ORT would warn)
    kept = [vi for vi in graph.value_info if vi.name not in moved]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return swapped


def _name_nodes(model: Any) -> None:
    """Give every unnamed node a unique name (quantize_static excludes nodes by name)."""
    taken = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


#: Output channels ONNX Runtime's symmetric int8 convolution kernel (MLAS ``ConvSym``) needs: at least, multiple of.
_SYM_CONV_OUTPUTS = (16, 8)


def _pad_input_channels(model: Any, settings: Int8Settings, grid: Set[str]) -> int:
    """Pad the input channels of convolutions up to a multiple of ``settings.pad_channels_to``; returns how many.

    ONNX Runtime runs a uint8/int8 ``QLinearConv`` with symmetric weights in
    its fast kernel only where the input channels are a multiple of 4 (and the
    outputs at least 16, a multiple of 8); a 3-channel input convolution falls
    back to a slow path (slower than float: that is why thin convolutions
    stayed float). A float ``Pad`` adds zero channels to its input, and zero
    weights are added to match: the same function, now int8-ready. Not done
    in the grid computation (float anyway) or where the output channels do
    not suit the kernel.
    """
    import onnx
    from onnx import numpy_helper

    step = settings.pad_channels_to
    if step < 2:
        return 0
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    least, multiple = _SYM_CONV_OUTPUTS
    nodes, padded = list(graph.node), 0
    for node in list(nodes):
        if (node.op_type != "Conv" or node.name in grid or _group(node) != 1 or len(node.input) < 2
                or node.input[1] not in inits):
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        extra = -w.shape[1] % step
        if w.ndim != 4 or not extra or w.shape[0] < least or w.shape[0] % multiple:
            continue
        w = np.concatenate([w, np.zeros((w.shape[0], extra) + w.shape[2:], w.dtype)], axis=1)
        stem = f"{node.name}_channel_pad"
        graph.initializer.extend([numpy_helper.from_array(w, f"{stem}_weight"),
                                  numpy_helper.from_array(np.array([0, 0, 0, 0, 0, extra, 0, 0], np.int64),
                                                          f"{stem}_pads")])
        pad = onnx.helper.make_node("Pad", [node.input[0], f"{stem}_pads"], [f"{stem}_output"], name=stem,
                                    mode="constant")
        node.input[0], node.input[1] = f"{stem}_output", f"{stem}_weight"
        nodes.insert(nodes.index(node), pad)
        padded += 1
    if padded:
        del graph.node[:]
        graph.node.extend(nodes)
        used = {name for node in nodes for name in node.input}
        unused = [t for t in graph.initializer if t.name not in used]  # the unpadded weights
        for t in unused:
            graph.initializer.remove(t)
    return padded


def _float_nodes(model: Any, settings: Int8Settings, grid: Set[str]) -> List[str]:
    """The nodes kept float: the grid computation, thin convolutions and the activations and pooling right
    after them (quantized there, a pooling would run on the 4x larger tensor, in a slower layout)."""
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    keep = set(grid)
    consumers = _consumers(model.graph)
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in shapes:
            if shapes[node.input[1]][1] * max(1, _group(node)) < settings.min_conv_channels:
                keep.add(node.name)
                after = consumers.get(node.output[0], [])
                while len(after) == 1 and after[0].op_type in _AFTER_THIN_CONV:
                    keep.add(after[0].name)
                    after = consumers.get(after[0].output[0], [])
    return sorted(keep)


def _group(node: Any) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "group"), 1)


def float_ops(path: PathLike) -> Dict[str, List[str]]:
    """``{op_type: [input dtypes]}`` of the samplers and grid ops in an ONNX file (``"float"`` when float)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(_load_onnx(path))
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(model.graph.value_info) + list(model.graph.input)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    out: Dict[str, List[str]] = {}
    for node in model.graph.node:
        if node.op_type in GRID_OPS:
            out.setdefault(node.op_type, []).extend(
                onnx.helper.tensor_dtype_to_np_dtype(types[i]).name if i in types else "unknown"
                for i in node.input if i)
    return out


class _Reader:
    """Feeds calibration batches to ``quantize_static``."""

    def __init__(self, name: str, x: np.ndarray, batch: int = 64):
        self.batches = iter([{name: x[i:i + batch]} for i in range(0, len(x), batch)])

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        return next(self.batches, None)


def quantize_onnx(src: PathLike, dst: PathLike, calibration: Union[np.ndarray, PathLike, None] = None, *,
                  data_dir: Optional[str] = None, count: int = 256, settings: Int8Settings = INT8) -> str:
    """Write a statically quantized (int8) copy of the ONNX model ``src`` to ``dst``; returns ``dst``.

    calibration: inputs ``(N, C, H, W)`` normalised as the model expects (an
    array or a ``.npy`` path), or ``None``: ``count`` images of the model's
    training data (:func:`calibration_inputs`, ``data_dir`` as in
    ``stn-gluon train``). The sampler and the grid computation stay float (see
    the module docs); the model keeps its inputs, outputs and metadata, plus
    ``quantization``. Written atomically.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    from .._runtime.files import atomic_path

    src, dst = os.fspath(src), os.fspath(dst)
    model = _load_onnx(src)
    name, shape = _input_of(model, src)
    x = (calibration_inputs(src, count, data_dir) if calibration is None
         else _check_calibration(calibration, shape, src))
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    with tempfile.TemporaryDirectory(prefix="stn-int8-") as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        try:
            quant_pre_process(src, pre, skip_symbolic_shape=True)
        except Exception as err:  # ORT's optimizer or onnx's shape inference refusing the graph
            raise StnGluonError(f"{src}: ONNX Runtime's quantization pre-processing failed "
                                f"({str(err).splitlines()[0][:200]})") from None
        prepared = onnx.load(pre)
        _name_nodes(prepared)
        grid = _grid_nodes(prepared.graph, settings.float_warped, settings.float_localization)
        _pad_input_channels(prepared, settings, grid)  # adds no grid node: the grid stays the same
        keep = _float_nodes(prepared, settings, grid)
        _relu_before_pool(prepared, set(keep))
        onnx.save(prepared, pre)
        out = os.path.join(tmp, "int8.onnx")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print their progress
                quantize_static(pre, out, _Reader(name, x), quant_format=getattr(QuantFormat, settings.quant_format),
                                activation_type=types[settings.activations], weight_type=types[settings.weights],
                                per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                                calibrate_method=getattr(CalibrationMethod, settings.calibrate_method),
                                op_types_to_quantize=list(settings.op_types), nodes_to_exclude=keep,
                                extra_options=dict(ActivationSymmetric=settings.activation_symmetric,
                                                   WeightSymmetric=settings.weight_symmetric))
        except Exception as err:  # ORT's quantizer raises plain exceptions on graphs it cannot handle
            raise StnGluonError(f"{src}: ONNX Runtime's quantization failed ({str(err).splitlines()[0][:200]})") \
                from None
        quantized = onnx.load(out)
        del quantized.metadata_props[:]
        for key, value in _metadata(model).items():
            quantized.metadata_props.add(key=key, value=value)
        quantized.metadata_props.add(key="quantization", value=f"int8 ({settings.describe()}; "
                                                               f"{len(x)} calibration inputs)")
        with atomic_path(dst) as tmp_dst:
            onnx.save(quantized, tmp_dst)
    return dst


def compare_speed(fp32: PathLike, int8: PathLike, batch: int = 64, seconds: float = 0.3, repeats: int = 5,
                  threads: int = 1, x: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Throughput of two ONNX files in ONNX Runtime sessions of ``threads`` intra-op threads, timed in turns
    in this process.

    Returns ``{"fp32", "int8"}``: wall-clock images/s; ``ratio``: int8/fp32 of
    the wall clock, ``cpu_ratio``: of the calling thread's CPU time per image
    (steady on a shared machine; meaningful with ``threads=1``); both medians
    of the per-round ratios. x: the input batch
    (default: standard normal ``(batch, C, H, W)``).
    """

    sessions = {"fp32": cpu_session(os.fspath(fp32), threads), "int8": cpu_session(os.fspath(int8), threads)}
    inp = sessions["fp32"].get_inputs()[0]
    if x is None:
        x = infer_input(batch, tuple(inp.shape[1:]))
    first = sessions["fp32"].get_outputs()[0].name
    feed = {inp.name: x}
    clocks = {k: Clock(functools.partial(s.run, [first], feed)) for k, s in sessions.items()}
    rounds: Dict[str, List[float]] = {}
    rates = interleaved_rates(clocks, len(x), seconds, repeats, rounds=rounds)
    return dict(rates, ratio=ratio(rounds, "int8", "fp32") or 0.0,
                cpu_ratio=ratio({k: c.cpu for k, c in clocks.items()}, "int8", "fp32") or 0.0)


def int8_verdict(speed: Dict[str, float], batch: int = 64) -> Optional[str]:
    """Why int8 is not worth it (one line), or ``None`` where it runs at least as fast as fp32.

    speed: :func:`compare_speed`'s result; judged by ``cpu_ratio`` (CPU time
    per image: what the model costs, whatever else runs on the machine).
    """
    if speed["cpu_ratio"] >= 1.0:
        return None
    return (f"int8 runs at {speed['cpu_ratio']:.2f}x the speed of fp32 on this model (CPU time per image, batch "
            f"{batch}, one thread; wall clock {speed['int8']:,.0f} against {speed['fp32']:,.0f} images/s): int8 "
            f"does not pay on layers this small")


def agreement(fp32: PathLike, int8: PathLike, x: np.ndarray) -> Dict[str, float]:
    """How the int8 model's answers on ``x`` compare with fp32's: the share of equal top-1 classes and the
    largest logit difference."""

    a, b = cpu_session(os.fspath(fp32)), cpu_session(os.fspath(int8))
    name = a.get_inputs()[0].name
    la, lb = a.run(["logits"], {name: x})[0], b.run(["logits"], {name: x})[0]
    return dict(top1_agreement=float((la.argmax(1) == lb.argmax(1)).mean()),
                max_logit_diff=float(np.abs(la - lb).max()))


def quantize_export(fp32: PathLike, config: QuantizeConfig, dataset: Optional[str] = None,
                    echo: Callable[[str], Any] = print, dst: Optional[PathLike] = None,
                    speed: Optional[Dict[str, float]] = None) -> Optional[str]:
    """``export-onnx --quantize int8``: quantize ``fp32``, time both, write ``<fp32 stem>-int8.onnx`` or refuse.

    Refused (:class:`~stn_gluon._runtime.errors.StnGluonError`, one line with the measured
    ratio; nothing written) where int8 runs slower than fp32, unless
    ``config.int8_if_slower`` (then a warning). dataset: the training data to
    calibrate with when ``config.calibration`` is not set (default: what the
    description beside ``fp32`` names). speed: a measurement to use
    instead of timing (as :func:`compare_speed` returns it). Returns the path written.
    """
    from .._runtime.files import atomic_path

    if config.quantize is None:
        return None
    dst = os.fspath(dst or int8_path(fp32))
    with atomic_path(dst) as tmp:
        if config.calibration is not None:
            x = _check_calibration(config.calibration, _input_of(_load_onnx(fp32), os.fspath(fp32))[1],
                                   os.fspath(fp32))
        else:
            x = calibration_inputs(fp32, config.calibration_count, config.data_dir, dataset)
        quantize_onnx(fp32, tmp, x)
        speed = speed or compare_speed(fp32, tmp)
        agree = agreement(fp32, tmp, x)
        echo(f"int8 against fp32 (ONNX Runtime, batch 64, one thread, timed in turns): {speed['int8']:,.0f} against "
             f"{speed['fp32']:,.0f} images/s ({speed['ratio']:.2f}x; CPU time per image {speed['cpu_ratio']:.2f}x); "
             f"same top-1 class on "
             f"{100 * agree['top1_agreement']:.1f} % of {len(x)} calibration inputs")
        why = int8_verdict(speed)
        if why and not config.int8_if_slower:
            raise StnGluonError(f"int8 refused: {why}; the fp32 model is the one to use "
                                f"(--int8-if-slower writes it anyway)", params=("int8_if_slower",))
        if why:
            echo(f"warning: {why}")
    echo(f"Wrote {dst} (int8: {INT8.describe()})")
    return dst
