"""ONNX converters for MXNet's spatial operators, at opsets 16 to 20.

MXNet's exporter (``mx.onnx``) has no converter for ``GridGenerator``,
``BilinearSampler`` or ``SpatialTransformer``. :func:`register_converters`
adds them to MXNet's own registry, after which ``mx.onnx.export_model`` (or
:func:`stn_gluon.export.onnx.export_onnx`) converts any graph that uses them:

* ``BilinearSampler(data, grid)`` (any grid, from any op; ``cudnn_off``
  accepted) -> ``GridSample`` with ``padding_mode="zeros"`` and
  ``align_corners=1``, after a ``Transpose`` of MXNet's ``(N, 2, H, W)`` grid to
  ONNX's ``(N, H, W, 2)``. MXNet's normalised coordinates put -1 and 1 at the
  centres of the corner pixels and read zero outside the input: exactly
  those attributes. The mode is spelled ``bilinear`` at opsets 16 to 19 and
  ``linear`` from 20.
* ``GridGenerator(transform_type="affine")`` -> at opset 20 ``AffineGrid``
  (``align_corners=1``); below 20, where there is no ``AffineGrid``, the
  constant target grid ``[x_t; y_t; 1]`` ``(3, H*W)`` (``linspace(-1, 1)``,
  as MXNet builds it) times theta ``(N, 2, 3)`` with ``MatMul``.
* ``GridGenerator(transform_type="warp")``: the flow ``(N, 2, H, W)`` in pixels
  becomes ``(flow + [x; y]) / ((W - 1) / 2, (H - 1) / 2) - 1``, MXNet's own
  formula, with ``H`` and ``W`` read from the flow at run time (any size).
* ``SpatialTransformer`` (affine, bilinear, any ``target_shape``) -> the affine
  grid above, then ``GridSample``.

What MXNet accepts but ONNX cannot reproduce exactly is refused with one
line naming the op and the attribute: a ``target_shape`` side of 1 (MXNet
divides by ``side - 1`` and fills the grid with NaN), and opsets below 16
(no ``GridSample``).

MXNet 1.9.1's ``export_model`` takes no opset: it stamps the installed onnx
package's default and looks every converter up downwards from it.
:func:`target_opset` makes it export at the opset you choose instead.
"""
import contextlib
import re
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np

from .._runtime import mxnet_internals
from .._runtime.errors import StnGluonError

__all__ = ["MIN_OPSET", "MAX_OPSET", "OPSETS", "DEFAULT_OPSET", "SPATIAL_OPS", "register_converters",
           "check_opset", "grid_sample_mode", "target_opset", "parse_input_spec", "upgrade_reduce_axes"]

MIN_OPSET = 16
"""The first opset with ``GridSample``."""
MAX_OPSET = 20
"""The newest opset whose operators every converter here has been checked against (``AffineGrid``, new in 20)."""
OPSETS = tuple(range(MIN_OPSET, MAX_OPSET + 1))
"""The opsets the project exports and tests: 16, 17, 18, 19, 20."""
DEFAULT_OPSET = 16
"""The default: the oldest opset with ``GridSample``, so the one the most runtimes (and runtime versions) load.
Every runtime tested gives the same results at 16 as at 20 (docs/export-onnx.md has the table), and MXNet's
own converters, written for opset 13, still emit valid ``Reduce*`` nodes at 16 and 17 (not from 18)."""
SPATIAL_OPS = ("GridGenerator", "BilinearSampler", "SpatialTransformer")
"""The MXNet operators :func:`register_converters` teaches MXNet's exporter."""


def check_opset(opset: Any) -> int:
    """``opset`` as an int in :data:`OPSETS`, or a one-line error naming the ones supported."""
    try:
        value = int(opset)
    except (TypeError, ValueError):
        value = -1
    if value not in OPSETS or isinstance(opset, bool):
        raise StnGluonError(f"ONNX opset must be one of {MIN_OPSET}..{MAX_OPSET} (GridSample came in {MIN_OPSET}), "
                            f"got {opset!r}")
    return value


def parse_input_spec(text: str) -> Tuple[str, Tuple[int, ...]]:
    """``"NAME=C,H,W"`` (any number of positive dims, batch left out) -> ``(name, (C, H, W))``."""
    name, sep, dims = str(text).partition("=")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not sep or not name.strip() or not shape or min(shape) < 1:
        raise StnGluonError(f"an input is NAME=C,H,W (positive sizes, no batch dimension), got {text!r}")
    return name.strip(), shape


def grid_sample_mode(opset: int) -> str:
    """The name ONNX ``GridSample`` gives bilinear interpolation at ``opset``: ``bilinear`` before 20, ``linear`` from."""
    return "linear" if opset >= 20 else "bilinear"


def _target_shape(op: str, name: str, attrs: Dict[str, Any]) -> Tuple[int, int]:
    text = attrs.get("target_shape", "(0, 0)")
    values = tuple(int(v) for v in re.findall(r"-?\d+", str(text)))
    if len(values) != 2 or min(values) < 2:
        raise StnGluonError(f"ONNX export: {op} {name!r}: target_shape {text} has a side below 2 (MXNet divides by "
                            f"side - 1 there); ONNX cannot express that grid")
    return values[0], values[1]


def _float_dtype(op: str, name: str, dtype: Any) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in (np.float16, np.float32, np.float64):
        raise StnGluonError(f"ONNX export: {op} {name!r}: dtype {dtype} (ONNX GridSample takes float16/32/64)")
    return dtype


def _mxnet_base_grid(h: int, w: int, dtype: np.dtype) -> np.ndarray:
    """MXNet's affine target grid ``(3, H*W)``: rows x_t, y_t, 1 with x fastest, computed as MXNet does."""
    cols = np.arange(h * w)
    x = -1.0 + (cols % w) * 2.0 / (w - 1)
    y = -1.0 + (cols // w) * 2.0 / (h - 1)
    return np.stack([x, y, np.ones(h * w)]).astype(dtype)


class _Emitter:
    """Builds one converter's ONNX nodes and constants (names prefixed by the MXNet node's name)."""

    def __init__(self, name: str, kwargs: Dict[str, Any]) -> None:
        self.name = name
        self.initializer = kwargs["initializer"]
        self.nodes: List[Any] = []

    def const(self, suffix: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = f"{self.name}_{suffix}"
        self.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: List[str], suffix: str = "", **attrs: Any) -> str:
        from onnx import helper

        out = f"{self.name}_{suffix}" if suffix else self.name
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def affine_grid_nhw2(self, theta: str, batch_source: str, hw: Tuple[int, int], dtype: np.dtype,
                         opset: int) -> str:
        """theta ``(N, 6)`` -> ONNX grid ``(N, H, W, 2)``."""
        h, w = hw
        theta3 = self.node("Reshape", [theta, self.const("theta_shape", np.array([-1, 2, 3], np.int64))], "theta")
        if opset >= 20:
            n = self.node("Shape", [batch_source], "n", start=0, end=1)
            size = self.node("Concat", [n, self.const("chw", np.array([1, h, w], np.int64))], "size", axis=0)
            return self.node("AffineGrid", [theta3, size], "nhw2", align_corners=1)
        # (H*W, 3) @ (N, 3, 2) -> (N, H*W, 2): each point's source (x, y)
        theta_t = self.node("Transpose", [theta3], "theta_t", perm=(0, 2, 1))
        points = self.node("MatMul", [self.const("base", _mxnet_base_grid(h, w, dtype).T.copy()), theta_t], "hw2")
        return self.node("Reshape", [points, self.const("nhw2_shape", np.array([-1, h, w, 2], np.int64))], "nhw2")

    def affine_grid_n2hw(self, theta: str, hw: Tuple[int, int], dtype: np.dtype, opset: int) -> str:
        """theta ``(N, 6)`` -> MXNet grid ``(N, 2, H, W)`` (the node named after the MXNet node)."""
        h, w = hw
        if opset >= 20:
            nhw2 = self.affine_grid_nhw2(theta, theta, hw, dtype, opset)
            return self.node("Transpose", [nhw2], perm=(0, 3, 1, 2))
        theta3 = self.node("Reshape", [theta, self.const("theta_shape", np.array([-1, 2, 3], np.int64))], "theta")
        flat = self.node("MatMul", [theta3, self.const("base", _mxnet_base_grid(h, w, dtype))], "n2hw_flat")
        return self.node("Reshape", [flat, self.const("n2hw_shape", np.array([-1, 2, h, w], np.int64))])

    def ints(self, suffix: str, *values: int) -> str:
        """A constant int64 vector."""
        return self.const(suffix, np.array(values, np.int64))

    def warp_grid(self, flow: str, dtype: np.dtype) -> str:
        """Flow ``(N, 2, H, W)`` in pixels -> MXNet grid ``(N, 2, H, W)``, as ``GridGenerator(warp)`` computes it:
        ``(flow + [x; y]) / ((W - 1) / 2, (H - 1) / 2) - 1`` with ``H``, ``W`` read from the flow at run time."""
        to = _onnx_type(dtype)
        shape = self.node("Shape", [flow], "shape")
        h, w = (self.node("Gather", [shape, self.const(f"axis{axis}", np.array(axis, np.int64))], label)
                for axis, label in ((2, "h"), (3, "w")))
        zero, one = self.const("zero", np.array(0, np.int64)), self.const("one", np.array(1, np.int64))
        xs = self.node("Cast", [self.node("Range", [zero, w, one], "x_int")], "x", to=to)  # 0 .. W-1
        ys = self.node("Cast", [self.node("Range", [zero, h, one], "y_int")], "y", to=to)  # 0 .. H-1
        plane = self.node("Concat", [self.ints("lead", 1, 1), self.node("Slice", [shape, self.ints("s2", 2),
                                                                                  self.ints("e4", 4)], "hw")],
                          "plane", axis=0)  # (1, 1, H, W)
        x_plane = self.node("Expand", [self.node("Reshape", [xs, self.ints("row", 1, 1, 1, -1)], "x4"), plane], "xp")
        y_plane = self.node("Expand", [self.node("Reshape", [ys, self.ints("col", 1, 1, -1, 1)], "y4"), plane], "yp")
        base = self.node("Concat", [x_plane, y_plane], "base", axis=1)  # (1, 2, H, W): each pixel's x and y
        # [W, H] (the shape's last two, reversed) -> ((W - 1) / 2, (H - 1) / 2) shaped (1, 2, 1, 1), in the flow's dtype
        wh = self.node("Cast", [self.node("Slice", [shape, self.ints("s3", 3), self.ints("e1", 1), self.ints("a0", 0),
                                                    self.ints("back", -1)], "wh_int")], "wh", to=to)
        half = self.node("Div", [self.node("Sub", [wh, self.const("one_f", np.array(1, dtype))], "wh_m1"),
                                 self.const("two_f", np.array(2, dtype))], "half")
        scale = self.node("Reshape", [half, self.ints("scale_shape", 1, 2, 1, 1)], "scale")
        moved = self.node("Add", [flow, base], "moved")
        return self.node("Sub", [self.node("Div", [moved, scale], "scaled"), self.const("one_g", np.array(1, dtype))])

    def grid_sample(self, data: str, grid_nhw2: str, opset: int) -> str:
        return self.node("GridSample", [data, grid_nhw2], mode=grid_sample_mode(opset), padding_mode="zeros",
                         align_corners=1)


def _onnx_type(dtype: np.dtype) -> int:
    from onnx import helper

    return int(helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))


def _context(op: str, node: Dict[str, Any], kwargs: Dict[str, Any]) -> Tuple[str, List[str], Dict[str, Any], int,
                                                                             np.dtype, _Emitter]:
    get_inputs, get_input_dtypes = mxnet_internals.onnx_converter_inputs()
    name, inputs, attrs = get_inputs(node, kwargs)
    opset = int(kwargs.get("opset_version", MAX_OPSET))
    if opset < MIN_OPSET:
        raise StnGluonError(f"ONNX export: {op} {name!r} needs opset >= {MIN_OPSET} (GridSample), got opset {opset}")
    dtype = _float_dtype(op, name, get_input_dtypes(node, kwargs)[0])
    return name, inputs, attrs, opset, dtype, _Emitter(name, kwargs)


def _convert_grid_generator(node: Dict[str, Any], **kwargs: Any) -> List[Any]:
    name, inputs, attrs, opset, dtype, emit = _context("GridGenerator", node, kwargs)
    kind = attrs.get("transform_type", "affine")
    if kind == "warp":
        emit.warp_grid(inputs[0], dtype)
    elif kind == "affine":
        emit.affine_grid_n2hw(inputs[0], _target_shape("GridGenerator", name, attrs), dtype, opset)
    else:
        raise StnGluonError(f"ONNX export: GridGenerator {name!r}: transform_type {kind!r} (affine or warp)")
    return emit.nodes


def _convert_bilinear_sampler(node: Dict[str, Any], **kwargs: Any) -> List[Any]:
    _, inputs, _, opset, _, emit = _context("BilinearSampler", node, kwargs)  # cudnn_off: how, not what
    grid = emit.node("Transpose", [inputs[1]], "grid", perm=(0, 2, 3, 1))
    emit.grid_sample(inputs[0], grid, opset)
    return emit.nodes


def _convert_spatial_transformer(node: Dict[str, Any], **kwargs: Any) -> List[Any]:
    name, inputs, attrs, opset, dtype, emit = _context("SpatialTransformer", node, kwargs)
    for attr, only in (("transform_type", "affine"), ("sampler_type", "bilinear")):
        if attrs.get(attr, only) != only:
            raise StnGluonError(f"ONNX export: SpatialTransformer {name!r}: {attr} {attrs[attr]!r} ({only} only)")
    grid = emit.affine_grid_nhw2(inputs[1], inputs[0], _target_shape("SpatialTransformer", name, attrs), dtype,
                                 opset)
    emit.grid_sample(inputs[0], grid, opset)
    return emit.nodes


_CONVERTERS = {"GridGenerator": _convert_grid_generator, "BilinearSampler": _convert_bilinear_sampler,
               "SpatialTransformer": _convert_spatial_transformer}


def register_converters() -> None:
    """Teach MXNet's ONNX exporter :data:`SPATIAL_OPS` (idempotent; done on import of :mod:`stn_gluon.export.onnx`).

    The converters are registered at opset 12 (MXNet's lowest: below 16 they
    refuse with one line) and at each of :data:`OPSETS`, so whatever opset the
    exporter converts at, its downward look-up finds them; they read that
    opset and emit its operators.
    """
    registry = mxnet_internals.onnx_graph_class().registry_
    for version in (12,) + OPSETS:
        table = registry.setdefault(version, {})
        for op, func in _CONVERTERS.items():
            table[op] = func


@contextlib.contextmanager
def target_opset(opset: int) -> Iterator[int]:
    """Within the block, MXNet's exporter converts at ``opset``, checks against it and stamps it in the model.

    MXNet 1.9.1's ``export_model`` has no opset argument: it asks the installed
    onnx package for its newest opset (``onnx.defs.onnx_opset_version``), picks
    converters downwards from it and lets ``onnx.helper.make_model`` stamp it;
    its ``create_onnx_graph_proto`` then checks the graph against onnx's
    default checker context, which holds that newest opset too. Meanwhile all
    of them answer ``opset``, and the graph is brought up to it just before
    that check (:func:`upgrade_reduce_axes`: MXNet's own converters emit opset
    13's ``Reduce*``). Not thread-safe: export from one thread at a time.
    Also registers the converters.
    """
    import onnx.checker
    import onnx.defs

    opset = check_opset(opset)
    register_converters()
    original, check_graph, context = onnx.defs.onnx_opset_version, onnx.checker.check_graph, onnx.checker.DEFAULT_CONTEXT
    imports = dict(context.opset_imports)

    def upgrade_then_check(graph: Any, *args: Any, **kwargs: Any) -> None:
        upgrade_reduce_axes(graph, opset)
        check_graph(graph, *args, **kwargs)

    onnx.defs.onnx_opset_version = lambda: opset
    onnx.checker.check_graph = upgrade_then_check
    context.opset_imports = dict(imports, **{"": opset})
    try:
        yield opset
    finally:
        onnx.defs.onnx_opset_version = original
        onnx.checker.check_graph = check_graph
        context.opset_imports = imports


_AXES_AS_INPUT = {op: 18 for op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                                    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")}


def upgrade_reduce_axes(graph: Any, opset: int) -> int:
    """Move ``Reduce*`` nodes' ``axes`` attribute into an input, as opset 18 wants (in place); returns how many.

    MXNet's converters were written for opset 13, where ``axes`` is an
    attribute of every ``Reduce*`` but ``ReduceSum``; from opset 18 it is an
    input. The same axes, so the same results.
    """
    from onnx import numpy_helper

    moved = 0
    for node in graph.node:
        if node.op_type not in _AXES_AS_INPUT or opset < _AXES_AS_INPUT[node.op_type]:
            continue
        axes = [a for a in node.attribute if a.name == "axes"]
        if not axes:
            continue
        name = f"{node.output[0]}_axes"
        graph.initializer.append(numpy_helper.from_array(np.array(list(axes[0].ints), np.int64), name))
        node.attribute.remove(axes[0])
        node.input.append(name)
        moved += 1
    return moved
