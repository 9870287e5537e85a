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
"""
from .accuracy import seconds_since_process_start, time_to_accuracy
from .speed import inference_report, speed_report

__all__ = ["speed_report", "inference_report", "time_to_accuracy", "seconds_since_process_start"]
