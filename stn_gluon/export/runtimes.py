"""Run an ONNX model in ONNX Runtime, ONNX's reference evaluator or OpenVINO, the same way each time.

The export tests and ``python scripts/onnx_parity_table.py`` check every
exported opset in these three runtimes through :func:`load_runtime`:

* ``onnxruntime``: a CPU session, all graph optimisations on.
* ``reference``: ``onnx.reference.ReferenceEvaluator`` (NumPy). Its GridSample
  implements opset 20's spelling only (``linear``/``cubic``) and refuses opset
  16's ``bilinear``/``bicubic``; the same interpolation under its older name
  is mapped onto it here (:class:`ReferenceGridSample16`), nothing else changes.
* ``openvino``: compiled for the CPU with ``INFERENCE_PRECISION_HINT=f32``.
  Without it OpenVINO computes in bf16 on CPUs with AVX512-BF16, which moved
  an STN's logits by about 0.05.
"""
from typing import Any, Callable, Dict, List, Union

import numpy as np

from .._runtime.errors import StnGluonError
from .onnx_io import cpu_session

__all__ = ["RUNTIMES", "load_runtime", "Runner", "runtime_version"]

RUNTIMES = ("onnxruntime", "reference", "openvino")
"""The runtimes :func:`load_runtime` knows."""

Runner = Callable[[Dict[str, np.ndarray]], List[np.ndarray]]
"""Feeds ``{input name: array}`` -> the model's outputs, in the graph's output order."""


def _reference_grid_sample_16() -> Any:
    from onnx.reference.ops.op_grid_sample import GridSample

    class ReferenceGridSample16(GridSample):
        """GridSample-16..19 for the reference evaluator: ``bilinear`` is 20's ``linear``, ``bicubic`` its ``cubic``."""

        op_domain = ""

        def _run(self, X: Any, grid: Any, mode: Any = None, padding_mode: Any = None,
                 align_corners: Any = None) -> Any:
            mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode or self.mode, mode or self.mode)  # type: ignore
            return super()._run(X, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)

    ReferenceGridSample16.__name__ = "GridSample"
    return ReferenceGridSample16


def runtime_version(runtime: str) -> str:
    """The installed version of ``runtime`` (a :data:`RUNTIMES` name)."""
    if runtime == "onnxruntime":
        import onnxruntime
        return str(onnxruntime.__version__)
    if runtime == "reference":
        import onnx
        return str(onnx.__version__)
    if runtime == "openvino":
        import openvino
        return str(openvino.get_version()).split("-")[0]
    raise StnGluonError(f"unknown ONNX runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")


def load_runtime(runtime: str, model: Union[bytes, str]) -> Runner:
    """A :data:`Runner` of the ONNX ``model`` (its bytes or a path) in ``runtime`` (one of :data:`RUNTIMES`)."""
    if isinstance(model, str):
        with open(model, "rb") as f:
            model = f.read()
    if runtime == "onnxruntime":
        session = cpu_session(model)
        return lambda feeds: list(session.run(None, feeds))
    if runtime == "reference":
        import onnx
        from onnx.reference import ReferenceEvaluator

        proto = onnx.load_from_string(model)
        opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        evaluator = ReferenceEvaluator(proto, new_ops=[_reference_grid_sample_16()] if opset < 20 else None)
        return lambda feeds: list(evaluator.run(None, feeds))
    if runtime == "openvino":
        try:
            import openvino as ov
        except ImportError:
            raise StnGluonError("OpenVINO is not installed (pip install 'stn-gluon[test]' or openvino)") from None
        core = ov.Core()
        compiled = core.compile_model(core.read_model(model=model), "CPU",
                                      {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
        outputs = compiled.outputs

        def run(feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
            result = compiled(feeds)
            return [np.asarray(result[o]) for o in outputs]
        return run
    raise StnGluonError(f"unknown ONNX runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
