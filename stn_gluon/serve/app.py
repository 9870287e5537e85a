"""HTTP serving of an exported STN classifier (Starlette under uvicorn).

The model is loaded from its exported files alone (``-symbol.json`` +
``.params`` through ``SymbolBlock``, or the ``.onnx`` file through ONNX
Runtime); no training code runs. Endpoints:

* ``POST /v1/predict``: an image body (``image/png``, ``image/jpeg``, ...), a
  ``multipart/form-data`` upload of one or more images, or JSON
  ``{"instances": [[...H x W...], ...]}`` (``(C, H, W)`` each for a colour model; pixel values in [0, 1], or
  0..255 with ``"pixel_range": "0-255"``; values outside the declared range are a 422
  naming the range found, the same check as ``stn-gluon predict`` on ``.npy``).
  Images are decoded to the model's channels (RGB for a 3-channel model) and size
  (:mod:`stn_gluon.serve.inputs`); the digit rules (transparency onto a background that contrasts
  with the strokes, polarity) apply to digit models only. Query: ``return_image=1`` adds the rectified
  image as base64 PNG (``image``); ``return_input=1`` the input as the model read it
  (``input_image``, base64 PNG); ``return_grid=1`` the region the STN sampled
  in input pixels (``grid``: ``outline`` and ``lines``, see
  :mod:`stn_gluon.nn.explain`); ``invert=auto|1|0`` (also ``true``/``false``; default ``auto``; digit
  models): ``auto`` inverts the inputs that look dark on light (MNIST is light on dark),
  ``1`` inverts all (a 400 for a model that is not a digit model), ``0`` none. Answers
  ``{"predictions": [{"label", "class", "probabilities", "theta", "inverted", "rules"}, ...]}``, where
  ``class`` is the label's name, ``inverted`` (bool) says whether that input was inverted before
  classification and ``rules`` lists what was done to it (:data:`stn_gluon.serve.inputs.RULES`); an image
  also gets ``source_size`` ([width, height], upright) to draw ``grid`` on it.
* ``GET /``: a web page (``stn_gluon/web``: plain HTML, CSS, JavaScript) to
  draw a digit on or drop an image (for a model that is not a digit model: upload or drop a photo),
  showing what the model and its STN did; it calls ``POST /v1/predict`` like any client.
  ``GET /favicon.ico``: its icon.
* ``GET /healthz`` (alive), ``GET /readyz`` (model loaded, not stuck or failing, not shutting down),
  ``GET /v1/model`` (backend, input, classes, source files and SHA-256; no paths),
  ``GET /metrics`` (Prometheus text format, labelled by route).

Concurrent requests are gathered by a :class:`MicroBatcher` into one batch
(up to ``max_batch`` images or ``max_wait_ms``) and answered separately. Every
input is decoded and validated (:mod:`stn_gluon.serve.payloads`) before it joins a
batch, so a bad request gets its own 4xx and never fails the others.

Against hostile clients (docs/serving.md, "Running it on a network"): :class:`~stn_gluon.serve.guard.Guard`
checks the Host, the token and the Origin, caps requests and body bytes in flight and counts each body as it
arrives; images and JSON are decoded in a bounded worker pool (:class:`DecodePool`) with the request's
deadline, never on the event loop (but for a digit-sized body, cheaper to decode in place); uvicorn's protocol
gets a time limit on request heads (slow-loris); a model call stuck past ``--timeout-s`` turns ``/readyz`` to
503, and shutdown drains for 3/4 of ``--timeout-s`` at most, then answers the rest 503 and exits.
"""
import asyncio
import base64
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import (TYPE_CHECKING, Any, AsyncIterator, Callable, Dict, Iterator, List, Optional, Tuple, Type,
                    TypeVar, cast)

import numpy as np

from .batching import MicroBatcher
from .guard import Guard, GuardPolicy, TOKEN_ENV, allowed_hosts, is_loopback, protocol_class, resolve_token, route_label
from .._runtime.errors import StnGluonError
from ..data.normalization import as_channel_values
from ..nn.explain import sampling_regions
from ..nn.pretrained import PREFIX, is_pretrained_ref, model_or_default
from .._runtime.flags import option, validate_fields
from .predictors import BACKENDS, Predictor, describe, load_predictor, preprocess, to_png
from .inputs import InputBatch, InputSpec, apply_rules
from .metrics import ServerMetrics
from .payloads import (HTTPError, PredictOptions, check_file_count, check_length, check_total, content_kind,
                       decode_uploads, image_pixels, multipart_error, parse_json_instances, parse_options)

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.datastructures import UploadFile
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

__all__ = ["ServeConfig", "MicroBatcher", "build_app", "serve", "HTTPError", "PredictService", "model_info"]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class ServeConfig:
    """How to serve: the model (``.onnx``, save dir or export prefix), backend, address, batching
    (``max_batch`` images, ``max_wait_ms``), request limits and timeout, ONNX Runtime threads."""

    model: Optional[str] = option(None, ".onnx file, save dir, export prefix or pretrained:NAME; none: the "
                                        "pretrained MNIST model", cli=False)
    backend: Optional[str] = option(None, "mxnet or onnxruntime; none: onnxruntime for a .onnx model, mxnet "
                                          "otherwise", choices=BACKENDS)
    host: str = option("127.0.0.1", "address to bind (loopback only by default)")
    port: int = option(8080, "port (0: any free one)", minimum=0, maximum=65535)
    max_batch: int = option(32, "images per inference batch (1: no batching)", minimum=1)
    max_wait_ms: float = option(5.0, "how long a batch waits to fill", minimum=0)
    max_body_bytes: int = option(8 * 1024 * 1024, "largest request body", minimum=1)
    max_pixels: int = option(4 * 1024 * 1024, "largest image (width x height) accepted, checked before decoding "
                                              "(a 28x28 classifier gains nothing from more)", minimum=1)
    max_request_pixels: int = option(16 * 1024 * 1024, "pixels of all the images of one request together",
                                     minimum=1)
    max_instances: int = option(256, "images per request", minimum=1)
    timeout_s: float = option(30.0, "request timeout; also the shutdown grace and how long one model call may "
                                    "run before /readyz says it is stuck", minimum=0, exclusive_minimum=True)
    threads: Optional[int] = option(None, "CPU threads for ONNX Runtime; none: all", minimum=1)
    token: Optional[str] = option(None, f"bearer token clients must send (Authorization: Bearer ...); also "
                                        f"--token-file or ${TOKEN_ENV} (better: not seen in ps); required "
                                        f"unless --host is loopback")
    token_file: Optional[str] = option(None, "file whose first line is the token")
    allowed_hosts: Optional[str] = option(None, "Host names accepted besides loopback and --host, "
                                                "comma-separated (*: any, e.g. behind a proxy that checks)")
    max_requests: Optional[int] = option(None, "requests in flight at once, 503 beyond (idle connections do "
                                               "not count); none: 64 per CPU core, at least 128", minimum=1)
    max_inflight_bytes: int = option(256 * 1024 * 1024, "request body bytes held at once by all requests "
                                                        "together, 503 beyond", minimum=1)
    header_timeout_s: float = option(10.0, "time a client has to send a request's headers (slow or idle "
                                           "connections are closed)", minimum=0, exclusive_minimum=True)
    decode_workers: Optional[int] = option(None, "threads decoding images and JSON; none: CPU cores, at most 4",
                                           minimum=1)

    def request_limit(self) -> int:
        """``max_requests``, or its default for this machine."""
        return self.max_requests or max(128, 64 * (os.cpu_count() or 1))


#: The web page's files (in ``stn_gluon/web``) and their media types: ``/`` and ``/static/<name>`` (the icon
#: at ``/favicon.ico`` too).
WEB_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
             "style.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}
#: The page loads nothing from elsewhere (it works offline) and may not be framed.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                                           "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
                "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def read_web_files() -> Dict[str, bytes]:
    """The web page's files, read once from the package (:data:`WEB_FILES`)."""
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
    files = {}
    for name in WEB_FILES:
        try:
            with open(os.path.join(folder, name), "rb") as f:
                files[name] = f.read()
        except OSError as err:
            raise StnGluonError(f"the web page's {name} is missing from the package ({err.strerror}); "
                                f"reinstall stn-gluon") from None
    return files


@contextlib.asynccontextmanager
async def _timeout(seconds: float) -> AsyncIterator[None]:
    """``asyncio.timeout`` (no task per request) where Python has it, else ``wait_for``'s effect."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            yield
        return
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None  # called inside a request's task
    handle = loop.call_later(seconds, task.cancel)
    try:
        yield
    except asyncio.CancelledError:
        raise asyncio.TimeoutError() from None
    finally:
        handle.cancel()


async def read_body(request: "Request", max_bytes: int, timeout_s: float) -> bytes:
    """The request body, refused past ``max_bytes`` (413) or ``timeout_s`` (408)."""
    check_length(request.headers.get("content-length"), max_bytes)
    chunks: List[bytes] = []
    size = 0
    try:
        async with _timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                check_total(size, max_bytes, "body")
                chunks.append(chunk)
    except asyncio.TimeoutError:
        raise HTTPError(408, f"the request body did not arrive within {timeout_s:g} s") from None
    return b"".join(chunks)


async def read_uploads(request: "Request", config: ServeConfig) -> List[Tuple[bytes, str]]:
    """A ``multipart/form-data`` body -> its files' ``(bytes, name)``, each read with a bound (the body's
    bytes are counted as they arrive by :class:`~stn_gluon.serve.guard.Guard` too)."""
    from starlette.requests import ClientDisconnect

    check_length(request.headers.get("content-length"), config.max_body_bytes)
    try:
        form = await asyncio.wait_for(
            request.form(max_files=config.max_instances, max_fields=config.max_instances,
                         max_part_size=config.max_body_bytes), timeout=config.timeout_s)
    except asyncio.TimeoutError:
        raise HTTPError(408, "the upload did not arrive within the time allowed") from None
    except (ClientDisconnect, HTTPError):
        raise
    except Exception as err:  # multipart parse errors come in several types
        raise multipart_error(err) from None
    files = cast("List[UploadFile]", [v for _, v in form.multi_items() if hasattr(v, "read")])
    try:
        check_file_count(len(files), config.max_instances)
        total, images = 0, []
        for f in files:
            data = await f.read(config.max_body_bytes + 1 - total)
            total += len(data)
            check_total(total, config.max_body_bytes)
            images.append((data, f.filename or "upload"))
        return images
    finally:
        await form.close()


#: Bodies decoded on the event loop rather than in the pool: JSON up to this size, images up to this many
#: bytes and :data:`INLINE_PIXELS` pixels each (a digit of 128 x 128 decodes in well under a millisecond).
INLINE_BYTES, INLINE_PIXELS = 64 * 1024, 128 * 128


class DecodePool:
    """Images and JSON decoded off the event loop: ``workers`` threads, at most ``64 x workers`` jobs queued
    (503 beyond), each awaited until the request's deadline (503 past it; a job still queued then is
    cancelled). One job decodes one request's images one after the other, so the pixels decoded at once are
    at most ``workers x --max-pixels``."""

    def __init__(self, workers: int):
        import concurrent.futures  # lazy: the pool's threads start with the server

        self.executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="decode")
        self.slots = 64 * workers
        self.queued = 0

    async def run(self, deadline: float, fn: Callable[..., T], *args: Any) -> T:
        if self.queued >= self.slots:
            raise HTTPError(503, "the server is busy decoding other requests; try again")
        loop = asyncio.get_running_loop()
        self.queued += 1
        try:
            async with _timeout(max(deadline - loop.time(), 0.001)):
                return await loop.run_in_executor(self.executor, fn, *args)
        except asyncio.TimeoutError:
            raise HTTPError(503, "decoding the request took longer than the time allowed") from None
        finally:
            self.queued -= 1

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


async def read_pixels(request: "Request", config: ServeConfig, spec: InputSpec, pool: DecodePool) -> InputBatch:
    """Any accepted body -> validated pixels ``float32 (N, C, H, W)`` in [0, 1], read as ``spec`` says, with
    each input's rules and image size (:class:`~stn_gluon.serve.inputs.InputBatch`), decoded in ``pool`` (or
    here when small: :data:`INLINE_BYTES` of JSON, images of :data:`INLINE_PIXELS` pixels at most, by their
    headers; a thread hand-off costs more than decoding a digit)."""
    deadline = asyncio.get_running_loop().time() + config.timeout_s
    kind = content_kind(request.headers.get("content-type"), spec.channels)
    if kind == "multipart":
        images = await read_uploads(request, config)
    else:
        body = await read_body(request, config.max_body_bytes, config.timeout_s)
        if kind == "json":
            args_json = (body, spec.input_shape, config.max_instances)
            pixels = parse_json_instances(*args_json) if len(body) <= INLINE_BYTES else \
                await pool.run(deadline, parse_json_instances, *args_json)
            return InputBatch.of_arrays(pixels, [f"#{i}" for i in range(len(pixels))])
        images = [(body, "image body")]
    args = (images, spec, config.max_pixels, config.max_request_pixels)
    if sum(len(data) for data, _ in images) <= INLINE_BYTES and \
            all((image_pixels(data) or 0) <= INLINE_PIXELS for data, _ in images):
        return decode_uploads(*args)
    return await pool.run(deadline, decode_uploads, *args)


class PredictService:
    """The endpoints' handlers around one predictor, its batcher and its metrics."""

    def __init__(self, predictor: Predictor, config: ServeConfig, info: Optional[Dict[str, Any]] = None):
        self.predictor, self.config, self.info = predictor, config, info or {}
        self.spec = predictor.input_spec()
        c = self.spec.input_shape[0]  # the normalisation, read once rather than per request
        self.mean, self.std = as_channel_values(predictor.mean, c, "mean"), as_channel_values(predictor.std, c, "std")
        self.web = read_web_files()
        self.metrics = ServerMetrics()
        self.batcher = MicroBatcher(predictor.predict, config.max_batch, config.max_wait_ms,
                                    on_batch=self.metrics.batch.observe, stuck_after_s=config.timeout_s)
        self.decoder = DecodePool(config.decode_workers or min(4, os.cpu_count() or 1))
        self.state = {"ready": False}

    def count(self, endpoint: str, status: int) -> None:
        """One answer in the metrics; ``endpoint`` is a route (:func:`~stn_gluon.serve.guard.route_label`)."""
        self.metrics.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.metrics.errors.labels(endpoint, str(status)).inc()

    def answer(self, endpoint: str, doc: Dict[str, Any], status: int = 200) -> "JSONResponse":
        from starlette.responses import JSONResponse

        self.count(endpoint, status)
        # a refused body may still be arriving: close rather than read it to its end
        headers = {"Connection": "close"} if status in (408, 413, 503) else None
        return JSONResponse(doc, status_code=status, headers=headers)

    async def classify(self, request: "Request") -> Dict[str, Any]:
        p = self.predictor
        options = parse_options(request.query_params)
        if options.invert is True and not self.spec.digits:
            raise HTTPError(400, "query parameter invert=1: this model is not a digit model (digits: false); its "
                                 "inputs are never inverted")
        batch = await read_pixels(request, self.config, self.spec, self.decoder)
        pixels, inverted = apply_rules(batch.pixels, batch.rules, self.spec.digits, options.invert)
        try:
            async with _timeout(self.config.timeout_s):
                outputs = await self.batcher.submit(preprocess(pixels, self.mean, self.std))
        except asyncio.TimeoutError:
            raise HTTPError(503, f"inference did not finish within {self.config.timeout_s:g} s") from None
        regions = await self.explain(options, outputs)
        results = describe(outputs, p.classes, batch.names, inverted, batch.rules)
        for i, entry in enumerate(results):
            entry.pop("input")
            size = batch.sizes[i]
            if size is not None:
                entry["source_size"] = list(size)
            if options.return_image:
                entry["image"] = base64.b64encode(to_png(outputs["warped"][i], p.mean, p.std)).decode("ascii")
            if options.return_input:
                entry["input_image"] = base64.b64encode(to_png(pixels[i], 0.0, 1.0)).decode("ascii")
            if regions is not None:
                entry["grid"] = regions[i]
        self.metrics.images.inc(len(results))
        return {"predictions": results}

    async def explain(self, options: PredictOptions, outputs: Dict[str, np.ndarray]) -> Optional[List[Any]]:
        """Refuse ``return_image``/``return_grid`` for a model without an STN (400); the sampling regions
        (:func:`~stn_gluon.nn.explain.sampling_regions`, on the inference thread) when ``return_grid``."""
        p = self.predictor
        explain = [name for name, asked in (("return_image", options.return_image),
                                            ("return_grid", options.return_grid)) if asked]
        if explain and "warped" not in outputs:
            raise HTTPError(400, f"{explain[0]}=1: this model has no spatial transformer")
        if not options.return_grid:
            return None
        if "theta" not in outputs:
            raise HTTPError(400, "return_grid=1: this model does not report its transform's parameters")
        regions: List[Any] = await self.batcher.run(sampling_regions, outputs["theta"], p.transform,
                                                    outputs["warped"].shape[2:], p.input_shape[1:])
        return regions

    async def predict(self, request: "Request") -> "JSONResponse":
        from starlette.requests import ClientDisconnect

        tic = time.perf_counter()
        try:
            return self.answer("/v1/predict", await self.classify(request))
        except HTTPError as err:
            return self.answer("/v1/predict", {"error": err.message, "status": err.status}, err.status)
        except ClientDisconnect:
            return self.answer("/v1/predict", {"error": "client disconnected", "status": 499}, 499)
        except StnGluonError as err:
            return self.answer("/v1/predict", {"error": str(err), "status": 422}, 422)
        except Exception as err:  # never let one request take anything down
            log.exception("predict failed")
            return self.answer("/v1/predict", {"error": f"internal error: {type(err).__name__}", "status": 500}, 500)
        finally:
            self.metrics.latency.observe(time.perf_counter() - tic)

    async def page(self, request: "Request") -> "Response":
        """``GET /``, ``GET /static/{name}`` and ``GET /favicon.ico``: the web page (:data:`WEB_FILES`), from the
        package."""
        from starlette.responses import Response

        name = "favicon.svg" if request.url.path == "/favicon.ico" else request.path_params.get("name", "index.html")
        if name not in WEB_FILES:
            return self.answer(route_label(request.url.path), {"error": "not found", "status": 404}, 404)
        self.metrics.requests.labels("/" if name == "index.html" else "/static", "200").inc()
        return Response(self.web[name], media_type=WEB_FILES[name], headers=PAGE_HEADERS)

    async def healthz(self, request: "Request") -> "JSONResponse":
        return self.answer("/healthz", {"status": "ok"})

    async def readyz(self, request: "Request") -> "JSONResponse":
        if not self.state["ready"]:
            return self.answer("/readyz", {"ready": False, "reason": "not started or shutting down"}, 503)
        problem = self.batcher.problem()
        if problem is not None:
            return self.answer("/readyz", {"ready": False, "reason": problem}, 503)
        return self.answer("/readyz", {"ready": True})

    async def model(self, request: "Request") -> "JSONResponse":
        return self.answer("/v1/model", self.info)

    async def prometheus(self, request: "Request") -> "Response":
        from starlette.responses import Response

        body, ctype = self.metrics.render()
        return Response(body, media_type=ctype)

    async def not_found(self, request: "Request", exc: Exception) -> "JSONResponse":
        from starlette.responses import JSONResponse

        status = getattr(exc, "status_code", 404)
        self.count(route_label(request.url.path), status)
        return JSONResponse({"error": getattr(exc, "detail", "not found"), "status": status}, status_code=status)

    async def drain(self) -> bool:
        """Shutting down: not ready; what is queued is answered within 3/4 of ``--timeout-s``, the rest 503
        (the last quarter writes the answers and exits). True: everything was answered."""
        self.state["ready"] = False
        return await self.batcher.drain(0.75 * self.config.timeout_s, _shutting_down)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: "Starlette") -> AsyncIterator[None]:
        self.batcher.start()
        self.state["ready"] = True
        try:
            yield
        finally:
            self.state["ready"] = False
            await self.batcher.stop(0.75 * self.config.timeout_s, _shutting_down)
            self.decoder.close()


def _shutting_down() -> Exception:
    return HTTPError(503, "the server is shutting down")


def build_app(predictor: Predictor, config: ServeConfig, model_info: Optional[Dict[str, Any]] = None,
              token: Optional[str] = None) -> "Starlette":
    """The Starlette app serving ``predictor`` (see :mod:`stn_gluon.serve.predictors`), behind its
    :class:`~stn_gluon.serve.guard.Guard` (``token``: the bearer token, None: none)."""
    from starlette.middleware import Middleware

    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    s = PredictService(predictor, config, model_info)
    routes = [Route("/", s.page, methods=["GET"]), Route("/static/{name}", s.page, methods=["GET"]),
              Route("/favicon.ico", s.page, methods=["GET"]),
              Route("/v1/predict", s.predict, methods=["POST"]), Route("/healthz", s.healthz, methods=["GET"]),
              Route("/readyz", s.readyz, methods=["GET"]), Route("/v1/model", s.model, methods=["GET"]),
              Route("/metrics", s.prometheus, methods=["GET"])]
    policy = GuardPolicy(hosts=allowed_hosts(config.host, config.allowed_hosts), token=token,
                         max_body_bytes=config.max_body_bytes,
                         max_inflight_bytes=max(config.max_inflight_bytes, config.max_body_bytes),
                         max_requests=config.request_limit())
    app = Starlette(routes=routes, lifespan=s.lifespan, exception_handlers={HTTPException: s.not_found},
                    middleware=[Middleware(Guard, policy=policy, on_refused=s.count)])
    app.state.batcher, app.state.metrics, app.state.serving, app.state.service = s.batcher, s.metrics, s.state, s
    return app


def model_info(predictor: Predictor, path: str) -> Dict[str, Any]:
    """What ``GET /v1/model`` reports: :meth:`Predictor.info` plus the model's name (its file or folder's
    base name, never a path: any client may read it), and for a shipped model ``pretrained``: its name."""
    if is_pretrained_ref(path):
        return dict(predictor.info(), model=path, pretrained=path[len(PREFIX):])
    return dict(predictor.info(), model=os.path.basename(os.path.normpath(path)))


def _bind(host: str, port: int) -> socket.socket:
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


def _token_for(config: ServeConfig) -> Optional[str]:
    """The bearer token (flag, file or environment); refused without one on an address other than loopback."""
    token = resolve_token(config.token, config.token_file, os.environ)
    if token is None and not is_loopback(config.host):
        raise StnGluonError(f"--host {config.host} is reachable from other machines: give a token (--token-file, "
                            f"${TOKEN_ENV} or --token) so that only your clients can call it")
    return token


def _raise_open_files_limit() -> None:
    """Open files (sockets): the soft limit raised to the hard one, so many idle clients cannot exhaust it."""
    try:
        import resource  # lazy: POSIX only
    except ImportError:  # pragma: no cover
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1 << 20), hard))


def serve(config: ServeConfig, echo: Callable[[str], Any] = print) -> None:
    """Load the model, bind, and serve until SIGTERM/SIGINT (requests in flight are answered for at most
    ``timeout_s``, then the rest get 503)."""
    import uvicorn

    validate_fields(config)
    token = _token_for(config)
    model = model_or_default(config.model, echo)
    # MXNet: one OpenMP thread unless set by the user, a server's small batches gain nothing steady from a second
    # one and lose half beside other processes (docs/performance.md)
    predictor = load_predictor(model, config.backend, threads=config.threads, mxnet_threads=1)
    warm = np.zeros((1,) + tuple(predictor.input_shape), np.float32)
    predictor.predict(warm)  # fail at start, not on the first request
    info = model_info(predictor, model)
    app = build_app(predictor, config, info, token)
    sock = _bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    shown = model if is_pretrained_ref(model) else os.path.abspath(model)
    echo(f"Serving {shown} ({predictor.backend}, input {tuple(predictor.input_shape)}, "
         f"max batch {config.max_batch}, max wait {config.max_wait_ms:g} ms) on http://{host}:{port}"
         f"{' (token required)' if token else ''}")
    echo(predictor.describe_threads())
    _raise_open_files_limit()
    protocol, _ = protocol_class(config.header_timeout_s)
    server = _Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", http=protocol,
                                    # the drain answers within timeout_s; a second more to write the answers
                                    timeout_graceful_shutdown=int(config.timeout_s) + 2,
                                    # requests in flight are limited by the Guard; idle sockets by the timeouts
                                    limit_concurrency=None, timeout_keep_alive=5,
                                    h11_max_incomplete_event_size=64 * 1024))
    server.drain = app.state.service.drain
    server.run(sockets=[sock])
    how = "requests in flight were answered" if server.drained is not False else \
        f"requests still waiting after {0.75 * config.timeout_s:g} s were answered 503"
    echo(f"Stopped{' on ' + signal.Signals(server.stop_signal).name if server.stop_signal else ''}: {how}")


def _server_class() -> "Type[uvicorn.Server]":
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, ending with status 0 after a graceful SIGTERM/SIGINT shutdown
        (uvicorn would re-raise the signal and die by it)."""

        stop_signal: Optional[int] = None
        drain: Optional[Callable[[], Any]] = None  # awaited when shutdown begins (PredictService.drain)
        drained: Optional[bool] = None

        async def shutdown(self, sockets: Optional[List[socket.socket]] = None) -> None:
            task = asyncio.ensure_future(self.drain()) if self.drain is not None else None
            await super().shutdown(sockets)
            if task is not None:
                self.drained = await task

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
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


def _Server(config: "uvicorn.Config") -> Any:
    return _server_class()(config)
