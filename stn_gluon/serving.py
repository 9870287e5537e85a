"""HTTP serving of an exported STN classifier (Starlette under uvicorn).

The model is loaded from its exported files alone (``-symbol.json`` +
``.params`` through ``SymbolBlock``, or the ``.onnx`` file through ONNX
Runtime); no training code runs. Endpoints:

* ``POST /v1/predict``: an image body (``image/png``, ``image/jpeg``, ...), a
  ``multipart/form-data`` upload of one or more images, or JSON
  ``{"instances": [[...H x W...], ...]}`` (pixel values in [0, 1], or 0..255
  with ``"pixel_range": "0-255"``). Query: ``return_image=1`` adds the rectified
  image as base64 PNG, ``invert=1`` for dark-on-light drawings. Answers
  ``{"predictions": [{"label", "class", "probabilities", "theta"}, ...]}``.
* ``GET /healthz`` (alive), ``GET /readyz`` (model loaded, not shutting down),
  ``GET /v1/model`` (backend, input, classes, source files and SHA-256),
  ``GET /metrics`` (Prometheus text format).

Concurrent requests are gathered by a :class:`MicroBatcher` into one batch
(up to ``max_batch`` images or ``max_wait_ms``) and answered separately. Every
input is decoded and validated before it joins a batch, so a bad request gets
its own 4xx and never fails the others.
"""
import asyncio
import base64
import concurrent.futures
import contextlib
import json
import logging
import math
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np

from .errors import StnGluonError
from .io import sha256_file
from .inference import array_to_pixels, decode_image, describe, load_predictor, preprocess, to_png

__all__ = ["ServeConfig", "MicroBatcher", "build_app", "serve", "HTTPError"]

log = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    model: str
    backend: str = None
    host: str = "127.0.0.1"
    port: int = 8080
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_body_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 16 * 1024 * 1024
    max_instances: int = 256
    timeout_s: float = 30.0
    threads: int = None


class HTTPError(Exception):
    """An answer other than 200, with a one-line reason."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class MicroBatcher:
    """Gathers concurrent requests into batches for one inference thread.

    ``await submit(x)`` with ``x`` ``(n, C, H, W)`` returns the predictor's
    outputs for those ``n`` rows. A batch closes at ``max_batch`` rows or
    ``max_wait_ms`` after its first request. If a whole batch fails, each
    request in it is retried alone, so only the culprit sees the error.
    """

    def __init__(self, predict, max_batch=32, max_wait_ms=5.0, on_batch=None):
        self.predict, self.max_batch, self.max_wait = predict, max(1, int(max_batch)), max_wait_ms / 1000
        self.on_batch = on_batch
        self.queue = asyncio.Queue()
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.task = None

    def start(self):
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self):
        if self.task is not None:
            await self.queue.join()
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def submit(self, x):
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((x, future))
        return await future

    async def _run(self):
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

    async def _run_batch(self, loop, items):
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




class _Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("stn_requests", "HTTP requests answered", ["endpoint", "code"], registry=self.registry)
        self.errors = Counter("stn_request_errors", "Requests answered with an error", ["endpoint", "code"],
                              registry=self.registry)
        self.latency = Histogram("stn_request_latency_seconds", "Time to answer /v1/predict", registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.batch = Histogram("stn_batch_size", "Images per inference batch", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.images = Counter("stn_images", "Images classified", registry=self.registry)

    def render(self):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no", "")


@contextlib.asynccontextmanager
async def _timeout(seconds):
    """``asyncio.timeout`` (no task per request) where Python has it, else ``wait_for``'s effect."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            yield
        return
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    handle = loop.call_later(seconds, task.cancel)
    try:
        yield
    except asyncio.CancelledError:
        raise asyncio.TimeoutError() from None
    finally:
        handle.cancel()


def _flag(request, name):
    value = request.query_params.get(name, "0").lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise HTTPError(400, f"query parameter {name}={value!r}: expected 1 or 0")


def build_app(predictor, config, model_info=None):
    """The Starlette app serving ``predictor`` (see :mod:`stn_gluon.inference`)."""
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    metrics = _Metrics()
    state = {"ready": False}
    c, h, w = predictor.input_shape
    batcher = MicroBatcher(predictor.predict, config.max_batch, config.max_wait_ms,
                           on_batch=metrics.batch.observe)

    async def read_body(request):
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > config.max_body_bytes:
                    raise HTTPError(413, f"body of {declared} bytes is larger than the {config.max_body_bytes} allowed")
            except ValueError:
                raise HTTPError(400, "bad Content-Length header") from None
        chunks, size = [], 0

        async def collect():
            nonlocal size
            async for chunk in request.stream():
                size += len(chunk)
                if size > config.max_body_bytes:
                    raise HTTPError(413, f"body larger than the {config.max_body_bytes} bytes allowed")
                chunks.append(chunk)

        try:
            async with _timeout(config.timeout_s):
                await collect()
        except asyncio.TimeoutError:
            raise HTTPError(408, f"the request body did not arrive within {config.timeout_s:g} s") from None
        return b"".join(chunks)

    def decode(data, name):
        try:
            return decode_image(data, (h, w), name, max_pixels=config.max_pixels)[None, None]
        except StnGluonError as err:
            status = 413 if "allowed" in str(err) else 400
            raise HTTPError(status, str(err)) from None

    async def parse_instances(request):
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype.startswith("image/"):
            if c != 1:
                raise HTTPError(415, f"the model takes {c} channels; send JSON instances")
            return decode(await read_body(request), "image body")
        if ctype == "application/json":
            body = await read_body(request)
            try:
                doc = json.loads(body)
            except (ValueError, UnicodeDecodeError) as err:
                raise HTTPError(400, f"body is not valid JSON ({str(err)[:80]})") from None
            except RecursionError:
                raise HTTPError(400, "body is JSON nested too deeply") from None
            if not isinstance(doc, dict) or "instances" not in doc:
                raise HTTPError(400, 'JSON body must be an object with "instances": [...]')
            instances = doc["instances"]
            if not isinstance(instances, list) or not instances:
                raise HTTPError(400, '"instances" must be a non-empty list')
            if len(instances) > config.max_instances:
                raise HTTPError(413, f"{len(instances)} instances; at most {config.max_instances} per request")
            scale = {"0-1": 1.0, "0-255": 255.0}.get(doc.get("pixel_range", "0-1"))
            if scale is None:
                raise HTTPError(400, '"pixel_range" must be "0-1" or "0-255"')
            try:
                arr = np.array(instances, dtype=np.float64)
            except (ValueError, TypeError):
                raise HTTPError(422, "instances must be equally shaped arrays of numbers") from None
            if arr.ndim < 3:
                raise HTTPError(422, f"instances have shape {arr.shape[1:]}; each must be ({h}, {w})"
                                     f"{'' if c == 1 else f' or ({c}, {h}, {w})'}")
            if not np.isfinite(arr).all():
                raise HTTPError(422, "instances contain NaN or infinite values")
            if arr.min() < 0 or arr.max() > scale:
                raise HTTPError(422, f"pixel values must lie in [0, {scale:g}] (pixel_range)")
            try:
                return array_to_pixels((arr / scale).astype(np.float32), (c, h, w), "instances")
            except StnGluonError as err:
                raise HTTPError(422, str(err)) from None
        if ctype == "multipart/form-data":
            try:
                form = await asyncio.wait_for(
                    request.form(max_files=config.max_instances, max_fields=config.max_instances,
                                 max_part_size=config.max_body_bytes), timeout=config.timeout_s)
            except asyncio.TimeoutError:
                raise HTTPError(408, "the upload did not arrive within the time allowed") from None
            except Exception as err:  # multipart parse errors come in several types
                if isinstance(err, ClientDisconnect):
                    raise
                detail = str(getattr(err, "detail", None) or err or type(err).__name__)
                if detail.startswith("Too many") or "exceeded maximum size" in detail.lower():
                    raise HTTPError(413, f"multipart body: {detail[:100]}") from None
                raise HTTPError(400, f"malformed multipart body ({detail[:100]})") from None
            files = [v for _, v in form.multi_items() if hasattr(v, "read")]
            if not files:
                raise HTTPError(400, "multipart body has no file")
            if len(files) > config.max_instances:
                raise HTTPError(413, f"{len(files)} files; at most {config.max_instances} per request")
            total, images = 0, []
            for f in files:
                data = await f.read()
                total += len(data)
                if total > config.max_body_bytes:
                    raise HTTPError(413, f"upload larger than the {config.max_body_bytes} bytes allowed")
                images.append(decode(data, f.filename or "upload"))
            return np.concatenate(images)
        raise HTTPError(415, f"unsupported content type {ctype or '(none)'}: send image/*, "
                             f"multipart/form-data or application/json")

    def error_response(endpoint, status, message):
        metrics.requests.labels(endpoint, str(status)).inc()
        metrics.errors.labels(endpoint, str(status)).inc()
        return JSONResponse({"error": message, "status": status}, status_code=status)

    async def predict(request):
        tic = time.perf_counter()
        try:
            return_image, invert = _flag(request, "return_image"), _flag(request, "invert")
            pixels = await parse_instances(request)
            x = preprocess(pixels, predictor.mean, predictor.std, invert=invert)
            try:
                async with _timeout(config.timeout_s):
                    outputs = await batcher.submit(x)
            except asyncio.TimeoutError:
                raise HTTPError(503, f"inference did not finish within {config.timeout_s:g} s") from None
            if return_image and "warped" not in outputs:
                raise HTTPError(400, "return_image=1: this model has no spatial transformer")
            results = describe(outputs, predictor.classes, [f"#{i}" for i in range(len(x))])
            for i, entry in enumerate(results):
                entry.pop("input")
                if return_image:
                    entry["image"] = base64.b64encode(to_png(outputs["warped"][i], predictor.mean,
                                                             predictor.std)).decode("ascii")
            metrics.images.inc(len(results))
            metrics.requests.labels("/v1/predict", "200").inc()
            return JSONResponse({"predictions": results})
        except HTTPError as err:
            return error_response("/v1/predict", err.status, err.message)
        except ClientDisconnect:
            return error_response("/v1/predict", 499, "client disconnected")
        except StnGluonError as err:
            return error_response("/v1/predict", 422, str(err))
        except Exception as err:  # never let one request take anything down
            log.exception("predict failed")
            return error_response("/v1/predict", 500, f"internal error: {type(err).__name__}")
        finally:
            metrics.latency.observe(time.perf_counter() - tic)

    async def healthz(request):
        metrics.requests.labels("/healthz", "200").inc()
        return JSONResponse({"status": "ok"})

    async def readyz(request):
        code = 200 if state["ready"] else 503
        metrics.requests.labels("/readyz", str(code)).inc()
        return JSONResponse({"ready": state["ready"]}, status_code=code)

    async def model(request):
        metrics.requests.labels("/v1/model", "200").inc()
        return JSONResponse(model_info or {})

    async def prometheus(request):
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    async def not_found(request, exc):
        status = getattr(exc, "status_code", 404)
        return JSONResponse({"error": getattr(exc, "detail", "not found"), "status": status}, status_code=status)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            await batcher.stop()

    routes = [Route("/v1/predict", predict, methods=["POST"]), Route("/healthz", healthz, methods=["GET"]),
              Route("/readyz", readyz, methods=["GET"]), Route("/v1/model", model, methods=["GET"]),
              Route("/metrics", prometheus, methods=["GET"])]
    from starlette.exceptions import HTTPException
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: not_found})
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.serving = state
    return app


def model_info(predictor, path):
    """What ``GET /v1/model`` reports."""
    info = dict(backend=predictor.backend, input_shape=[None] + list(predictor.input_shape),
                mean=predictor.mean, std=predictor.std, classes=predictor.classes, model=os.path.abspath(path),
                files={os.path.basename(f): sha256_file(f) for f in predictor.source})
    if predictor.backend == "onnxruntime":
        info["opset"] = int(predictor.model.meta.get("opset", 0)) or None
    else:
        info["symbol"] = os.path.basename(predictor.source[0])
        info["epoch"] = predictor.model.epoch
    return info


def _bind(host, port):
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise StnGluonError(f"--host {host}: {err}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as err:
        sock.close()
        raise StnGluonError(f"cannot listen on {host}:{port} ({err.strerror})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(config, echo=print):
    """Load the model, bind, and serve until SIGTERM/SIGINT (requests in flight are answered)."""
    import uvicorn

    for name in ("max_batch", "max_body_bytes", "max_pixels", "max_instances"):
        if getattr(config, name) < 1:
            raise StnGluonError(f"--{name.replace('_', '-')} must be >= 1")
    if not (config.max_wait_ms >= 0 and math.isfinite(config.max_wait_ms)):
        raise StnGluonError("--max-wait-ms must be >= 0")
    if not config.timeout_s > 0:
        raise StnGluonError("--timeout-s must be > 0")
    predictor = load_predictor(config.model, config.backend, threads=config.threads)
    warm = np.zeros((1,) + tuple(predictor.input_shape), np.float32)
    predictor.predict(warm)  # fail at start, not on the first request
    info = model_info(predictor, config.model)
    app = build_app(predictor, config, info)
    sock = _bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    echo(f"Serving {info['model']} ({predictor.backend}, input {tuple(predictor.input_shape)}, "
         f"max batch {config.max_batch}, max wait {config.max_wait_ms:g} ms) on http://{host}:{port}", )
    server = _Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                    timeout_graceful_shutdown=config.timeout_s, lifespan="on",
                                    limit_concurrency=4096, timeout_keep_alive=30))
    server.run(sockets=[sock])
    echo(f"Stopped{' on ' + signal.Signals(server.stop_signal).name if server.stop_signal else ''}: "
         f"requests in flight were answered")


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, ending with status 0 after a graceful SIGTERM/SIGINT shutdown
        (uvicorn would re-raise the signal and die by it)."""

        stop_signal = None

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)
            self.stop_signal = self._captured_signals[-1] if getattr(self, "_captured_signals", None) else None

    return Server


def _Server(config):
    return _server_class()(config)
