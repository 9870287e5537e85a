"""``stn-gluon serve`` against hostile clients (issue 26): the real server on a free loopback port, real sockets.

Huge and endless bodies, decompression-heavy images, random paths, thousands of half-open connections, a
model that hangs, and callers without the token, from another origin or through another Host. Every loop is
bounded in count and in time; nothing is written in the checkout.
"""
import asyncio
import concurrent.futures
import io
import json
import os
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw

from test_serving import PNG, Server, free_port, png_bytes

TOKEN = "s3cret-token-for-tests"
HEAVY_PIXELS = 4096 * 4096


@pytest.fixture(scope="module")
def server():
    """The shipped MNIST model; the pixel caps raised to the old default so heavy PNGs are really decoded."""
    started = Server(None, "--max-pixels", str(HEAVY_PIXELS), "--max-request-pixels", str(HEAVY_PIXELS),
                     "--header-timeout-s", "4")
    yield started
    code, _, err = started.stop()
    assert code == 0, err


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(TOKEN + "\n")
    started = Server(None, "--token-file", str(token_file))
    yield started
    started.stop()


def digit_png():
    img = np.zeros((28, 28), np.uint8)
    img[6:22, 12:16] = 255  # a one
    return png_bytes(img)


def heavy_png():
    """4096 x 4096, a palette with a transparent colour: about 16 KB on the wire, 16.7 megapixels decoded."""
    img = Image.new("P", (4096, 4096), 0)
    img.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    ImageDraw.Draw(img).ellipse((1000, 1000, 3000, 3000), fill=1)
    buf = io.BytesIO()
    img.save(buf, format="PNG", transparency=0, optimize=True)
    return buf.getvalue()


def rss_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def raw_request(port, head, timeout=10):
    """A raw socket that has sent ``head`` (bytes)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(head)
    return sock


def read_status(sock, timeout=10):
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    while length and len(body) < int(length.group(1)):  # the body may come in a later segment
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
        data += chunk
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None, data


def stream_body(sock, chunks, limit_bytes, chunked=True):
    """Send ``chunks`` until ``limit_bytes`` are sent, the server answers, or the connection breaks; bytes sent."""
    sent = 0
    deadline = time.time() + 60
    for chunk in chunks:
        if sent >= limit_bytes or time.time() > deadline:
            break
        if select.select([sock], [], [], 0)[0]:
            break  # the server has answered (or closed)
        frame = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk
        try:
            sock.sendall(frame)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(chunk)
    return sent


# ---- bodies: counted as they arrive, for every content type ------------------------------------------------

@pytest.mark.parametrize("ctype", ["multipart/form-data; boundary=XyZ", "image/png", "application/json"])
@pytest.mark.slow
def test_a_1gb_upload_is_cut_at_the_limit_with_memory_flat(server, ctype):
    pid = server.proc.pid
    before = rss_kb(pid, "VmRSS")
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # the peak (VmHWM) starts again from now
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: {ctype}\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n").encode()
    sock = raw_request(server.port, head)
    block = b"\0" * (1 << 20)
    first = b'--XyZ\r\nContent-Disposition: form-data; name="f"; filename="big.png"\r\n' \
            b"Content-Type: image/png\r\n\r\n" if ctype.startswith("multipart") else b""

    def chunks():  # a generator: 1 GB is never built in memory
        yield first + block
        for _ in range(1023):
            yield block

    sent = stream_body(sock, chunks(), 1 << 30)
    status, data = read_status(sock)
    sock.close()
    peak = rss_kb(pid, "VmHWM")
    print(f"{ctype.split(';')[0]}: cut after {sent >> 20} MiB sent, peak RSS {(peak - before) / 1024:+.1f} MB")
    assert status == 413, data[:300]
    assert b"larger than the 8388608 bytes allowed" in data
    assert sent < 64 << 20, f"{sent} bytes were taken before the 413"
    assert peak - before < 50 * 1024, f"peak RSS grew by {(peak - before) / 1024:.0f} MB"
    assert server.json("GET", "/healthz") == (200, {"status": "ok"})


def test_a_declared_large_body_is_refused_before_it_is_read(server):
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: multipart/form-data; "
            f"boundary=XyZ\r\nContent-Length: {1 << 30}\r\n\r\n").encode()
    sock = raw_request(server.port, head)
    status, data = read_status(sock)
    sock.close()
    assert status == 413 and b"connection: close" in data.lower()


# ---- decoding: off the event loop, bounded --------------------------------------------------------------------

@pytest.mark.slow
def test_64_decompression_heavy_pngs_do_not_stop_healthz(server):
    body = heavy_png()
    assert len(body) < 64 * 1024
    results, latencies = [], []

    def post(_):
        try:
            return server.request("POST", "/v1/predict", body, PNG, timeout=120)[0]
        except OSError as err:
            return repr(err)

    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        futures = [pool.submit(post, i) for i in range(64)]
        time.sleep(0.3)  # they are all in
        deadline = time.time() + 30
        while not all(f.done() for f in futures) and time.time() < deadline and len(latencies) < 100:
            tic = time.perf_counter()
            status = server.request("GET", "/healthz", timeout=5)[0]
            latencies.append(time.perf_counter() - tic)
            assert status == 200
            time.sleep(0.05)
        results = [f.result() for f in futures]
    assert len(latencies) >= 5, "the PNGs were answered before /healthz could be timed"
    print(f"healthz during 64 heavy PNGs: {len(latencies)} probes, max {max(latencies) * 1000:.0f} ms, "
          f"median {sorted(latencies)[len(latencies) // 2] * 1000:.0f} ms")
    assert max(latencies) < 0.2, sorted(latencies)[-5:]
    assert set(results) <= {200, 503}, results  # answered, or refused past the deadline: never stuck


def test_the_default_pixel_cap_refuses_a_heavy_png_before_decoding(authorized):
    status, doc = authorized.json("POST", "/v1/predict", heavy_png(), PNG)
    assert status == 413 and "4194304 allowed" in doc["error"]


@pytest.fixture(scope="module")
def authorized(token_server):
    return _Authorized(token_server)


class _Authorized:
    """A server called with its token."""

    def __init__(self, server):
        self.server = server

    def json(self, method, path, body=None, headers=None):
        return self.server.json(method, path, body, dict(headers or {}, Authorization=f"Bearer {TOKEN}"))


def test_image_pixels_reads_the_header_only():
    from stn_gluon.serve.payloads import image_pixels

    assert image_pixels(heavy_png()) == HEAVY_PIXELS  # PNG: from IHDR, nothing decoded
    jpeg = io.BytesIO()
    Image.new("L", (30, 20)).save(jpeg, format="JPEG")
    assert image_pixels(jpeg.getvalue()) == 600 and image_pixels(b"not an image") is None


# ---- metrics: labelled by route ------------------------------------------------------------------------------

def series(metrics_text):
    return {line.rsplit(" ", 1)[0] for line in metrics_text.splitlines() if line and not line.startswith("#")
            and not line.split("{")[0].endswith(("_created",))}


def test_2000_random_static_404s_add_no_metric_series(server):
    import http.client

    rng = np.random.default_rng(0)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    names = [f"/static/{rng.integers(1 << 60):x}.js" for _ in range(2000)] + ["/nowhere/a", "/nowhere/b"]

    def get(path):
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status

    assert get(names[0]) == 404 and get(names[-1]) == 404  # the series of these answers exist from now
    before = series(server.request("GET", "/metrics")[1].decode())
    deadline = time.time() + 120
    for path in names[1:-1]:
        assert get(path) == 404
        assert time.time() < deadline
    conn.close()
    after = series(server.request("GET", "/metrics")[1].decode())
    assert after == before, sorted(after - before)[:5]
    assert not any("/static/" in s or "nowhere" in s for s in after)


# ---- idle and slow connections -------------------------------------------------------------------------------

@pytest.mark.slow
def test_4000_half_open_connections_do_not_stop_a_new_client(server):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4000 + 200
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"4,000 sockets need {want} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    socks = []
    try:
        tic = time.time()
        for i in range(4000):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty" if i % 2 else b"")
            socks.append(s)
            assert time.time() - tic < 60
        tic = time.perf_counter()
        status, doc = server.json("POST", "/v1/predict", digit_png(), PNG)
        served = time.perf_counter() - tic
        assert status == 200 and len(doc["predictions"]) == 1
        print(f"a new client served in {served * 1000:.0f} ms beside 4,000 half-open connections")
        assert served < 2.0
        # the header timeout (4 s here) closes them
        time.sleep(5)
        assert sum(map(closed_by_server, socks[::40])) == 100
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def closed_by_server(sock):
    sock.settimeout(0.5)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


# ---- a stuck model -------------------------------------------------------------------------------------------

HUNG_SERVER = textwrap.dedent('''
    import sys, threading
    import numpy as np
    from stn_gluon.serve import app
    from stn_gluon.serve.predictors import Predictor

    class Hung(Predictor):
        backend, input_shape, mean, std, source, sha256 = "stub", (1, 28, 28), 0.0, 1.0, [], {}
        classes = [str(i) for i in range(10)]
        calls = 0

        def predict(self, x):
            Hung.calls += 1
            if Hung.calls > 1:  # the warm-up call answers; every later one hangs for ever
                threading.Event().wait()
            return {"logits": np.zeros((len(x), 10), np.float32),
                    "probabilities": np.full((len(x), 10), 0.1, np.float32)}

        def describe_threads(self):
            return "a stub"

    app.load_predictor = lambda *args, **kwargs: Hung()
    app.model_or_default = lambda model, echo: "hung-stub"
    app.serve(app.ServeConfig(port=int(sys.argv[1]), timeout_s=float(sys.argv[2])), echo=lambda l: print(l, flush=True))
''')


@pytest.mark.slow
def test_a_hung_model_turns_readyz_to_503_and_sigterm_ends_the_server_within_the_grace(tmp_path):
    grace = 2.0
    script = tmp_path / "hung_server.py"
    script.write_text(HUNG_SERVER)
    port = free_port()
    server = Server.from_command([sys.executable, str(script), str(port), str(grace)], port)
    proc = server.proc
    try:
        answers = []
        thread = threading.Thread(target=lambda: answers.append(server.json("POST", "/v1/predict", digit_png(), PNG)))
        thread.start()
        tic, ready = time.time(), None
        while time.time() - tic < grace + 5:
            status, doc = server.json("GET", "/readyz")
            if status == 503:
                ready = doc
                break
            time.sleep(0.1)
        assert ready is not None and "running one batch" in ready["reason"], ready
        thread.join(grace + 5)
        assert answers and answers[0][0] == 503 and "inference did not finish" in answers[0][1]["error"]
        threading.Thread(target=lambda: server.request("POST", "/v1/predict", digit_png(), PNG), daemon=True).start()
        time.sleep(0.3)  # one more request waits behind the hung call
        tic = time.time()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=grace + 10)
        took = time.time() - tic
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    print(f"SIGTERM with a hung model: exited in {took:.1f} s (grace {grace:g} s)")
    assert took < 1.25 * grace, (took, err)  # 3/4 of it draining, then the answers and the exit
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "Stopped on SIGTERM: requests still waiting after 1.5 s were answered 503" in out


def test_a_failing_batch_costs_at_most_three_model_calls_and_readyz_says_failing():
    from stn_gluon.serve.batching import FAILING_AFTER, MicroBatcher

    calls = []

    def broken(x):
        calls.append(len(x))
        raise RuntimeError("the model is broken\nsecond line")

    async def scenario():
        batcher = MicroBatcher(broken, max_batch=8, max_wait_ms=50)
        batcher.start()
        problems = []
        for _ in range(FAILING_AFTER):
            results = await asyncio.gather(*(batcher.submit(np.zeros((1, 1, 2, 2))) for _ in range(8)),
                                           return_exceptions=True)
            assert all(isinstance(r, RuntimeError) for r in results)
            problems.append(batcher.problem())
        await batcher.stop(1.0)
        return problems

    problems = asyncio.run(scenario())
    assert calls[:3] == [8, 1, 1] and len(calls) == 3 * FAILING_AFTER  # not 9 calls a batch
    assert problems[:-1] == [None] * (FAILING_AFTER - 1)
    assert problems[-1] == f"the model failed its last {FAILING_AFTER} batches (the model is broken)"


# ---- who may call it -----------------------------------------------------------------------------------------

def test_a_request_without_the_token_is_refused_with_401(token_server):
    for method, path, body, headers in (("POST", "/v1/predict", digit_png(), PNG), ("GET", "/v1/model", None, {}),
                                        ("GET", "/metrics", None, {})):
        status, data, resp_headers = token_server.request(method, path, body, headers)
        assert status == 401 and resp_headers.get("www-authenticate") == "Bearer", data
        assert json.loads(data)["error"] == "this server needs its token: send Authorization: Bearer <token>"
        wrong = dict(headers, Authorization="Bearer not-the-token")
        assert token_server.request(method, path, body, wrong)[0] == 401
        assert token_server.request(method, path, body, dict(headers, Authorization=f"Bearer {TOKEN}"))[0] == 200
    for path in ("/", "/static/app.js", "/healthz", "/readyz"):  # the page and the probes need none
        assert token_server.request("GET", path)[0] == 200


def test_v1_model_has_no_paths(token_server):
    status, info = _Authorized(token_server).json("GET", "/v1/model")
    assert status == 200 and info["model"] == "pretrained:stn_lenet"
    texts = [v for v in info.values() if isinstance(v, str)] + list(info["files"])
    assert not any(os.sep in t for t in texts), texts


def test_a_cross_origin_post_is_refused(server, token_server):
    body = digit_png()
    evil = dict(PNG, Origin="http://evil.example")
    status, doc = server.json("POST", "/v1/predict", body, evil)
    assert status == 403 and doc["error"].startswith("cross-origin POST refused")
    same = dict(PNG, Origin=f"http://127.0.0.1:{server.port}")
    assert server.json("POST", "/v1/predict", body, same)[0] == 200
    assert server.json("POST", "/v1/predict", body, dict(PNG, Origin="null"))[0] == 403
    assert token_server.request("POST", "/v1/predict", body, evil)[0] == 401
    assert token_server.request("POST", "/v1/predict", body, dict(evil, Authorization=f"Bearer {TOKEN}"))[0] == 200


def test_a_bad_host_is_refused(server):
    for host in ("evil.example", "evil.example:80", "127.0.0.1.evil.example"):
        status, doc = server.json("GET", "/v1/model", headers={"Host": host})
        assert status == 400 and doc["error"] == f"Host {host!r} is not allowed (serve --allowed-hosts)"
    for host in ("localhost", f"localhost:{server.port}", "[::1]:80", "127.0.0.1"):
        assert server.request("GET", "/v1/model", headers={"Host": host})[0] == 200, host


@pytest.mark.slow
def test_binding_beyond_loopback_needs_a_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "STN_GLUON_TOKEN"}
    out = subprocess.run([sys.executable, "-m", "stn_gluon", "serve", "--host", "0.0.0.0", "--port", "0"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("error: --host 0.0.0.0 is reachable from other machines: give a token")
    empty = tmp_path / "empty"
    empty.write_text("")
    out = subprocess.run([sys.executable, "-m", "stn_gluon", "serve", "--token-file", str(empty), "--port", "0"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2 and out.stderr == f"error: --token-file {empty}: the file is empty\n"


@pytest.mark.slow
def test_the_token_from_the_environment(tmp_path):
    port = free_port()
    env = dict(os.environ, STN_GLUON_TOKEN=TOKEN)
    server = Server.from_command([sys.executable, "-m", "stn_gluon", "serve", "--port", str(port)], port, env)
    try:
        assert server.request("GET", "/v1/model")[0] == 401
        assert server.request("GET", "/v1/model", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    finally:
        code, out, err = server.stop()
    assert code == 0 and "(token required)" in out, err
