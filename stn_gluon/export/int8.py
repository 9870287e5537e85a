"""int8: static quantization of an exported ONNX model with ONNX Runtime's tools (``onnxruntime.quantization``).

:func:`quantize_onnx` writes a copy of an ``.onnx`` file from
:func:`stn_gluon.export.onnx.export_onnx` whose convolutions and dense layers run in
int8 (weights int8, activations uint8: ONNX Runtime's fast U8S8 kernels on
x86; the QOperator format, so the graph holds ``QLinearConv`` / ``QGemm``
directly), with weights on 7 bits (``reduce_range``) so that the result is
right on every x86-64 CPU: without VNNI, ONNX Runtime's x86 int8 kernels
add uint8 x int8 products in pairs into 16-bit sums, which saturate for
full-range weights (255 x 127 x 2 > 32767) and stay exact for 7-bit ones
(255 x 64 x 2 < 32767). Full-range weights (:data:`INT8_VNNI`,
``export-onnx --int8-target vnni``) are right only on CPUs with VNNI
(``avx512_vnni``, ``avx_vnni``) or AMX; the file says so in its metadata
(``int8_target``), and :class:`~stn_gluon.onnx.OnnxModel` warns when such a
file runs on a CPU without (:func:`cpu_int8_features`). Kept in float, so
that the geometry stays exact:

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
it; :func:`agreement` measures how far int8 is from fp32 on held-back inputs
and :func:`int8_error_verdict` says when that is too far. ``stn-gluon
export-onnx --quantize int8`` does all of it (:func:`quantize_export`).
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import platform
import re
import tempfile
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from .._runtime.errors import CheckpointError, StnGluonError
from .._runtime.flags import option, validate_fields
from .._runtime.timing import Clock, infer_input, interleaved_rates, ratio
from .._runtime.files import atomic_path
from .onnx_io import cpu_session

__all__ = ["QuantizeConfig", "Int8Settings", "INT8", "INT8_VNNI", "INT8_TARGETS", "quantize_onnx",
           "calibration_inputs", "calibration_data", "compare_speed", "int8_verdict", "int8_error_verdict",
           "quantize_export", "float_ops", "int8_path", "described_dataset", "agreement", "cpu_int8_features",
           "describe_cpu", "target_warning", "file_int8_target", "VNNI_FLAGS", "MAX_ERROR", "MAX_ACCURACY_DROP"]

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
#: The default bounds of :func:`int8_error_verdict`: the largest logit error as a share of fp32's largest
#: |logit|, and the accuracy drop in points (the saturating kernels measured 21 % on a test network, issue 28).
MAX_ERROR, MAX_ACCURACY_DROP = 0.1, 1.0


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
    int8_target: str = option("any", "--quantize: the CPUs the int8 copy is for: any (7-bit weights, right on "
                                     "every x86-64 CPU) or vnni (full 8-bit weights, finer, for CPUs with VNNI or "
                                     "AMX only: on others ONNX Runtime's 16-bit sums SATURATE and the outputs are "
                                     "wrong; recorded in the file, predict and serve warn there)",
                              choices=("any", "vnni"))
    check_count: int = option(256, "--quantize: held-back inputs int8 is checked against fp32 on (training images "
                                   "besides the calibration ones; with --calibration, the last quarter of it)",
                              minimum=1)
    int8_max_error: float = option(MAX_ERROR, "--quantize: refuse int8 where its largest logit error on the "
                                              "held-back inputs exceeds this share of fp32's largest |logit|",
                                   minimum=0)
    int8_max_accuracy_drop: float = option(MAX_ACCURACY_DROP, "--quantize: refuse int8 where its accuracy on the "
                                                              "held-back inputs is more than this many points below "
                                                              "fp32's (where labels exist)", minimum=0)


@dataclass(frozen=True)
class Int8Settings:
    """How :func:`quantize_onnx` quantizes (ONNX Runtime's ``quantize_static`` options, and which nodes).

    quant_format: ``"QOperator"`` (``QLinearConv``...) or ``"QDQ"``; activations / weights:
    ``"uint8"`` or ``"int8"``; per_channel / reduce_range / calibrate_method /
    activation_symmetric / weight_symmetric: as in ``quantize_static``
    (reduce_range: weights on 7 bits, which ONNX Runtime's x86 kernels without
    VNNI need: see :attr:`target`);
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
    reduce_range: bool = True
    activation_symmetric: bool = False
    weight_symmetric: bool = True
    float_warped: bool = True
    float_localization: bool = True
    calibrate_method: str = "Percentile"
    min_conv_channels: int = 4
    pad_channels_to: int = 4
    op_types: Sequence[str] = ("Conv", "Gemm", "MatMul", "Add", "Relu", "MaxPool", "GlobalAveragePool", "Flatten")

    @property
    def target(self) -> str:
        """The x86 CPUs the result is right on: ``"any"``, or ``"vnni"`` (VNNI or AMX only).

        Without VNNI, ONNX Runtime's x86 kernels multiply uint8 activations by
        int8 weights with ``vpmaddubsw``, which adds the products in pairs into
        a saturating 16-bit sum: 255 x 127 x 2 overflows it, 255 x 64 x 2 (7-bit
        weights, ``reduce_range``) does not. uint8 weights take MLAS's U8U8
        kernels, which widen to 16 bits before adding.
        """
        return "vnni" if self.weights == "int8" and not self.reduce_range else "any"

    def describe(self) -> str:
        return (f"{self.quant_format}, {self.activations} activations / {self.weights} weights"
                + (" on 7 bits (reduce_range)" if self.reduce_range else "")
                + f" for {'every x86-64 CPU' if self.target == 'any' else 'CPUs with VNNI or AMX only'}, "
                f"{'per-channel' if self.per_channel else 'per-tensor'}, {self.calibrate_method} calibration, "
                f"convolutions with < {self.min_conv_channels} input channels in float"
                + (f", input channels padded to a multiple of {self.pad_channels_to} where that makes a "
                   f"convolution int8-ready" if self.pad_channels_to else ""))


#: The settings :func:`quantize_onnx` uses by default: right on every x86-64 CPU (docs/int8.md).
INT8 = Int8Settings()
#: Full 8-bit weights (``export-onnx --int8-target vnni``): right only where ONNX Runtime has VNNI or AMX kernels.
INT8_VNNI = replace(INT8, reduce_range=False)
#: ``--int8-target`` -> settings.
INT8_TARGETS = {"any": INT8, "vnni": INT8_VNNI}
#: The /proc/cpuinfo flags that give ONNX Runtime int8 kernels without 16-bit saturation (VNNI, AMX).
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
#: The /proc/cpuinfo flags that decide which int8 kernels ONNX Runtime runs on x86 (reported with the results).
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx_vnni_int8", "amx_int8")


def cpu_int8_features(cpuinfo: str = "/proc/cpuinfo") -> Dict[str, Any]:
    """The CPU this process runs on, as far as int8 goes: ``model`` (its name), ``flags`` (those of
    :data:`INT8_FLAGS` it has), ``vnni``: whether ONNX Runtime's int8 kernels here are free of 16-bit saturation
    (any of :data:`VNNI_FLAGS`; ``None`` where unknown: no ``cpuinfo`` to read, or not x86)."""
    machine = platform.machine().lower()
    model: Optional[str] = None
    flags: Optional[Set[str]] = None
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model is None:
                    model = " ".join(value.split())
                elif key.strip() == "flags" and flags is None:
                    flags = set(value.split())
    except OSError:
        pass
    x86 = machine in ("x86_64", "amd64", "i386", "i686", "x86")
    return dict(model=model or platform.processor() or machine or "unknown CPU",
                flags=[f for f in INT8_FLAGS if flags and f in flags],
                vnni=any(f in flags for f in VNNI_FLAGS) if x86 and flags is not None else None)


def describe_cpu(cpu: Optional[Dict[str, Any]] = None) -> str:
    """One phrase: the CPU model and its int8 flags, e.g. ``AMD EPYC (avx2, no VNNI)``."""
    cpu = cpu or cpu_int8_features()
    vnni = {True: "VNNI", False: "no VNNI", None: "VNNI unknown"}[cpu["vnni"]]
    return f"{cpu['model']} ({', '.join(cpu['flags'] + [vnni]) if cpu['flags'] else vnni})"


def file_int8_target(meta: Dict[str, Any]) -> Optional[str]:
    """The CPUs an ONNX file's int8 ops are right on, from its metadata: ``"any"``, ``"vnni"``, or ``None`` for
    a float file. Files from before ``int8_target`` was recorded are ``"vnni"`` where their weights were full
    int8 (the default then)."""
    if meta.get("int8_target"):
        return str(meta["int8_target"])
    made = meta.get("quantization")
    if not made:
        return None
    return "vnni" if re.search(r"(?<!u)int8 weights", made) and "reduce_range" not in made else "any"


def target_warning(meta: Dict[str, Any], path: str, cpu: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """One line where the int8 model ``path`` (its metadata ``meta``) was made for VNNI CPUs and this CPU has
    no VNNI (:func:`cpu_int8_features`), else ``None``."""
    if file_int8_target(meta) != "vnni":
        return None
    cpu = cpu or cpu_int8_features()
    if cpu["vnni"] is not False:
        return None
    return (f"{os.path.basename(path)} was quantized for CPUs with VNNI (--int8-target vnni) and this CPU, "
            f"{describe_cpu(cpu)}, has none: ONNX Runtime's int8 sums can saturate here and give wrong outputs; "
            f"use the fp32 model or re-export with --int8-target any")


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


def _description(prefix: PathLike) -> Dict[str, Any]:
    """The model description ``<prefix>.json`` (``runs/x/model`` or ``runs/x/model.onnx``: ``runs/x/model.json``),
    ``{}`` where there is none."""
    stem = os.fspath(prefix)
    stem = stem[:-5] if stem.endswith(".onnx") else stem
    try:
        with open(stem + ".json") as f:
            found = json.load(f)
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def described_dataset(prefix: PathLike) -> Optional[str]:
    """The training data's name in the model description ``<prefix>.json`` (``runs/x/model`` or
    ``runs/x/model.onnx``: ``runs/x/model.json``), or ``None`` where it has none."""
    name = _description(prefix).get("dataset")
    return name if isinstance(name, str) and name else None


def calibration_inputs(src: PathLike, count: int = 256, data_dir: Optional[str] = None,
                       dataset: Optional[str] = None, seed: int = 0) -> np.ndarray:
    """``count`` training images of the model ``src`` was trained on, normalised: ``float32 (count, C, H, W)``.

    dataset: the data's name (default: what the model description beside
    ``src``, ``<stem>.json``, names; its recipe's dataset). A seeded random
    subset of the training split, read as ``stn-gluon train`` reads it.
    """
    return calibration_data(src, count, data_dir, dataset, seed)[0]


def calibration_data(src: PathLike, count: int = 256, data_dir: Optional[str] = None, dataset: Optional[str] = None,
                     seed: int = 0, held_back: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`calibration_inputs` with labels, and ``held_back`` more training images (none of the calibration
    ones) to check the int8 model on: ``(x, labels, held-back x, held-back labels)``, images normalised."""
    from ..data.sources import load_for_model  # lazy: the data layer imports MXNet; int8 runs without it
    from ..data.mnist import normalize  # lazy: the same

    path = os.fspath(src)
    meta = _metadata(_load_onnx(path))
    dataset = dataset or described_dataset(path)
    if not dataset:
        raise StnGluonError(f"{path}: no model description beside it names its training data to calibrate "
                            f"with; give calibration (inputs as an array or .npy)", params=("calibration",))
    # images from disk: read as the model's training read them (model.json's data_options), at its input size
    data = load_for_model(dataset, json.loads(meta["input_shape"])[1:], data_dir,
                          options=_description(path).get("data_options"))
    images, labels = data.train_images, data.train_labels
    # the calibration pick is RandomState.choice(len, count, replace=False): the first of one permutation
    order = np.random.RandomState(seed).permutation(len(images))
    pick, check = np.sort(order[:count]), np.sort(order[count:count + held_back])
    mean, std = (json.loads(meta[k]) if k in meta else d for k, d in (("mean", 0.0), ("std", 1.0)))  # per channel too
    return (normalize(images[pick], mean, std), np.asarray(labels[pick]), normalize(images[check], mean, std),
            np.asarray(labels[check]))


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
    """Feeds calibration batches to ``quantize_static``, all of one size (the largest divisor of ``len(x)`` up to
    ``batch``): ONNX Runtime's histogram calibrators fail on a shorter last batch."""

    def __init__(self, name: str, x: np.ndarray, batch: int = 64):
        batch = next(b for b in range(min(batch, len(x)), 0, -1) if len(x) % b == 0)
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
        quantized.metadata_props.add(key="int8_target", value=settings.target)  # OnnxModel warns on "vnni"
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


def agreement(fp32: PathLike, int8: PathLike, x: np.ndarray, labels: Optional[np.ndarray] = None,
              batch: int = 256) -> Dict[str, float]:
    """How the int8 model's answers on ``x`` compare with fp32's, run here: the share of equal top-1 classes
    (``top1_agreement``), the largest logit difference (``max_logit_diff``) and that as a share of fp32's largest
    |logit| (``max_relative_error``); with ``labels``, each one's accuracy (``fp32_accuracy``, ``int8_accuracy``)."""

    a, b = cpu_session(os.fspath(fp32)), cpu_session(os.fspath(int8))
    name = a.get_inputs()[0].name
    la, lb = (np.concatenate([s.run(["logits"], {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])
              for s in (a, b))
    diff = float(np.abs(la - lb).max())
    out = dict(top1_agreement=float((la.argmax(1) == lb.argmax(1)).mean()), max_logit_diff=diff,
               max_relative_error=diff / max(float(np.abs(la).max()), 1e-12), count=float(len(x)))
    if labels is not None:
        out.update(fp32_accuracy=float((la.argmax(1) == labels).mean()),
                   int8_accuracy=float((lb.argmax(1) == labels).mean()))
    return out


def int8_error_verdict(agree: Dict[str, float], max_error: float = MAX_ERROR,
                       max_accuracy_drop: float = MAX_ACCURACY_DROP) -> Optional[str]:
    """Why int8 is too far from fp32 (one line), or ``None`` where it is within both bounds.

    agree: :func:`agreement`'s result; max_error: the largest logit error as a
    share of fp32's largest |logit|; max_accuracy_drop: points of accuracy
    int8 may lose (checked where ``agree`` has accuracies).
    """
    n = int(agree.get("count", 0))
    if agree["max_relative_error"] > max_error:
        return (f"int8's largest logit error on {n} held-back inputs is {100 * agree['max_relative_error']:.1f} % of "
                f"fp32's largest |logit| (bound {100 * max_error:g} %)")
    if "int8_accuracy" in agree:
        drop = 100 * (agree["fp32_accuracy"] - agree["int8_accuracy"])
        if drop > max_accuracy_drop + 1e-9:
            return (f"int8's accuracy on {n} held-back inputs is {100 * agree['int8_accuracy']:.2f} % against fp32's "
                    f"{100 * agree['fp32_accuracy']:.2f} % ({drop:.2f} points lower, bound {max_accuracy_drop:g})")
    return None


def _held_back(fp32: PathLike, config: QuantizeConfig, dataset: Optional[str]) -> Tuple[np.ndarray, np.ndarray,
                                                                                         Optional[np.ndarray], str]:
    """``(calibration x, check x, check labels or None, what the check inputs are)`` for :func:`quantize_export`."""
    if config.calibration is None:
        x, _, check, labels = calibration_data(fp32, config.calibration_count, config.data_dir, dataset,
                                               held_back=config.check_count)
        if len(check):
            return x, check, labels, "held-back training images"
        return x, x, None, "calibration images (no training image left to hold back)"
    x = _check_calibration(config.calibration, _input_of(_load_onnx(fp32), os.fspath(fp32))[1], os.fspath(fp32))
    n = min(config.check_count, len(x) // 4)
    if not n:
        return x, x, None, "calibration inputs (too few to hold any back)"
    return x[:-n], x[-n:], None, "held-back calibration inputs (the last of --calibration)"


def quantize_export(fp32: PathLike, config: QuantizeConfig, dataset: Optional[str] = None,
                    echo: Callable[[str], Any] = print, dst: Optional[PathLike] = None,
                    speed: Optional[Dict[str, float]] = None) -> Optional[str]:
    """``export-onnx --quantize int8``: quantize ``fp32``, check and time both, write ``<fp32 stem>-int8.onnx``
    or refuse.

    The settings are :data:`INT8_TARGETS` ``[config.int8_target]``. Calibrated
    on ``config.calibration`` or on training images (dataset: the training data
    when ``config.calibration`` is not set; default: what the description
    beside ``fp32`` names), and checked against fp32 on inputs held back from
    calibration (:func:`agreement`, run on this CPU). Refused
    (:class:`~stn_gluon._runtime.errors.StnGluonError`, one line with the measured
    reason; nothing written) where int8 is further from fp32 than
    ``config.int8_max_error`` / ``config.int8_max_accuracy_drop``
    (:func:`int8_error_verdict`), or where it runs slower than fp32 unless
    ``config.int8_if_slower`` (then a warning). speed: a measurement to use
    instead of timing (as :func:`compare_speed` returns it). Returns the path written.
    """


    if config.quantize is None:
        return None
    validate_fields(config)
    settings = INT8_TARGETS[config.int8_target]
    cpu = cpu_int8_features()
    dst = os.fspath(dst or int8_path(fp32))
    with atomic_path(dst) as tmp:
        x, check, labels, what = _held_back(fp32, config, dataset)
        quantize_onnx(fp32, tmp, x, settings=settings)
        agree = agreement(fp32, tmp, check, labels)
        echo(f"int8 against fp32 on {len(check)} {what}, CPU {describe_cpu(cpu)}: largest logit error "
             f"{100 * agree['max_relative_error']:.2f} % of the largest |logit| (bound "
             f"{100 * config.int8_max_error:g} %), same top-1 class on {100 * agree['top1_agreement']:.1f} %"
             + (f", accuracy {100 * agree['int8_accuracy']:.2f} % against {100 * agree['fp32_accuracy']:.2f} % "
                f"(bound {config.int8_max_accuracy_drop:g} points lower)" if labels is not None else ""))
        wrong = int8_error_verdict(agree, config.int8_max_error, config.int8_max_accuracy_drop)
        if wrong:
            hint = (" (--int8-target vnni needs a CPU with VNNI; this one has none: --int8-target any)"
                    if settings.target == "vnni" and cpu["vnni"] is False else "")
            raise StnGluonError(f"int8 refused: {wrong}{hint}; the fp32 model is the one to use")
        speed = speed or compare_speed(fp32, tmp)
        echo(f"int8 against fp32 (ONNX Runtime, batch 64, one thread, timed in turns): {speed['int8']:,.0f} against "
             f"{speed['fp32']:,.0f} images/s ({speed['ratio']:.2f}x; CPU time per image {speed['cpu_ratio']:.2f}x)")
        why = int8_verdict(speed)
        if why and not config.int8_if_slower:
            raise StnGluonError(f"int8 refused: {why}; the fp32 model is the one to use "
                                f"(--int8-if-slower writes it anyway)", params=("int8_if_slower",))
        if why:
            echo(f"warning: {why}")
        if settings.target == "vnni":
            echo(f"warning: --int8-target vnni: full 8-bit weights, right only on CPUs with VNNI or AMX "
                 f"({', '.join(VNNI_FLAGS)}); elsewhere ONNX Runtime's int8 sums saturate (predict and serve warn)"
                 + ("; this CPU has none" if cpu["vnni"] is False else ""))
    echo(f"Wrote {dst} (int8: {settings.describe()})")
    return dst
