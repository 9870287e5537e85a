"""Who may call the server, and how much of it one client may hold: an ASGI middleware and uvicorn's protocol.

:class:`Guard` wraps the app and, for each HTTP request, before the app sees it:

* refuses a ``Host`` header not in the allow-list (400; against DNS rebinding): loopback names and the bound
  host by default (:func:`allowed_hosts`);
* with a token set, refuses a request without ``Authorization: Bearer <token>`` (401), except the page's own
  files (``/``, ``/static/...``, ``/favicon.ico``) and the probes (``/healthz``, ``/readyz``);
* refuses a cross-origin ``POST`` (an ``Origin`` other than the ``Host``) that carries no valid token (403):
  any web page could otherwise post a form to a server on loopback;
* answers 503 past ``max_requests`` requests in flight (idle connections do not count);
* counts the body's bytes as they arrive, for every content type: past ``max_body_bytes`` reading it raises
  :class:`~stn_gluon.serve.payloads.HTTPError` 413, past ``max_inflight_bytes`` for all requests together 503.

Its refusals close the connection (a client that sends 1 GB after a 413 is not read to its end). The checks
are a loop over the request's headers and a few comparisons: no per-request allocation beyond that.

:func:`header_timeout_protocol` is uvicorn's HTTP protocol with a time limit on a request's headers
(slow-loris): a connection that has not sent a complete request head within it is closed.
"""
import hmac
import ipaddress
import json
import socket
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, FrozenSet, MutableMapping, Optional, Tuple, Type

from .._runtime.errors import StnGluonError
from .payloads import HTTPError

__all__ = ["Guard", "GuardPolicy", "allowed_hosts", "is_loopback", "route_label", "header_timeout_protocol",
           "protocol_class", "TOKEN_ENV", "resolve_token", "ROUTES"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The environment variable read for the bearer token when neither ``--token`` nor ``--token-file`` is given.
TOKEN_ENV = "STN_GLUON_TOKEN"
#: The paths a client may call without the token: the page's files and the probes.
PUBLIC = frozenset({"/", "/favicon.ico", "/healthz", "/readyz"})
#: The routes: the only values of the metrics' ``endpoint`` label (with ``/static`` and ``other``).
ROUTES = frozenset({"/", "/v1/predict", "/healthz", "/readyz", "/v1/model", "/metrics"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def route_label(path: str) -> str:
    """A request path -> its route, for metrics: one of :data:`ROUTES`, ``/static`` or ``other``; never the
    raw path (every random path would add a series forever)."""
    if path in ROUTES:
        return path
    return "/static" if path.startswith("/static/") or path == "/favicon.ico" else "other"


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` listens on this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(bound: str, extra: Optional[str] = None) -> FrozenSet[str]:
    """The ``Host`` names accepted: loopback names, the bound host (and for a wildcard address this machine's
    names), plus ``extra``, a comma-separated list (``*``: any)."""
    names = set(LOOPBACK_NAMES) | {bound.lower().strip("[]")}
    if bound in ("0.0.0.0", "::", ""):
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    names |= {n.strip().lower().strip("[]") for n in (extra or "").split(",") if n.strip()}
    return frozenset(names)


def resolve_token(token: Optional[str], token_file: Optional[str], environ: MutableMapping[str, str]) -> Optional[str]:
    """The bearer token: ``token``, else the first line of ``token_file``, else ``$STN_GLUON_TOKEN``; None: none."""
    if token_file:
        try:
            with open(token_file) as f:
                token = token or f.readline().strip()
        except OSError as err:
            raise StnGluonError(f"--token-file {token_file}: cannot read ({err.strerror})") from None
        if not token:
            raise StnGluonError(f"--token-file {token_file}: the file is empty")
    token = token or environ.get(TOKEN_ENV) or None
    if token is not None and (len(token) < 8 or not token.isprintable() or " " in token):
        raise StnGluonError("the token must be at least 8 printable characters without spaces")
    return token


def _host_name(value: bytes) -> str:
    """A ``Host`` header -> its name, lower case, without the port."""
    text = value.decode("latin-1").lower()
    if text.startswith("["):
        return text[1:text.find("]")]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


@dataclass(frozen=True)
class GuardPolicy:
    """What :class:`Guard` enforces (see the module docstring)."""

    hosts: FrozenSet[str]
    token: Optional[str] = None
    max_body_bytes: int = 8 * 1024 * 1024
    max_inflight_bytes: int = 256 * 1024 * 1024
    max_requests: int = 256


class Guard:
    """The ASGI middleware (see the module docstring). ``on_refused(route, status)`` counts its refusals."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], policy: GuardPolicy,
                 on_refused: Optional[Callable[[str, int], None]] = None):
        self.app, self.policy, self.on_refused = app, policy, on_refused
        self.bearer = f"Bearer {policy.token}".encode() if policy.token else None
        self.any_host = "*" in policy.hosts
        self.active = 0
        self.inflight_bytes = 0

    def check(self, scope: Scope) -> Optional[Tuple[int, str]]:
        """(status, reason) of a refusal, or None: the request may go on."""
        host = origin = auth = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
            elif name == b"authorization":
                auth = value
        if not self.any_host and (host is None or _host_name(host) not in self.policy.hosts):
            shown = host.decode("latin-1")[:80] if host else "(none)"
            return 400, f"Host {shown!r} is not allowed (serve --allowed-hosts)"
        authorized = self.bearer is not None and auth is not None and hmac.compare_digest(auth, self.bearer)
        path = scope["path"]
        if self.bearer is not None and not authorized and path not in PUBLIC and not path.startswith("/static/"):
            return 401, "this server needs its token: send Authorization: Bearer <token>"
        if scope["method"] == "POST" and origin is not None and not authorized and host is not None:
            if origin not in (b"http://" + host, b"https://" + host):
                return 403, "cross-origin POST refused: send the server's token (serve --token)"
        if self.active >= self.policy.max_requests:
            return 503, f"the server is busy ({self.policy.max_requests} requests in flight); try again"
        return None

    async def refuse(self, send: Send, route: str, status: int, reason: str) -> None:
        """A one-line JSON refusal that closes the connection (an unread body is not read)."""
        if self.on_refused is not None:
            self.on_refused(route, status)
        body = json.dumps({"error": reason, "status": status}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        elif status == 503:
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.check(scope)
        if refusal is not None:
            return await self.refuse(send, route_label(scope["path"]), *refusal)
        counted = 0
        policy = self.policy

        async def counting_receive() -> Message:
            nonlocal counted
            message = await receive()
            size = len(message.get("body", b""))
            if size:
                counted += size
                self.inflight_bytes += size
                if counted > policy.max_body_bytes:
                    raise HTTPError(413, f"body larger than the {policy.max_body_bytes} bytes allowed")
                if self.inflight_bytes > policy.max_inflight_bytes:
                    raise HTTPError(503, "the server is busy (too many request bytes in flight); try again")
            return message

        self.active += 1
        try:
            await self.app(scope, counting_receive, send)
        except HTTPError as err:  # a body refused where the route does not answer it itself
            try:
                await self.refuse(send, route_label(scope["path"]), err.status, err.message)
            except RuntimeError:  # the response had begun
                pass
        finally:
            self.active -= 1
            self.inflight_bytes -= counted


def header_timeout_protocol(base: Type[Any], timeout_s: float) -> Type[Any]:
    """uvicorn's HTTP protocol class ``base`` with a limit on the time a request's head may take: from the
    connection (or a request's first byte after the previous answer) to its complete headers."""

    class HeaderTimeoutProtocol(base):
        _head_timer: Any = None
        _head_cycle: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm(None)

        def _arm(self, cycle: Any) -> None:
            self._head_cycle = cycle
            self._head_timer = self.loop.call_later(timeout_s, self._head_timeout)

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self.cycle is self._head_cycle and not self.transport.is_closing():
                self.transport.close()  # no complete request head in time: a slow or idle client

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            cycle = self.cycle
            if self._head_timer is not None:
                if cycle is not self._head_cycle:  # a request's head arrived
                    self._head_timer.cancel()
                    self._head_timer = None
            elif cycle is None or cycle.response_complete:  # a new request has begun
                self._arm(cycle)

        def connection_lost(self, exc: Optional[Exception]) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


def protocol_class(timeout_s: float) -> Tuple[Type[Any], str]:
    """(uvicorn's HTTP protocol with the header timeout, its name): httptools where installed, else h11."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return header_timeout_protocol(HttpToolsProtocol, timeout_s), "httptools"
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return header_timeout_protocol(H11Protocol, timeout_s), "h11"

