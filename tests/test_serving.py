"""The HTTP server, started for real on a free loopback port and spoken to over HTTP."""
import base64
import concurrent.futures
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from stn_gluon.cli import main
from stn_gluon.export.onnx import OPSET

HERE = os.path.dirname(__file__)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model, *extra, backend=None):
        """model None: the server's default (the pretrained MNIST model)."""
        self.port = free_port()
        cmd = [sys.executable, "-m", "stn_gluon", "serve", "--port", str(self.port)]
        cmd += ["--model", str(model)] if model is not None else []
        cmd += (["--backend", backend] if backend else []) + list(extra)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.wait_ready()

    @classmethod
    def from_command(cls, cmd, port, env=None):
        """A server started by any command line ``cmd`` listening on ``port``, once it answers ``/readyz``."""
        server = cls.__new__(cls)
        server.port = port
        server.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        server.wait_ready()
        return server

    def wait_ready(self):
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server died: {self.proc.stderr.read()}")
            try:
                if self.request("GET", "/readyz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server did not become ready in 60 s")

    def request(self, method, path, body=None, headers=None, timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            try:
                conn.request(method, path, body=body, headers=headers or {})
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before the body was all sent (a 413 closes the connection): read the answer
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, data, dict(resp.getheaders())
        finally:
            conn.close()

    def json(self, method, path, body=None, headers=None):
        status, data, _ = self.request(method, path, body, headers)
        return status, json.loads(data)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return self.proc.returncode, out, err


def png_bytes(img):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def model_dir(served_model):
    """A model trained briefly on the embedded real digits, exported for both backends (see conftest)."""
    return served_model


@pytest.fixture(scope="module")
def digits(sample):
    return sample.test_images[:40], sample.test_labels[:40]


@pytest.fixture(scope="module")
def servers(model_dir):
    started = {"onnxruntime": Server(model_dir / "model.onnx", "--max-body-bytes", "2000000",
                                     "--max-pixels", "4000000", "--max-instances", "16", "--timeout-s", "5"),
               "mxnet": Server(model_dir, backend="mxnet")}
    yield started
    for server in started.values():
        code, _, err = server.stop()
        assert code == 0, err


@pytest.mark.parametrize("backend", ["onnxruntime", "mxnet"])
def test_png_digits_get_the_same_answers_as_predict(backend, servers, model_dir, digits, tmp_path, capsys):
    server = servers[backend]
    images, labels = digits
    answers = []
    for img in images:
        status, doc = server.json("POST", "/v1/predict", png_bytes(img), {"Content-Type": "image/png"})
        assert status == 200
        answers.append(doc["predictions"][0])
    got = np.array([a["label"] for a in answers])
    assert (got == labels).mean() >= 0.85  # a briefly trained model, on real test digits
    files = []
    for i, img in enumerate(images):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(img).save(files[-1])
    model = model_dir / "model.onnx" if backend == "onnxruntime" else model_dir
    assert main(["predict", "--model", str(model), "--backend", backend, "--json"] + files) == 0
    cli = json.loads(capsys.readouterr().out)["predictions"]
    assert [c["label"] for c in cli] == got.tolist()
    np.testing.assert_allclose([c["probabilities"] for c in cli], [a["probabilities"] for a in answers], atol=1e-5)
    np.testing.assert_allclose([c["theta"] for c in cli], [a["theta"] for a in answers], atol=1e-5)


def test_json_multipart_and_rectified_image(servers, digits):
    server = servers["onnxruntime"]
    images, _ = digits
    _, by_png = server.json("POST", "/v1/predict", png_bytes(images[0]), {"Content-Type": "image/png"})
    body = json.dumps({"instances": images[:3].tolist(), "pixel_range": "0-255"})
    status, by_json = server.json("POST", "/v1/predict", body, {"Content-Type": "application/json"})
    assert status == 200 and len(by_json["predictions"]) == 3
    assert by_json["predictions"][0]["label"] == by_png["predictions"][0]["label"]
    np.testing.assert_allclose(by_json["predictions"][0]["probabilities"],
                               by_png["predictions"][0]["probabilities"], atol=1e-5)
    floats = json.dumps({"instances": (images[:1] / 255.0).tolist()})
    assert server.json("POST", "/v1/predict", floats, {"Content-Type": "application/json"})[0] == 200
    boundary = "stnboundary"
    parts = b"".join(
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file{i}\"; filename=\"d{i}.png\"\r\n"
        f"Content-Type: image/png\r\n\r\n".encode() + png_bytes(images[i]) + b"\r\n" for i in range(2))
    parts += f"--{boundary}--\r\n".encode()
    status, by_form = server.json("POST", "/v1/predict?return_image=1", parts,
                                  {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200 and [p["label"] for p in by_form["predictions"]] == \
        [p["label"] for p in by_json["predictions"][:2]]
    rectified = Image.open(io.BytesIO(base64.b64decode(by_form["predictions"][0]["image"])))
    assert rectified.size == (28, 28)
    # invert=1: the same digit drawn dark on light, larger
    big = np.asarray(Image.fromarray(255 - images[0]).resize((112, 112)))
    status, inv = server.json("POST", "/v1/predict?invert=1", png_bytes(big), {"Content-Type": "image/png"})
    assert status == 200 and inv["predictions"][0]["label"] == by_png["predictions"][0]["label"]


@pytest.mark.parametrize("backend", ["onnxruntime", "mxnet"])
def test_grid_and_input_image_for_every_client(backend, servers, digits):
    """return_grid=1 / return_input=1: the sampling region in input pixels and the input as read, for any
    client; the same region from both backends, and the one explain.sampling_regions gives for theta."""
    from stn_gluon.nn.explain import sampling_regions

    images, _ = digits
    big = np.asarray(Image.fromarray(255 - images[1]).resize((84, 84)))  # dark on light, 3x: read as 28x28
    status, doc = servers[backend].json("POST", "/v1/predict?return_grid=1&return_input=1&return_image=1",
                                        png_bytes(big), {"Content-Type": "image/png"})
    assert status == 200, doc
    p = doc["predictions"][0]
    assert p["inverted"] is True
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(p["input_image"]))))
    assert seen.shape == (28, 28) and seen[0, 0] < 30 and seen.max() > 200  # inverted: light strokes on black
    want = sampling_regions(np.array([p["theta"]]), "affine", (28, 28), (28, 28))[0]
    np.testing.assert_allclose(p["grid"]["outline"], want["outline"], atol=0.02)
    assert len(p["grid"]["outline"]) == 4 * 27 + 1 and len(p["grid"]["lines"]) == 6
    xs, ys = np.asarray(p["grid"]["outline"]).T
    assert -14 < xs.min() < xs.max() < 42 and -14 < ys.min() < ys.max() < 42
    assert "grid" not in servers[backend].json("POST", "/v1/predict", png_bytes(images[1]),
                                               {"Content-Type": "image/png"})[1]["predictions"][0]
    status, bad = servers[backend].json("POST", "/v1/predict?return_grid=maybe", png_bytes(images[1]),
                                        {"Content-Type": "image/png"})
    assert status == 400 and bad["error"] == "query parameter return_grid='maybe': expected 1 or 0"


def test_the_web_page_and_its_files(servers):
    server = servers["mxnet"]
    status, html, headers = server.request("GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<canvas id="pad"' in html and b"static/app.js" in html and b"http" not in html.split(b"<body>")[0]
    assert "default-src 'self'" in headers["content-security-policy"]
    status, js, headers = server.request("GET", "/static/app.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript") and b"v1/predict" in js
    assert server.request("GET", "/static/style.css")[0] == 200
    # the icon: linked from the page, and at /favicon.ico for clients that ask there (no 404 in any console)
    assert b'<link rel="icon" href="static/favicon.svg"' in html
    for path in ("/static/favicon.svg", "/favicon.ico"):
        status, icon, headers = server.request("GET", path)
        assert status == 200 and headers["content-type"] == "image/svg+xml" and icon.startswith(b"<svg")
    status, doc = server.json("GET", "/static/../serving.py")
    assert status == 404
    assert server.json("GET", "/static/nope.js") == (404, {"error": "not found", "status": 404})


def _bomb_png():
    """A small file that claims 5000 x 5000 pixels."""
    buf = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _multipart(parts, boundary="b0undary"):
    body = b""
    for name, filename, ctype, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disp}\r\n".encode()
        body += (f"Content-Type: {ctype}\r\n" if ctype else "").encode() + b"\r\n" + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


JSON = {"Content-Type": "application/json"}
PNG = {"Content-Type": "image/png"}
ZERO = np.zeros((28, 28)).tolist()


def _malformed_cases():
    good = png_bytes(np.zeros((28, 28), np.uint8))
    return {
        "text_plain": ("POST", "/v1/predict", b"hello", {"Content-Type": "text/plain"}, 415),
        "no_content_type": ("POST", "/v1/predict", b"hello", {}, 415),
        "xml": ("POST", "/v1/predict", b"<a/>", {"Content-Type": "application/xml"}, 415),
        "png_garbage": ("POST", "/v1/predict", b"\x89PNG not really", PNG, 400),
        "png_empty": ("POST", "/v1/predict", b"", PNG, 400),
        "jpeg_truncated": ("POST", "/v1/predict", b"\xff\xd8\xff\xe0\x00\x10JFIF", {"Content-Type": "image/jpeg"}, 400),
        "png_bomb": ("POST", "/v1/predict", _bomb_png(), PNG, 413),
        "body_too_large": ("POST", "/v1/predict", b"\0" * 2_100_000, PNG, 413),
        "json_malformed": ("POST", "/v1/predict", b'{"instances": [', JSON, 400),
        "json_bad_utf8": ("POST", "/v1/predict", b'{"instances": "\xff\xfe"}', JSON, 400),
        "json_list": ("POST", "/v1/predict", b"[1, 2]", JSON, 400),
        "json_deeply_nested": ("POST", "/v1/predict", b'{"instances": ' + b"[" * 100000 + b"]" * 100000 + b"}", JSON, 400),
        "json_no_instances": ("POST", "/v1/predict", b'{"inputs": []}', JSON, 400),
        "instances_string": ("POST", "/v1/predict", b'{"instances": "abc"}', JSON, 400),
        "instances_empty": ("POST", "/v1/predict", b'{"instances": []}', JSON, 400),
        "instances_ragged": ("POST", "/v1/predict", json.dumps({"instances": [ZERO, ZERO[:5]]}).encode(), JSON, 422),
        "instances_wrong_shape": ("POST", "/v1/predict", json.dumps({"instances": [np.zeros((27, 28)).tolist()]}).encode(), JSON, 422),
        "instances_flat": ("POST", "/v1/predict", json.dumps({"instances": [0.0] * 4}).encode(), JSON, 422),
        "instances_strings": ("POST", "/v1/predict", json.dumps({"instances": [[["a"] * 28] * 28]}).encode(), JSON, 422),
        "instances_nan": ("POST", "/v1/predict", json.dumps({"instances": [ZERO]}).replace("0.0", "NaN", 1).encode(), JSON, 422),
        "instances_inf": ("POST", "/v1/predict", json.dumps({"instances": [ZERO]}).replace("0.0", "Infinity", 1).encode(), JSON, 422),
        "instances_above_range": ("POST", "/v1/predict", json.dumps({"instances": [np.full((28, 28), 2.0).tolist()]}).encode(), JSON, 422),
        "instances_negative": ("POST", "/v1/predict", json.dumps({"instances": [np.full((28, 28), -1.0).tolist()]}).encode(), JSON, 422),
        "bad_pixel_range": ("POST", "/v1/predict", json.dumps({"instances": [ZERO], "pixel_range": "0-9"}).encode(), JSON, 400),
        "too_many_instances": ("POST", "/v1/predict", json.dumps({"instances": [ZERO] * 17}).encode(), JSON, 413),
        "multipart_no_file": ("POST", "/v1/predict") + _multipart([("note", None, None, b"hi")]) + (400,),
        "multipart_not_image": ("POST", "/v1/predict") + _multipart([("file", "x.png", "image/png", b"nope")]) + (400,),
        "multipart_too_many": ("POST", "/v1/predict") + _multipart([("f", f"{i}.png", "image/png", good) for i in range(17)]) + (413,),
        "multipart_broken": ("POST", "/v1/predict", b"--other\r\nbroken", {"Content-Type": "multipart/form-data; boundary=b0undary"}, 400),
        "bad_return_image": ("POST", "/v1/predict?return_image=maybe", good, PNG, 400),
        "bad_invert": ("POST", "/v1/predict?invert=2", good, PNG, 400),
        "bad_invert_word": ("POST", "/v1/predict?invert=sometimes", good, PNG, 400),
        "instances_float_0_255": ("POST", "/v1/predict", json.dumps({"instances": [np.full((28, 28), 255.0).tolist()]}).encode(), JSON, 422),
        "get_predict": ("GET", "/v1/predict", None, {}, 405),
        "unknown_path": ("POST", "/v2/predict", good, PNG, 404),
    }


CASES = _malformed_cases()


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_requests_get_a_clear_4xx(case, servers):
    server = servers["onnxruntime"]
    method, path, body, headers, want = CASES[case]
    status, data, resp_headers = server.request(method, path, body, headers)
    assert status == want, (status, data[:200])
    doc = json.loads(data)
    assert doc["status"] == want and doc["error"] and "\n" not in doc["error"]


def test_server_is_healthy_after_the_malformed_table(servers, digits):
    server = servers["onnxruntime"]
    for method, path, body, headers, _ in CASES.values():  # once more, back to back
        assert 400 <= server.request(method, path, body, headers)[0] < 500
    assert server.json("GET", "/healthz") == (200, {"status": "ok"})
    status, doc = server.json("POST", "/v1/predict", png_bytes(digits[0][0]), PNG)
    assert status == 200 and len(doc["predictions"]) == 1
    metrics = server.request("GET", "/metrics")[1].decode()
    assert 'stn_request_errors_total{code="415",endpoint="/v1/predict"}' in metrics
    assert "stn_request_latency_seconds_bucket" in metrics and "stn_batch_size_bucket" in metrics


def test_model_endpoint(servers, model_dir):
    status, info = servers["onnxruntime"].json("GET", "/v1/model")
    assert status == 200 and info["backend"] == "onnxruntime" and info["opset"] == OPSET
    assert info["input_shape"] == [None, 1, 28, 28] and info["classes"][3] == "3" and info["digits"] is True
    assert len(info["files"]["model.onnx"]) == 64
    status, info = servers["mxnet"].json("GET", "/v1/model")
    assert info["backend"] == "mxnet" and set(info["files"]) == {"model-symbol.json", "model-0000.params"}


def test_concurrent_requests_are_batched_and_answered_to_the_right_caller(servers, digits):
    server = servers["onnxruntime"]
    images, _ = digits
    single = [server.json("POST", "/v1/predict", png_bytes(img), PNG)[1]["predictions"][0] for img in images]
    before = server.request("GET", "/metrics")[1].decode()

    def ask(i):
        if i % 4 == 3:  # bad requests mixed in: they must not fail their batch-mates
            return i, server.request("POST", "/v1/predict", b"\x89PNG broken", PNG)[0], None
        status, doc = server.json("POST", "/v1/predict", png_bytes(images[i % 40]), PNG)
        return i, status, doc

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(ask, range(160)))
    for i, status, doc in results:
        if i % 4 == 3:
            assert status == 400
        else:
            assert status == 200
            np.testing.assert_allclose(doc["predictions"][0]["probabilities"],
                                       single[i % 40]["probabilities"], atol=1e-5)
    after = server.request("GET", "/metrics")[1].decode()

    def count(text, name):
        return float(next(l for l in text.splitlines() if l.startswith(name)).split()[-1])
    batches = count(after, "stn_batch_size_count") - count(before, "stn_batch_size_count")
    images_run = count(after, "stn_batch_size_sum") - count(before, "stn_batch_size_sum")
    assert images_run == 120 and batches < 120  # several requests shared a batch


@pytest.mark.slow
def test_graceful_shutdown_answers_requests_in_flight(model_dir, digits):
    server = Server(model_dir / "model.onnx", "--max-wait-ms", "1500")
    result = {}

    def slow():
        result["answer"] = server.json("POST", "/v1/predict", png_bytes(digits[0][0]), PNG)

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.5)  # the request now waits in a batch for 1.5 s
    server.proc.send_signal(signal.SIGTERM)
    thread.join(30)
    server.proc.wait(timeout=60)  # the one SIGTERM: stop() would send a second, which ends uvicorn at once
    code, out, err = server.stop()
    assert result["answer"][0] == 200 and len(result["answer"][1]["predictions"]) == 1
    assert code == 0 and "Stopped on SIGTERM" in out


@pytest.mark.slow
def test_start_up_errors_are_one_line(tmp_path, model_dir):
    for extra, expect in ((["--model", str(tmp_path / "none.onnx")], "not found"),
                          (["--model", str(tmp_path)], "no exported model"),
                          (["--model", str(model_dir), "--max-wait-ms", "-1"], "--max-wait-ms")):
        out = subprocess.run([sys.executable, "-m", "stn_gluon", "serve", "--port", "0"] + extra,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and expect in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "stn_gluon", "serve", "--model", str(model_dir / "model.onnx"),
                              "--port", str(port)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "cannot listen" in out.stderr


def test_micro_batcher_limits_routing_and_isolation():
    import asyncio

    from stn_gluon.serve.app import MicroBatcher

    seen = []

    def predict(x):
        seen.append(len(x))
        if (x == -1).any():
            raise ValueError("poison")
        return {"row_sum": x.reshape(len(x), -1).sum(axis=1), "first": x[:, 0, 0, 0].copy()}

    async def scenario():
        batcher = MicroBatcher(predict, max_batch=8, max_wait_ms=50)
        batcher.start()
        inputs = [np.full((1 + i % 3, 1, 2, 2), float(i)) for i in range(12)]
        inputs[5] = np.full((1, 1, 2, 2), -1.0)
        results = await asyncio.gather(*(batcher.submit(x) for x in inputs), return_exceptions=True)
        await batcher.stop()
        return inputs, results

    inputs, results = asyncio.run(scenario())
    for i, (x, r) in enumerate(zip(inputs, results)):
        if i == 5:
            assert isinstance(r, ValueError)
        else:
            np.testing.assert_array_equal(r["first"], x[:, 0, 0, 0])
            assert len(r["row_sum"]) == len(x)
    assert max(seen) <= 8 and any(n > 3 for n in seen)  # batched, never past the limit


# ---- polarity, transparency and the shared array validator through the server ---------------------------

def test_invert_parameter_and_inverted_in_answers(servers, digits):
    server = servers["onnxruntime"]
    digit = digits[0][0]
    rgba = np.zeros(digit.shape + (4,), np.uint8)
    rgba[..., 3] = digit  # black strokes on a transparent canvas
    bodies = {"white": png_bytes(digit), "black": png_bytes(255 - digit), "canvas": png_bytes(rgba)}
    answers = {}
    for query, want in (("", {"white": False, "black": True, "canvas": True}),
                        ("?invert=auto", {"white": False, "black": True, "canvas": True}),
                        ("?invert=0", {"white": False, "black": False, "canvas": False}),
                        ("?invert=false", {"white": False, "black": False, "canvas": False}),
                        ("?invert=1", {"white": True, "black": True, "canvas": True}),
                        ("?invert=true", {"white": True, "black": True, "canvas": True})):
        for name, body in bodies.items():
            status, doc = server.json("POST", "/v1/predict" + query, body, PNG)
            assert status == 200 and doc["predictions"][0]["inverted"] is want[name], (query, name)
            rules = (["contrast_background"] if name == "canvas" else []) + (["inverted"] if want[name] else [])
            assert doc["predictions"][0]["rules"] == rules, (query, name)  # what was done, in order
            answers[query, name] = doc["predictions"][0]
    for name in ("black", "canvas"):  # read as the white-on-black original
        np.testing.assert_allclose(answers["", name]["probabilities"], answers["", "white"]["probabilities"],
                                   atol=2e-3)
    np.testing.assert_allclose(answers["?invert=1", "white"]["probabilities"],
                               answers["?invert=0", "black"]["probabilities"], atol=1e-5)
    # JSON instances: auto polarity applies to them too
    body = json.dumps({"instances": [digit.tolist(), (255 - digit).tolist()], "pixel_range": "0-255"})
    status, doc = server.json("POST", "/v1/predict", body, JSON)
    assert status == 200 and [p["inverted"] for p in doc["predictions"]] == [False, True]
    status, doc = server.json("POST", "/v1/predict?invert=maybe", bodies["white"], PNG)
    assert status == 400 and doc["error"] == "query parameter invert='maybe': expected auto, 1 or 0 (or true/false)"


def test_float_0_255_arrays_are_refused_alike_by_server_and_cli(servers, model_dir, digits, tmp_path, capsys):
    digit = digits[0][0].astype(np.float32)
    status, doc = servers["mxnet"].json("POST", "/v1/predict", json.dumps({"instances": [digit.tolist()]}), JSON)
    assert status == 422
    np.save(tmp_path / "d.npy", digit)
    assert main(["predict", "--model", str(model_dir), str(tmp_path / "d.npy")]) == 2
    cli = capsys.readouterr().err
    reason = "values span [0, 255], outside pixel_range 0-1; pass pixel_range 0-255 for 0..255 values"
    # the same words; each names the knob of its own interface (the JSON field, the flag)
    assert doc["error"] == f"instances: {reason}"
    assert cli == f"error: {tmp_path / 'd.npy'}: {reason.replace('pixel_range', '--pixel-range')}\n"
    # declared, both accept it and agree
    body = json.dumps({"instances": [digit.tolist()], "pixel_range": "0-255"})
    status, doc = servers["mxnet"].json("POST", "/v1/predict", body, JSON)
    assert main(["predict", "--model", str(model_dir), "--json", "--pixel-range", "0-255", str(tmp_path / "d.npy")]) == 0
    cli = json.loads(capsys.readouterr().out)["predictions"][0]
    assert status == 200 and doc["predictions"][0]["label"] == cli["label"]
    np.testing.assert_allclose(doc["predictions"][0]["probabilities"], cli["probabilities"], atol=1e-5)


# ---- request parsing as plain functions ------------------------------------------------------------------

def test_parse_options():
    from stn_gluon.serve.payloads import HTTPError, PredictOptions, parse_options

    assert parse_options({}) == PredictOptions(return_image=False, invert="auto")
    assert parse_options({"invert": "AUTO", "return_image": "yes"}) == PredictOptions(True, "auto")
    for value, want in (("1", True), ("true", True), ("0", False), ("False", False), ("no", False)):
        assert parse_options({"invert": value}).invert is want
    for query, expect in (({"invert": "2"}, "invert='2'"), ({"invert": ""}, "invert=''"),
                          ({"return_image": "maybe"}, "return_image='maybe'")):
        with pytest.raises(HTTPError) as info:
            parse_options(query)
        assert info.value.status == 400 and expect in info.value.message


def test_content_kind_and_length():
    from stn_gluon.serve.payloads import HTTPError, check_length, content_kind

    assert content_kind("image/png", 1) == "image" and content_kind("Application/JSON; charset=utf-8", 1) == "json"
    assert content_kind("multipart/form-data; boundary=x", 3) == "multipart"
    assert content_kind("image/jpeg", 3) == "image"  # colour models take images too
    for ctype, channels in (("text/plain", 1), (None, 1), ("image/png", 4)):
        with pytest.raises(HTTPError) as info:
            content_kind(ctype, channels)
        assert info.value.status == 415
    check_length(None, 10)
    check_length("10", 10)
    for declared, status in (("11", 413), ("ten", 400)):
        with pytest.raises(HTTPError) as info:
            check_length(declared, 10)
        assert info.value.status == status


def test_parse_json_instances(digits):
    from stn_gluon.serve.payloads import HTTPError, parse_json_instances

    images = digits[0][:3]
    pixels = parse_json_instances(json.dumps({"instances": images.tolist(), "pixel_range": "0-255"}).encode(),
                                  (1, 28, 28), 16)
    assert pixels.shape == (3, 1, 28, 28) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels[:, 0], images / 255.0, atol=1e-6)
    floats = parse_json_instances(json.dumps({"instances": (images / 255.0).tolist()}).encode(), (1, 28, 28), 16)
    np.testing.assert_allclose(floats, pixels, atol=1e-6)
    rgb = parse_json_instances(json.dumps({"instances": [np.zeros((3, 8, 8)).tolist()]}).encode(), (3, 8, 8), 16)
    assert rgb.shape == (1, 3, 8, 8)
    cases = [(b"{", 400, "not valid JSON"), (b"[]", 400, '"instances"'), (b'{"instances": []}', 400, "non-empty"),
             (json.dumps({"instances": [ZERO] * 17}).encode(), 413, "17 instances"),
             (json.dumps({"instances": [ZERO], "pixel_range": "auto"}).encode(), 400, "pixel_range"),
             (json.dumps({"instances": [ZERO, ZERO[:3]]}).encode(), 422, "equally shaped"),
             (json.dumps({"instances": [1, 2]}).encode(), 422, "each must be (28, 28)"),
             (json.dumps({"instances": [np.full((28, 28), 3.0).tolist()]}).encode(), 422, "values span [3, 3]"),
             (json.dumps({"instances": [ZERO]}).replace("0.0", "NaN", 1).encode(), 422, "NaN"),
             (json.dumps({"instances": [np.zeros((20, 20)).tolist()]}).encode(), 422, "does not fit")]
    for body, status, expect in cases:
        with pytest.raises(HTTPError) as info:
            parse_json_instances(body, (1, 28, 28), 16)
        assert info.value.status == status and expect in info.value.message, (body[:40], info.value.message)


def test_decode_upload_and_multipart_checks(digits):
    from stn_gluon.serve.payloads import HTTPError, check_file_count, check_total, decode_upload, multipart_error

    decoded = decode_upload(png_bytes(digits[0][0]), "a.png", (1, 28, 28), 10_000)
    pixels = decoded.pixels
    assert pixels.shape == (1, 28, 28) and abs(pixels.max() - digits[0][0].max() / 255) < 1e-6
    assert decoded.rules == [] and decoded.size == (28, 28)
    for data, status in ((b"nope", 400), (_bomb_png(), 413)):
        with pytest.raises(HTTPError) as info:
            decode_upload(data, "a.png", (1, 28, 28), 10_000)
        assert info.value.status == status and info.value.message.startswith("a.png: ")
    for call, status in ((lambda: check_file_count(0, 4), 400), (lambda: check_file_count(5, 4), 413),
                         (lambda: check_total(11, 10), 413)):
        with pytest.raises(HTTPError) as info:
            call()
        assert info.value.status == status
    check_file_count(4, 4)
    check_total(10, 10)
    assert multipart_error(ValueError("Too many files")).status == 413
    assert multipart_error(ValueError("bad boundary")).status == 400
