"""Speed benchmarks (``stn-gluon bench speed`` and ``stn-gluon bench time-to-accuracy``).

- :mod:`~stn_gluon.bench.harness`: timed windows, competitors timed in
  turns, each in a worker process of its own;
- :mod:`~stn_gluon.bench.competitors`: what is timed (MXNet Gluon, including
  a plain user-written loop and the same loop with the library's speed
  helpers, the Module API, ONNX Runtime), and
  :mod:`~stn_gluon.bench.torch_peer`: the same network in PyTorch;
- :mod:`~stn_gluon.bench.speed`: the measurements, :mod:`~stn_gluon.bench.reports`:
  their tables, :mod:`~stn_gluon.bench.memory`: peak memory of a training run;
- :mod:`~stn_gluon.bench.accuracy`: time to a test accuracy.

The names below load their module on first use (PEP 562): the benchmark's worker processes import
:mod:`~stn_gluon.bench.harness` and :mod:`~stn_gluon.bench.competitors` through this package, and must not
load the trainers (nor MXNet, in the ONNX Runtime worker) with it.
"""
import importlib as _importlib
from typing import Any as _Any, List as _List

#: Public name -> the module that defines it.
_PUBLIC = {"speed_report": "speed", "inference_report": "speed", "time_to_accuracy": "accuracy",
           "seconds_since_process_start": "accuracy"}

__all__ = ["speed_report", "inference_report", "time_to_accuracy", "seconds_since_process_start"]


def __getattr__(name: str) -> _Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> _List[str]:
    return sorted(list(globals()) + __all__)
