"""The timing harness: timed windows, competitors timed in turns, worker processes.

A competitor is a factory (in :mod:`stn_gluon.bench.competitors`, named by
its key in ``FACTORIES``) that builds a callable: a training step or an
inference call. :class:`Isolated` builds it in a fresh interpreter of its
own and times it on request, so that two frameworks never share the cores
with each other's idle thread pools; :func:`interleaved_rates` times every
competitor one window at a time, in turns, so that a machine whose speed
drifts (a shared VM) slows them all alike.

The worker protocol: requests are JSON lines on the worker's stdin
(``["rate", items, seconds, warmup]``, ``["latency", count]``); replies are
JSON lines on its stdout, marked with :data:`REPLY` so that anything else a
library prints there is skipped. The first reply says whether the
competitor was built: ``["ready", {"omp_num_threads": ..., "mxnet_threads": ...}]`` or
``["error", "<kind>: <one line>"]``.
"""
import importlib
import json
import os
import subprocess
import sys
import time
from typing import IO, Any, Callable, NamedTuple, Optional

import numpy as np

from .._runtime.compat import standalone_prelude
from .._runtime.errors import StnGluonError, mxnet_message
from .._runtime.timing import Clock, infer_input, interleaved_rates, median_rate, ratio, timed
from .._runtime.threads import thread_report, user_environ

__all__ = ["median_rate", "timed", "Clock", "interleaved_rates", "ratio", "latency", "train_batches", "infer_input",
           "Competitor", "Isolated", "child_environ", "isolated_rates", "serve_timings", "REPLY", "REGISTRY"]

#: Marks the worker's replies among anything else printed on its stdout.
REPLY = "@@bench "
#: The module whose ``FACTORIES`` dict maps a competitor's kind to its factory.
REGISTRY = "stn_gluon.bench.competitors"

def latency(call: Callable[[], object], count: int = 200, warmup: int = 20) -> dict:
    """Percentiles ``{"p50": ms, "p99": ms}`` of the wall time of ``count`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(count):
        tic = time.perf_counter()
        call()
        samples.append(time.perf_counter() - tic)
    ms = np.array(samples) * 1000
    return dict(p50=float(np.percentile(ms, 50)), p99=float(np.percentile(ms, 99)))


def train_batches(batch: int, size: int, count: int = 8, seed: int = 0) -> tuple:
    """The fixed training data of every training competitor: ``count`` batches ``(x, y)``, float32 NumPy.

    ``x``: ``(count, batch, 1, size, size)`` standard normal; ``y``: labels 0..9.
    """
    rng = np.random.RandomState(seed)
    x = rng.normal(0, 1, (count, batch, 1, size, size)).astype(np.float32)
    y = rng.randint(0, 10, (count, batch)).astype(np.float32)
    return x, y


def _one_line(kind: str, err: BaseException) -> str:
    """``"<kind>: <error type>: <message>"`` on one line: MXNet's informative line, or the message's first."""
    from mxnet.base import MXNetError

    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    message = mxnet_message(err) if isinstance(err, MXNetError) else (lines[0] if lines else repr(err))
    return f"{kind}: {type(err).__name__}: {message}"


def serve_timings(kind: str, kwargs_json: str, registry: str = REGISTRY) -> None:
    """The worker's side (run by ``python -c``): build ``FACTORIES[kind]``, call it once, then time it on request."""
    def reply(status: str, value: object) -> None:
        print(REPLY + json.dumps([status, value]), flush=True)
    try:
        call = importlib.import_module(registry).FACTORIES[kind](**json.loads(kwargs_json))
        call()
    except Exception as err:  # reported to the parent, which raises it there
        reply("error", _one_line(kind, err))
        return
    report = thread_report()
    reply("ready", {"omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "mxnet_threads": report["threads_now"],
                    "threads": report})
    for line in sys.stdin:
        request = json.loads(line)
        if request[0] == "rate":
            _, items, seconds, warmup = request
            reply("ok", median_rate(call, items, seconds, 1, warmup=warmup))
        elif request[0] == "latency":
            reply("ok", latency(call, *request[1:]))
        else:
            return


def child_environ(env: Optional[dict] = None, plain_mxnet: bool = False) -> Optional[dict]:
    """The environment of a worker: this one (as the user set it, for ``plain_mxnet``) with ``env`` on top.

    ``None`` where nothing changes (the child inherits this environment).
    """
    if not env and not plain_mxnet:
        return None
    out = user_environ() if plain_mxnet else dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = str(value)
    return out


class Competitor(NamedTuple):
    """What :func:`isolated_rates` times: the factory's ``kind``, its ``kwargs``, and how to start its process.

    plain_mxnet: start it as a user's own script would be, ``mxnet`` imported
    before ``stn_gluon`` and ``OMP_NUM_THREADS`` as the user set it
    (:func:`stn_gluon._runtime.threads.user_environ`). env: variables to set in its
    environment on top of that (``None`` values: removed), e.g. the thread
    settings that ``stn-gluon bench contention`` compares.
    """
    kind: str
    kwargs: dict
    plain_mxnet: bool = False
    env: Optional[dict] = None


class Isolated:
    """A competitor timed in a process of its own (``kind`` names its factory in ``FACTORIES``).

    Callable as ``timer(items, seconds, warmup) -> items/s``, like the
    in-process timers of :func:`timed`. A fresh interpreter (not
    ``multiprocessing``), so that the caller's script is not re-imported.
    Failures raise :class:`~stn_gluon._runtime.errors.StnGluonError` with one line.
    cli_slots: start it as ``stn-gluon train`` starts, its thread count chosen
    before MXNet loads by :func:`stn_gluon.cli.threads.prepare_threads`, among
    the trainings that hold a slot in the folder ``cli_slots``
    (:class:`stn_gluon.cli.threads.JobSlots`: the workers meant to run at once).
    """

    def __init__(self, kind: str, kwargs: dict, plain_mxnet: bool = False, registry: str = REGISTRY,
                 env: Optional[dict] = None, cli_slots: Optional[str] = None):
        # a user's script on numpy >= 1.24 restores numpy's aliases before `import mxnet` (see compat)
        first = f"{standalone_prelude()}; import mxnet; " if plain_mxnet else ""
        if cli_slots is not None:  # run in the child: the CLI's choice, made before anything imports MXNet
            first = ("from stn_gluon.cli.threads import JobSlots, prepare_threads; "
                     f"_threads = prepare_threads('train', slots=JobSlots({cli_slots!r})); ")
        code = (first + "from stn_gluon.bench.harness import serve_timings; "
                f"serve_timings({kind!r}, {json.dumps(kwargs)!r}, {registry!r})")
        self._proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, env=child_environ(env, plain_mxnet))
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin: IO[str] = self._proc.stdin
        self._stdout: IO[str] = self._proc.stdout

    def _ask(self, *request: object) -> Any:
        try:
            if request:
                self._stdin.write(json.dumps(list(request)) + "\n")
                self._stdin.flush()
            for line in self._stdout:
                if line.startswith(REPLY):
                    status, value = json.loads(line[len(REPLY):])
                    if status == "error":
                        raise StnGluonError(f"benchmark worker failed: {value}")
                    return value
        except BrokenPipeError:
            pass
        raise StnGluonError(f"a benchmark worker died (exit code {self._proc.wait()})")

    @property
    def process(self) -> subprocess.Popen:
        """The worker's process."""
        return self._proc

    def ask_rate(self, items: int, seconds: float, warmup: int = 0) -> None:
        """Start a timed window without waiting for it (several workers timed at once); :meth:`answer` reads it."""
        self._stdin.write(json.dumps(["rate", items, seconds, warmup]) + "\n")
        self._stdin.flush()

    def answer(self) -> Any:
        """The reply to the request sent last (see :meth:`ask_rate`)."""
        return self._ask()

    def ready(self) -> dict:
        """Wait until the competitor is built; returns the worker's ``OMP_NUM_THREADS`` and MXNet's thread count."""
        return self._ask()

    def __call__(self, items: int, seconds: float, warmup: int) -> float:
        return self._ask("rate", items, seconds, warmup)

    def latency(self, count: int = 200) -> dict:
        """Batch latency percentiles (ms) of ``count`` calls, as :func:`latency`."""
        return self._ask("latency", count)

    def close(self) -> None:
        """End the worker (it exits when its stdin closes)."""
        try:
            self._stdin.close()
            self._proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait()


def isolated_rates(specs: dict, items: int, seconds: float, repeats: int, warmup: int = 3,
                   latency: Optional[dict] = None, rounds: Optional[dict] = None, latency_count: int = 200,
                   settings: Optional[dict] = None) -> dict:
    """:func:`interleaved_rates` over competitors ``{name: Competitor or (kind, kwargs)}``, each in its own process.

    With a ``latency`` dict, each competitor's latency percentiles are stored
    in it too (measured one competitor at a time, ``latency_count`` calls);
    with a ``settings`` dict, each worker's settings (see :meth:`Isolated.ready`).
    """
    workers = {}
    try:
        for name, spec in specs.items():
            workers[name] = (Isolated(spec.kind, spec.kwargs, spec.plain_mxnet, env=spec.env)
                             if isinstance(spec, Competitor) else Isolated(*spec))
        for name, worker in workers.items():
            ready = worker.ready()
            if settings is not None:
                settings[name] = ready
        rates = interleaved_rates(workers, items, seconds, repeats, warmup, rounds)
        if latency is not None:
            latency.update({name: worker.latency(latency_count) for name, worker in workers.items()})
        return rates
    finally:
        for worker in workers.values():
            worker.close()
