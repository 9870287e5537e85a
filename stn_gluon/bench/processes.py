"""Child processes of the benchmarks, always cleaned up: busy loads, model servers, and the HTTP load client.

:class:`Children` owns every process a benchmark starts and ends them all
when its ``with`` block ends, on success, error or Ctrl-C (SIGTERM is turned
into the same clean-up). Every child also gets ``SIGKILL`` from the kernel
when the benchmark process dies (Linux ``PR_SET_PDEATHSIG``), and a busy load
(:func:`busy_command`) stops on its own after ``limit_s`` seconds, so nothing
outlives a killed benchmark for long.
"""
import asyncio
import contextlib
import ctypes
import io
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Iterator, List, Optional

import numpy as np

from .._runtime.errors import StnGluonError

__all__ = ["Children", "busy_command", "free_port", "start_server", "png_payloads", "load", "run_async",
           "on_sigterm_raise"]


try:  # looked up here: the child between fork and exec should only call it
    _PRCTL: Any = ctypes.CDLL(None).prctl
except (OSError, AttributeError):
    _PRCTL = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def busy_command(limit_s: float) -> List[str]:
    """A process that keeps one core busy (pure Python arithmetic) for at most ``limit_s`` seconds."""
    code = f"import time\nend = time.monotonic() + {float(limit_s)!r}\nwhile time.monotonic() < end:\n    pass\n"
    return [sys.executable, "-c", code]


class Children:
    """The processes a benchmark started; ``with Children() as kids:`` ends all of them on the way out.

    ``start(cmd, **popen_kwargs)`` starts one (dying with this process);
    ``stop(proc)`` ends one: SIGTERM, then SIGKILL after ``grace`` seconds.
    """

    def __init__(self, grace: float = 10.0):
        self.grace = grace
        self.procs: List[subprocess.Popen] = []

    def start(self, cmd: List[str], **kwargs: Any) -> subprocess.Popen:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(cmd, preexec_fn=_die_with_parent, **kwargs)
        self.procs.append(proc)
        return proc

    def adopt(self, proc: subprocess.Popen) -> None:
        """Also end ``proc`` (started elsewhere) on the way out."""
        self.procs.append(proc)

    def stop(self, proc: subprocess.Popen) -> Optional[int]:
        """End ``proc`` (SIGTERM, SIGKILL after the grace time); returns its exit code."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        if proc in self.procs:
            self.procs.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc)

    @property
    def alive(self) -> List[subprocess.Popen]:
        return [p for p in self.procs if p.poll() is None]

    def __enter__(self) -> "Children":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


@contextlib.contextmanager
def on_sigterm_raise() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt`` (so ``finally`` clean-ups run) in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(children: Children, model: str, backend: Optional[str], max_batch: int = 32,
                 max_wait_ms: float = 2.0, env: Optional[dict] = None, timeout_s: float = 90.0,
                 cwd: Optional[str] = None) -> tuple:
    """``stn-gluon serve`` on a free loopback port, started by ``children`` -> ``(process, port)`` once it accepts.

    cwd: the server's working folder; ``python -m`` puts it first on ``sys.path``, before ``PYTHONPATH``: a server
    meant to run another checkout's package (``env``'s ``PYTHONPATH``) must start there, not in this checkout."""
    port = free_port()
    cmd = [sys.executable, "-m", "stn_gluon", "serve", "--model", model, "--port", str(port),
           "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms)]
    if backend:
        cmd += ["--backend", backend]
    proc = children.start(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().strip().splitlines() if proc.stderr else []
            raise StnGluonError(f"the server did not start: {err[-1] if err else f'exit code {proc.returncode}'}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, port
        except OSError:
            time.sleep(0.1)
    children.stop(proc)
    raise StnGluonError(f"the server did not start within {timeout_s:g} s")


def png_payloads(count: int) -> List[bytes]:
    """``count`` real MNIST test digits (the embedded sample) as PNG files."""
    from PIL import Image

    from ..data.mnist import load_embedded_sample  # lazy: loads MXNet; the load-generating client stays light

    out = []
    for img in load_embedded_sample().test_images[:count]:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


async def _client(port: int, payloads: List[bytes], jobs: list, latencies: list, errors: list,
                  deadline: float) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as err:
        errors.append(f"connect: {err}")
        return
    try:
        while time.perf_counter() < deadline:
            try:
                i = jobs.pop()
            except IndexError:
                return
            body = payloads[i % len(payloads)]
            head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            tic = time.perf_counter()
            writer.write(head + body)
            await writer.drain()
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - tic)
            if not status_line.startswith(b"HTTP/1.1 200"):
                errors.append(status_line.decode(errors="replace").strip() or "connection closed")
    except (OSError, asyncio.IncompleteReadError) as err:
        errors.append(f"{type(err).__name__}: {err}")
    finally:
        writer.close()


async def load(port: int, payloads: List[bytes], requests: int, clients: int, max_seconds: float) -> dict:
    """``clients`` keep-alive connections POSTing ``payloads`` until ``requests`` are answered or ``max_seconds`` pass.

    Returns requests answered, errors (count and the first five), seconds,
    throughput (requests/s) and latency p50/p99 (ms).
    """
    jobs = list(range(requests))
    latencies: List[float] = []
    errors: List[str] = []
    tic = time.perf_counter()
    await asyncio.gather(*(_client(port, payloads, jobs, latencies, errors, tic + max_seconds)
                           for _ in range(clients)))
    elapsed = time.perf_counter() - tic
    lat = np.array(latencies or [float("nan")]) * 1000
    return dict(requests=len(latencies), errors=len(errors), error_samples=errors[:5], seconds=elapsed,
                throughput=len(latencies) / elapsed, p50_ms=float(np.percentile(lat, 50)),
                p99_ms=float(np.percentile(lat, 99)))


def run_async(coro: Any) -> Any:
    """asyncio.run, on uvloop when it is installed (a lighter client leaves the server more CPU)."""
    try:
        import uvloop  # lazy: optional (not a dependency), used where installed
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
