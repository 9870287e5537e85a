"""Micro-batching: concurrent requests gathered into one batch for one inference thread.

The inference thread is a daemon thread (:class:`DaemonExecutor`): a model call that never returns cannot keep
the process from exiting once the shutdown's grace period is over.
"""
import asyncio
import concurrent.futures
import queue
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

__all__ = ["MicroBatcher", "DaemonExecutor"]

#: Consecutive failed batches after which the model is reported failing (``/readyz``).
FAILING_AFTER = 3


class DaemonExecutor(concurrent.futures.Executor):
    """One daemon thread running what is submitted, in order (what ``ThreadPoolExecutor(1)`` does, but a
    call stuck forever does not block the interpreter's exit)."""

    def __init__(self, name: str = "inference"):
        self.jobs: "queue.SimpleQueue[Optional[Tuple[concurrent.futures.Future, Callable[..., Any], tuple]]]" = \
            queue.SimpleQueue()
        self.thread = threading.Thread(target=self._work, name=name, daemon=True)
        self.thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> "concurrent.futures.Future[Any]":
        future: "concurrent.futures.Future[Any]" = concurrent.futures.Future()
        self.jobs.put((future, (lambda: fn(*args, **kwargs)), ()))
        return future

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            future, fn, _ = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as err:  # handed to the caller, like ThreadPoolExecutor
                future.set_exception(err)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.jobs.put(None)
        if wait:
            self.thread.join()


class MicroBatcher:
    """Gathers concurrent requests into batches for one inference thread.

    ``await submit(x)`` with ``x`` ``(n, C, H, W)`` returns the predictor's
    outputs for those ``n`` rows. A batch closes at ``max_batch`` rows or
    ``max_wait_ms`` after its first request. If a whole batch fails, each
    request in it is retried alone, so only the culprit sees the error; once
    two retries have failed and none has succeeded, the model itself is failing
    and the rest get the batch's error without another call (a batch of N costs
    at most 3 calls then, never N + 1). :meth:`problem` says when the model is
    stuck (a call running longer than ``stuck_after_s``) or failing.
    """

    def __init__(self, predict: Callable[[np.ndarray], Dict[str, np.ndarray]], max_batch: int = 32,
                 max_wait_ms: float = 5.0, on_batch: Optional[Callable[[int], None]] = None,
                 stuck_after_s: float = 30.0):
        self.predict, self.max_batch, self.max_wait = predict, max(1, int(max_batch)), max_wait_ms / 1000
        self.on_batch, self.stuck_after = on_batch, stuck_after_s
        self.queue: "asyncio.Queue[Tuple[np.ndarray, asyncio.Future]]" = asyncio.Queue()
        self.executor = DaemonExecutor()
        self.task: Optional["asyncio.Task[None]"] = None
        self.busy_since: Optional[float] = None  # time.monotonic() when the model call now running began
        self.failures, self.last_error, self.calls = 0, "", 0
        self.live: List[Tuple[np.ndarray, Any]] = []  # the batch being run
        self.gave_up = False  # a drain ran out of time (a model call that does not return)
        self.draining: Optional["asyncio.Future[bool]"] = None

    def problem(self) -> Optional[str]:
        """Why the model cannot answer now (stuck in one call, or its last batches failed), or None."""
        since = self.busy_since
        if since is not None and time.monotonic() - since > self.stuck_after:
            return f"the model has been running one batch for {time.monotonic() - since:.0f} s"
        if self.failures >= FAILING_AFTER:
            return f"the model failed its last {self.failures} batches ({self.last_error})"
        return None

    def start(self) -> None:
        """Start the batching task (on the running event loop)."""
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def drain(self, grace_s: float, refusal: Callable[[], Exception]) -> bool:
        """Answer what is queued within ``grace_s``; then fail the rest with ``refusal()``. True: all answered.
        One drain at a time: a second call while one runs waits for that one; after one gave up, none waits."""
        if self.draining is None or self.draining.done():
            self.draining = asyncio.ensure_future(self._drain(grace_s, refusal))
        return await asyncio.shield(self.draining)

    async def _drain(self, grace_s: float, refusal: Callable[[], Exception]) -> bool:
        try:
            await asyncio.wait_for(self.queue.join(), 0 if self.gave_up else grace_s)
            return True
        except asyncio.TimeoutError:
            for _, future in self.live:
                if not future.done():
                    future.set_exception(refusal())
            while not self.queue.empty():
                _, future = self.queue.get_nowait()
                if not future.done():
                    future.set_exception(refusal())
                self.queue.task_done()
            self.gave_up = True
            return False

    async def stop(self, grace_s: float = 30.0, refusal: Callable[[], Exception] = RuntimeError) -> None:
        """Answer what is queued (for at most ``grace_s``), then stop the task and the inference thread
        (not waiting for a model call that does not return)."""
        if self.task is not None:
            await self.drain(grace_s, refusal)
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=False)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the inference thread, where every model call happens (MXNet's front end
        is not thread-safe: anything else that uses MXNet runs there too)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def submit(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((x, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        pending = None
        while True:
            first = pending or await self.queue.get()
            pending = None
            items, rows = [first], len(first[0])
            deadline = loop.time() + self.max_wait
            while rows < self.max_batch:
                timeout = deadline - loop.time()
                try:
                    item = self.queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(self.queue.get(), timeout)
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                if rows + len(item[0]) > self.max_batch:
                    pending = item  # starts the next batch
                    break
                items.append(item)
                rows += len(item[0])
            try:
                await self._run_batch(items)
            except Exception as err:  # never leave a caller waiting
                for _, future in items:
                    if not future.done():
                        future.set_exception(err)
            finally:
                self.live = []
                for _ in items:
                    self.queue.task_done()

    async def _call(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        """One model call on the inference thread, timed for :meth:`problem` and counted (``calls``)."""
        self.calls += 1
        self.busy_since = time.monotonic()
        try:
            out = await asyncio.get_running_loop().run_in_executor(self.executor, self.predict, x)
        except Exception as err:
            self.last_error = (str(err).splitlines() or [type(err).__name__])[0][:200]
            raise
        finally:
            self.busy_since = None
        return out

    async def _retry_alone(self, live: List[Tuple[np.ndarray, Any]], err: Exception) -> None:
        """A failed batch's requests, each retried alone once; once two retries failed and none succeeded
        the model is failing, and the rest get ``err`` without a call."""
        succeeded = failed = 0
        for x, f in live:
            if failed >= 2 and not succeeded:
                f.done() or f.set_exception(err)
                continue
            try:
                out = await self._call(x)
                succeeded += 1
                f.done() or f.set_result(out)
            except Exception as single:
                failed += 1
                f.done() or f.set_exception(single)
        self.failures = 0 if succeeded else self.failures + 1

    async def _run_batch(self, items: List[Tuple[np.ndarray, Any]]) -> None:
        live = self.live = [(x, f) for x, f in items if not f.done()]
        if not live:
            return
        batch = np.concatenate([x for x, _ in live]) if len(live) > 1 else live[0][0]
        if self.on_batch:
            self.on_batch(len(batch))
        try:
            outputs = await self._call(batch)
        except Exception as err:  # isolate: run each request alone
            if len(live) == 1:
                self.failures += 1
                live[0][1].done() or live[0][1].set_exception(err)
                return
            await self._retry_alone(live, err)
            return
        self.failures = 0
        start = 0
        for x, f in live:
            n = len(x)
            if not f.done():
                f.set_result({k: v[start:start + n] for k, v in outputs.items()})
            start += n
