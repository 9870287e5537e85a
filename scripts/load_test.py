#!/usr/bin/env python
"""Load test of ``stn-gluon serve`` on loopback: micro-batching against batch-size-1 serving.

Starts the server twice on free 127.0.0.1 ports (``--max-batch 32`` and
``--max-batch 1``), sends each ``--requests`` PNG digits (real MNIST test
digits) from ``--clients`` concurrent keep-alive connections, and reports
throughput, latency p50/p99 and errors. Bounded: it stops at ``--requests``
or ``--max-seconds``, whichever comes first.

    python scripts/load_test.py --model runs/demo/model.onnx --out runs/load
"""
import argparse
import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

from stn_gluon.errors import StnGluonError
from stn_gluon.reporting import machine_info, run_script, write_report


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pngs(count):
    from PIL import Image

    from stn_gluon.data import load_embedded_sample

    images = load_embedded_sample().test_images[:count]
    out = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _default_model(folder):
    import mxnet as mx

    import stn_gluon as sg
    from stn_gluon.onnx import export_onnx

    net = sg.STNNet()
    net.initialize(mx.init.Xavier())
    return export_onnx(net, os.path.join(folder, "model.onnx"))


class _Server:
    def __init__(self, model, backend, max_batch, max_wait_ms):
        self.port = _free_port()
        cmd = [sys.executable, "-m", "stn_gluon", "serve", "--model", model, "--port", str(self.port),
               "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms)]
        if backend:
            cmd += ["--backend", backend]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise StnGluonError(f"server failed to start: {self.proc.stderr.read().strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise StnGluonError("server did not start within 60 s")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=60)


async def _client(port, payloads, jobs, latencies, errors, deadline):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
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
                errors.append(status_line.decode(errors="replace").strip())
    finally:
        writer.close()


async def _load(port, payloads, requests, clients, max_seconds):
    jobs = list(range(requests))
    latencies, errors = [], []
    tic = time.perf_counter()
    await asyncio.gather(*(_client(port, payloads, jobs, latencies, errors, tic + max_seconds)
                           for _ in range(clients)))
    elapsed = time.perf_counter() - tic
    lat = np.array(latencies) * 1000
    return dict(requests=len(latencies), errors=len(errors), error_samples=errors[:5], seconds=elapsed,
                throughput=len(latencies) / elapsed, p50_ms=float(np.percentile(lat, 50)),
                p99_ms=float(np.percentile(lat, 99)))


def _run(coro):
    """asyncio.run, on uvloop when it is installed (a lighter client leaves the server more CPU)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help=".onnx file or MXNet export (default: a random STNNet)")
    parser.add_argument("--backend", default=None, choices=["onnxruntime", "mxnet"])
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop each run after this long")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--out", default="runs/load")
    args = parser.parse_args(argv)
    payloads = _pngs(1000)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or _default_model(tmp)
        for label, batch in (("micro-batching", args.max_batch), ("batch size 1", 1)):
            server = _Server(model, args.backend, batch, args.max_wait_ms if batch > 1 else 0)
            try:
                _run(_load(server.port, payloads, min(500, args.requests), args.clients, 30))  # warm-up
                results[label] = _run(_load(server.port, payloads, args.requests, args.clients,
                                                   args.max_seconds))
            finally:
                server.stop()
            results[label]["max_batch"] = batch
    a, b = results["micro-batching"], results["batch size 1"]
    lines = ["| serving | requests | errors | throughput (req/s) | p50 (ms) | p99 (ms) |", "|---|---|---|---|---|---|"]
    for label, r in results.items():
        lines.append(f"| {label} (--max-batch {r['max_batch']}) | {r['requests']} | {r['errors']} | "
                     f"{r['throughput']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    info = machine_info()
    lines += ["", f"Micro-batching / batch size 1: {a['throughput'] / b['throughput']:.2f}x throughput at "
                  f"{args.clients} clients. Model: {args.model or 'random STNNet (ONNX)'}; "
                  f"backend {args.backend or 'by file type'}; {info['cpu_count']} CPUs shared by server and clients."]
    write_report(args.out, lines, dict(results=results, clients=args.clients))
    return 0 if a["errors"] == 0 and b["errors"] == 0 else 1


if __name__ == "__main__":
    run_script(main)
