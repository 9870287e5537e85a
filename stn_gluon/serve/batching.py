"""Micro-batching: concurrent requests gathered into one batch for one inference thread."""
import asyncio
import concurrent.futures
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

__all__ = ["MicroBatcher"]


class MicroBatcher:
    """Gathers concurrent requests into batches for one inference thread.

    ``await submit(x)`` with ``x`` ``(n, C, H, W)`` returns the predictor's
    outputs for those ``n`` rows. A batch closes at ``max_batch`` rows or
    ``max_wait_ms`` after its first request. If a whole batch fails, each
    request in it is retried alone, so only the culprit sees the error.
    """

    def __init__(self, predict: Callable[[np.ndarray], Dict[str, np.ndarray]], max_batch: int = 32,
                 max_wait_ms: float = 5.0, on_batch: Optional[Callable[[int], None]] = None):
        self.predict, self.max_batch, self.max_wait = predict, max(1, int(max_batch)), max_wait_ms / 1000
        self.on_batch = on_batch
        self.queue: "asyncio.Queue[Tuple[np.ndarray, asyncio.Future]]" = asyncio.Queue()
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.task: Optional["asyncio.Task[None]"] = None

    def start(self) -> None:
        """Start the batching task (on the running event loop)."""
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Answer what is queued, then stop the task and the inference thread."""
        if self.task is not None:
            await self.queue.join()
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

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
                await self._run_batch(loop, items)
            except Exception as err:  # never leave a caller waiting
                for _, future in items:
                    if not future.done():
                        future.set_exception(err)
            finally:
                for _ in items:
                    self.queue.task_done()

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, items: List[Tuple[np.ndarray, Any]]) -> None:
        live = [(x, f) for x, f in items if not f.done()]
        if not live:
            return
        batch = np.concatenate([x for x, _ in live]) if len(live) > 1 else live[0][0]
        if self.on_batch:
            self.on_batch(len(batch))
        try:
            outputs = await loop.run_in_executor(self.executor, self.predict, batch)
        except Exception as err:  # isolate: run each request alone
            if len(live) == 1:
                live[0][1].set_exception(err)
                return
            for x, f in live:
                try:
                    out = await loop.run_in_executor(self.executor, self.predict, x)
                    f.done() or f.set_result(out)
                except Exception as single:
                    f.done() or f.set_exception(single)
            return
        start = 0
        for x, f in live:
            n = len(x)
            if not f.done():
                f.set_result({k: v[start:start + n] for k, v in outputs.items()})
            start += n
