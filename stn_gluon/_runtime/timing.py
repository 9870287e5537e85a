"""Timing primitives: timed windows, competitors timed in turns, their ratios, the fixed inputs.

The benchmarks (:mod:`stn_gluon.bench.harness`) and the int8 export's speed check
(:func:`stn_gluon.export.int8.compare_speed`) both time with these.
"""
import time
from typing import Callable, Dict, List, Optional

import numpy as np

__all__ = ["Timer", "median_rate", "timed", "Clock", "interleaved_rates", "ratio", "infer_input"]

Timer = Callable[[int, float, int], float]


def median_rate(step: Callable[[], object], items: int, seconds: float, repeats: int, warmup: int = 3) -> float:
    """Median items/s of ``step()`` over ``repeats`` windows of about ``seconds`` each.

    A step that only queues work (MXNet's engine is asynchronous) carries a
    ``sync()`` attribute: it is called after the warm-up and at the end of
    each window, before the clock is read.
    """
    sync = getattr(step, "sync", lambda: None)
    for _ in range(warmup):
        step()
    sync()
    rates = []
    for _ in range(repeats):
        n, tic = 0, time.perf_counter()
        while True:
            step()
            n += 1
            if time.perf_counter() - tic >= seconds and n >= 2:
                sync()
                break
        rates.append(n * items / (time.perf_counter() - tic))
    return float(np.median(rates))


def timed(step: Callable[[], object]) -> Timer:
    """A timer ``(items, seconds, warmup) -> items/s`` of ``step()`` called in this process (one window)."""
    return lambda items, seconds, warmup: median_rate(step, items, seconds, 1, warmup=warmup)


class Clock:
    """A timer ``(items, seconds, warmup) -> items/s`` (wall clock) of ``step()`` called here, that also keeps
    each timed window's items per CPU-second of the calling thread in ``cpu``.

    The CPU-time rate is steady on a shared machine (the wall clock also counts
    the time other programs hold the core); it measures a step that runs in the
    calling thread only (e.g. a single-threaded ONNX Runtime session).
    """

    def __init__(self, step: Callable[[], object]):
        self.step = step
        self.cpu: List[float] = []

    def __call__(self, items: int, seconds: float, warmup: int) -> float:
        for _ in range(warmup):
            self.step()
        n, tic, cpu = 0, time.perf_counter(), time.thread_time()
        while n < 2 or time.perf_counter() - tic < seconds:
            self.step()
            n += 1
        wall, used = time.perf_counter() - tic, time.thread_time() - cpu
        if seconds > 0:
            self.cpu.append(n * items / max(used, 1e-9))
        return n * items / wall


def interleaved_rates(timers: dict, items: int, seconds: float, repeats: int, warmup: int = 3,
                      rounds: Optional[dict] = None) -> dict:
    """Median items/s of each competitor, measured in turns (A, B, C, A, B, C, ...).

    ``timers[name]`` is a timer ``(items, seconds, warmup) -> items/s``: an
    :class:`Isolated` worker, or :func:`timed` for a step called here. Each
    repetition times one window of every competitor in a row. With a
    ``rounds`` dict, every round's rates are stored in it too (for
    :func:`ratio`).
    """
    if warmup:
        for timer in timers.values():
            timer(items, 0.0, warmup)
    rates: Dict[str, List[float]] = {name: [] for name in timers}
    for _ in range(repeats):
        for name, timer in timers.items():
            rates[name].append(timer(items, seconds, 0))
    if rounds is not None:
        rounds.update(rates)
    return {name: float(np.median(r)) for name, r in rates.items()}


def ratio(rounds: dict, name: str, peer: str) -> Optional[float]:
    """Median over rounds of ``name``'s rate / ``peer``'s in the same round (``None`` without the peer)."""
    if peer not in rounds or name not in rounds:
        return None
    return float(np.median(np.array(rounds[name]) / np.array(rounds[peer])))


def infer_input(batch: int, shape: tuple = (1, 28, 28)) -> np.ndarray:
    """The fixed ``(batch,) + shape`` float32 input of every inference competitor."""
    return np.random.RandomState(batch).normal(0, 1, (batch,) + tuple(shape)).astype(np.float32)
